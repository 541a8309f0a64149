"""In-memory batching: slices of tensors that already live on the training device.

For data sets that fit in memory this replaces `DataLoader` + per-sample collate (tens of
microseconds a sample) with one gather per epoch and a view per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import SequentialSampler


class EpochSampler:
    """The epoch counter behind shuffling; Lightning calls `set_epoch` on it before every epoch."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the coming epoch as epoch `epoch` (so a resumed run continues the sequence)."""
        self.epoch = epoch

    def permutation(self, n: int) -> torch.Tensor:
        """This epoch's order of n samples, the same on every rank; then advance one epoch."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return torch.randperm(n, generator=generator)


class TensorBatchLoader:
    """Iterates (x, y) batches over in-memory tensors; shuffles per epoch; shards across ranks.

    With `pad_shards` (training under DDP) every rank gets ceil(N / world_size) samples, wrapping
    around like `DistributedSampler`, so all ranks run the same number of steps. Evaluation leaves
    shards uneven: no sample is counted twice and metrics sync only at epoch end.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_singleton: bool = False,
        pad_shards: bool = False,
        inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        # Lightning looks for `sampler.set_epoch` (and reads `batch_sampler`) on every loader; a
        # sequential sampler tells it the order is fixed (no "turning off shuffling" warning).
        self.sampler = EpochSampler(seed) if shuffle else SequentialSampler(range(len(x)))
        self.batch_sampler = None
        self.rank, self.world_size = rank, world_size
        # A last batch of one sample breaks BatchNorm in training: drop it there.
        self.drop_singleton = drop_singleton
        self.pad_shards = pad_shards
        # Applied to each batch of x where it lives (uint8 bytes -> standardized float32).
        self.inputs = inputs

    def _num_samples(self) -> int:
        if self.pad_shards:
            return math.ceil(len(self.x) / self.world_size)
        # Rank r takes samples r, r + W, r + 2W, ... of the (shuffled) order.
        return len(range(self.rank, len(self.x), self.world_size))

    def __len__(self) -> int:
        """Number of batches this rank yields per epoch."""
        batches, tail = divmod(self._num_samples(), self.batch_size)
        if tail and not (self.drop_singleton and tail == 1):
            batches += 1
        return batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this epoch's batches; every rank draws the same permutation, then its shard."""
        x, y = self.x, self.y
        if self.shuffle:
            order = self.sampler.permutation(len(x)).to(x.device)
            x, y = x[order], y[order]
        if self.world_size > 1:
            shard = torch.arange(self.rank, self._num_samples() * self.world_size, self.world_size)
            shard = shard[shard < len(x)] if not self.pad_shards else shard % len(x)
            shard = shard.to(x.device)
            x, y = x[shard], y[shard]
        for batch in range(len(self)):
            start = batch * self.batch_size
            inputs = x[start : start + self.batch_size]
            if self.inputs is not None:
                inputs = self.inputs(inputs)
            yield inputs, y[start : start + self.batch_size]
