"""The streaming path: data too large for memory, decoded per item by DataLoader workers.

A streamed split serves exactly the batches its in-memory `TensorBatchLoader` would serve: a
`StreamingLoader` takes that loader (built by the data base over the split's dataset and labels),
iterates a copy of it over sample indices (the same seeded permutation per epoch, the same ranks'
shards, the same dropped last batch of one), and has a torch `DataLoader` decode those indices in
its workers (`num_workers`, `pin_memory`, `persistent_workers`). The decoded batch is moved to the
device of the labels and passed through the loader's `inputs` hook there (uint8 -> standardized
float32), as the in-memory path does. Workers decode in any order; the DataLoader hands batches
back in order, so the number of workers changes neither the order nor the values.

A dataset item that cannot be read is returned as `Unreadable(message)` instead of raising in a
worker (where the error would come back as a traceback): the loader raises it in the main
process as one ConfigError on `key`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, StackDataset, default_collate

from reglab.data.loader import TensorBatchLoader
from reglab.errors import ConfigError


@dataclass(frozen=True)
class Unreadable:
    """What a dataset returns for an item it cannot read: the reason, naming the file."""

    message: str


def collate(items: list[tuple[Any, torch.Tensor]]) -> Any:
    """(sample, index) pairs stacked into (samples, indices); the first `Unreadable` instead."""
    bad = next((sample for sample, _ in items if isinstance(sample, Unreadable)), None)
    return bad if bad is not None else default_collate(items)


class _IndexBatches:
    """The index batches of a TensorBatchLoader over sample indices, as a DataLoader batch_sampler."""

    def __init__(self, order: TensorBatchLoader) -> None:
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[list[int]]:
        return (indices.tolist() for indices, _ in self.order)


class StreamingLoader:
    """The batches of `batches` (a TensorBatchLoader whose `x` is `dataset`), decoded by workers.

    `dataset[i]` is sample i as a tensor (or `Unreadable`); the labels are `batches.y`, on the
    device the batches go to. Lightning sees what it sees of a TensorBatchLoader: `len`, and a
    `sampler` whose `set_epoch` picks the epoch's permutation.
    """

    def __init__(
        self,
        batches: TensorBatchLoader,
        dataset: Dataset,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        key: str = "root",
    ) -> None:
        self.labels, self.inputs, self.key = batches.y, batches.inputs, key
        self.device = batches.y.device
        self.order = copy.copy(batches)  # the same settings and sampler (its epoch), over indices
        self.order.x = self.order.y = torch.arange(len(dataset))
        self.order.inputs = None
        self.sampler, self.batch_sampler = batches.sampler, None
        self.loader = DataLoader(
            StackDataset(dataset, torch.arange(len(dataset))),
            batch_sampler=_IndexBatches(self.order),
            num_workers=num_workers,
            collate_fn=collate,
            # pinned pages only help a copy to a GPU (elsewhere torch warns and ignores them)
            pin_memory=pin_memory and self.device.type == "cuda",
            persistent_workers=persistent_workers and num_workers > 0,
        )

    def __len__(self) -> int:
        """Number of batches per epoch (that of the in-memory loader)."""
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this epoch's (inputs, labels) batches on the labels' device."""
        for batch in self.loader:
            if isinstance(batch, Unreadable):
                raise ConfigError(self.key, batch.message)
            samples, indices = batch
            samples = samples.to(self.device, non_blocking=True)
            if self.inputs is not None:
                samples = self.inputs(samples)
            yield samples, self.labels[indices.to(self.device)]


def stream(dataset: Dataset, batch_size: int = 64, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """Every sample of `dataset` in order, in stacked CPU batches decoded by `num_workers` workers
    (a reader's one pass over its files: loading them into memory, counting, checking)."""
    index = torch.arange(len(dataset))
    batches = TensorBatchLoader(index, index, batch_size)
    for samples, _ in StreamingLoader(batches, dataset, num_workers):
        yield samples
