"""A DataLoader whose position is part of the checkpoint: an epoch split across sessions
resumes on the exact next batch.

The shuffle order of epoch `e` is a permutation drawn from its own generator seeded with
(seed, e), never from the global RNG, so it is the same whichever session draws it; the
position is the number of batches taken in the epoch. `ResumableLoader` counts the batches
it hands out (not the indices the DataLoader prefetched), so workers do not skew it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

# Spreads (seed, epoch) pairs apart in the generator's seed space.
_EPOCH_STRIDE = 1_000_003


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * _EPOCH_STRIDE + epoch)


class ResumableSampler(Sampler[int]):
    """Indices of `size` items, shuffled per epoch from (seed, epoch), starting at `position`."""

    def __init__(self, size: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0
        self.position = 0  # indices of this epoch already handed out

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=_epoch_generator(self.seed, epoch)).tolist()

    def __iter__(self) -> Iterator[int]:
        for index in self.order(self.epoch)[self.position :]:
            self.position += 1
            yield index

    def __len__(self) -> int:
        return self.size - self.position

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class ResumableLoader:
    """`DataLoader(dataset, batch_size, ...)` over a `ResumableSampler`, read with
    `next_batch()` across epochs; `state_dict()` goes into the checkpoint state.

    Extra keyword arguments go to the DataLoader (collate_fn, num_workers, pin_memory...).
    With workers, each epoch's worker seeds come from (seed, epoch): randomness inside
    workers restarts at the epoch's start on resume, so keep augmentation in the main
    process (or workers at 0) where exactness matters."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        **loader_kwargs: Any,
    ) -> None:
        self.sampler = ResumableSampler(len(dataset), seed=seed, shuffle=shuffle)
        self.batch_size = batch_size
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the
        # global torch RNG, and a resume opens one more iterator than the run it continues.
        self._generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=drop_last,
            generator=self._generator,
            **loader_kwargs,
        )
        self.epoch = 0
        self.batches = 0  # batches taken in this epoch
        self._iterator: Iterator[Any] | None = None

    def next_batch(self) -> Any:
        """The next batch; a new epoch (reshuffled) starts when one ends."""
        while True:
            if self._iterator is None:
                self.sampler.epoch = self.epoch
                self.sampler.position = self.batches * self.batch_size
                self._generator.manual_seed(self.sampler.seed * _EPOCH_STRIDE + self.epoch)
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.batches = self.epoch + 1, 0
                continue
            self.batches += 1
            return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self._iterator = None
