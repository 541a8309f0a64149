"""In-memory batching: slices of tensors that already live on the training device.

For data sets that fit in memory this replaces `DataLoader` + per-sample collate (tens of
microseconds a sample) with one gather per epoch and a view per batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorBatchLoader:
    """Iterates (x, y) batches over in-memory tensors; shuffles per epoch; shards across ranks."""

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
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        # A last batch of one sample breaks BatchNorm in training: drop it there.
        self.drop_singleton = drop_singleton
        self.epoch = 0

    def _num_samples(self) -> int:
        # Rank r takes samples r, r + W, r + 2W, ... of the (shuffled) order.
        return len(range(self.rank, len(self.x), self.world_size))

    def __len__(self) -> int:
        """Number of batches this rank yields per epoch."""
        n = self._num_samples()
        batches, tail = divmod(n, self.batch_size)
        if tail and not (self.drop_singleton and tail == 1):
            batches += 1
        return batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this epoch's batches; every rank draws the same permutation, then its shard."""
        x, y = self.x, self.y
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(x), generator=generator).to(x.device)
            x, y = x[order], y[order]
        self.epoch += 1
        if self.world_size > 1:
            x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]
        for batch in range(len(self)):
            start = batch * self.batch_size
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]
