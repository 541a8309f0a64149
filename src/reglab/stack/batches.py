"""Per-member batches of a stacked model: member k's batch of each step at index k, [K, B, ...].

A vectorized study's members each read their own data module (the `data` group, built as their
sequential run builds it): member k's training batches come in its own seed's shuffle order
(`data.shuffle_seed`), cut at the same boundaries as its run cuts them (the members' splits have
the same sizes, so their loaders yield the same number of batches of the same sizes).
`StackedBatches` iterates the members' loaders in lockstep and stacks each step's batches;
`StackedData` is the LightningDataModule the stacked Trainer fits on. Lightning's `set_epoch`
reaches every member's sampler, so each epoch's order is the one its own run draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch


class MemberSamplers:
    """The members' epoch samplers behind one `set_epoch` (Lightning calls it every epoch)."""

    def __init__(self, samplers: Sequence[Any]) -> None:
        self.samplers = [s for s in samplers if hasattr(s, "set_epoch")]

    def set_epoch(self, epoch: int) -> None:
        """Shuffle every member's coming epoch as its run's epoch `epoch`."""
        for sampler in self.samplers:
            sampler.set_epoch(epoch)


class StackedBatches:
    """Iterates the members' loaders together, yielding (x [K, B, ...], y [K, B, ...])."""

    def __init__(self, loaders: Sequence[Any]) -> None:
        self.loaders = list(loaders)
        lengths = {len(loader) for loader in self.loaders}
        if len(lengths) != 1:
            raise ValueError(f"the members' loaders give different numbers of batches: {lengths}")
        self.sampler = MemberSamplers([getattr(loader, "sampler", None) for loader in loaders])
        self.batch_sampler = None  # as TensorBatchLoader: Lightning reads it on every loader

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders, strict=True):
            xs, ys = zip(*batches, strict=True)
            yield torch.stack(xs), torch.stack(ys)


class StackedData(L.LightningDataModule):
    """The members' data modules as one: each split's batches stacked member by member."""

    def __init__(self, datamodules: Sequence[L.LightningDataModule]) -> None:
        super().__init__()
        self.members = list(datamodules)

    def setup(self, stage: str | None = None) -> None:
        """Set up every member's data module (its splits on the CPU; Lightning moves batches)."""
        for datamodule in self.members:
            datamodule.setup(stage)

    def _stacked(self, split: str) -> StackedBatches:
        return StackedBatches([getattr(dm, f"{split}_dataloader")() for dm in self.members])

    def train_dataloader(self) -> StackedBatches:
        """Each member's shuffled training batches, stacked."""
        return self._stacked("train")

    def val_dataloader(self) -> StackedBatches:
        """Each member's validation batches, stacked."""
        return self._stacked("val")
