"""Batch samplers (plain and one-group-per-batch), the skip-None collate, ``make_loader`` and ``forever``.

Samplers are deterministic functions of (seed, epoch): ``set_epoch`` selects the epoch, and ``set_start(n)``
makes the next pass start at its n-th batch, so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from pss.errors import DatasetError


class _EpochBatchSampler(Sampler[list[int]]):
    """Common epoch/start bookkeeping; subclasses implement ``batches()`` for the current epoch."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = seed
        self.epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, batch: int) -> None:
        """Skip the first ``batch`` batches of the next pass only (resume in the middle of an epoch)."""
        self._start = int(batch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def batches(self) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        yield from self.batches()[start:]


class ShuffledBatchSampler(_EpochBatchSampler):
    """Batches of ``batch_size`` indices out of ``range(size)``, shuffled per (seed, epoch) when ``shuffle``."""

    def __init__(self, size: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False) -> None:
        super().__init__(seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.size, self.batch_size, self.shuffle, self.drop_last = size, batch_size, shuffle, drop_last

    def batches(self) -> list[list[int]]:
        order = self._rng().permutation(self.size) if self.shuffle else np.arange(self.size)
        stop = len(self) * self.batch_size
        return [order[i:i + self.batch_size].tolist() for i in range(0, min(stop, self.size), self.batch_size)]

    def __len__(self) -> int:
        if self.drop_last:
            return self.size // self.batch_size
        return math.ceil(self.size / self.batch_size)


class GroupBatchSampler(_EpochBatchSampler):
    """Every batch holds indices of ONE group (methods.md §1.4, official ``GroupDataset._reset_list``).

    Per epoch: each group's items are shuffled (kept in order when ``shuffle=False``); each group is cut into
    ``ceil(n / batch_size)`` batches of consecutive items, the last one wrapping around to the group's start, so a
    group smaller than a batch is repeated to fill it; then the order of all batches is shuffled. Every item appears
    at least once per epoch and every batch is full.

    Args:
        groups: group id of each dataset index (any integers).
    """

    def __init__(self, groups: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.shuffle = batch_size, shuffle
        ids = np.asarray(groups, dtype=np.int64).reshape(-1)
        self.group_ids = [int(g) for g in np.unique(ids)]
        self.members = [np.flatnonzero(ids == g) for g in self.group_ids]

    def batches(self) -> list[list[int]]:
        rng = self._rng()
        batches: list[list[int]] = []
        for members in self.members:
            items = rng.permutation(members) if self.shuffle else members
            count = math.ceil(len(items) / self.batch_size)
            # Positions wrap inside the group: small groups are repeated to fill the batch.
            positions = np.arange(count * self.batch_size) % len(items)
            batches += items[positions].reshape(count, self.batch_size).tolist()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        return sum(math.ceil(len(m) / self.batch_size) for m in self.members)


def collate_skip_none(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``default_collate`` over the items that loaded; ``None`` when every item of the batch was skipped."""
    kept = [item for item in items if item is not None]
    return default_collate(kept) if kept else None


def make_loader(dataset: Dataset, batch_size: int, groups: Sequence[int] | None = None, shuffle: bool = True,
                num_workers: int = 0, seed: int = 0, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` with a seeded, epoch-aware batch sampler and ``collate_skip_none``.

    With ``groups`` (one id per dataset index) every batch comes from one group (``GroupBatchSampler``; batches are
    always full, ``drop_last`` does not apply). Batches may hold fewer items, or be ``None``, when files were skipped.
    Workers are not persistent, so ``set_epoch`` on the dataset reaches them at the start of each pass.
    """
    sampler: _EpochBatchSampler
    if groups is not None:
        if len(groups) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"groups has {len(groups)} entries but the dataset {len(dataset)} items")  # type: ignore
        sampler = GroupBatchSampler(groups, batch_size, seed=seed, shuffle=shuffle)
    else:
        sampler = ShuffledBatchSampler(len(dataset), batch_size, seed=seed, shuffle=shuffle,  # type: ignore
                                       drop_last=drop_last)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_skip_none,
                      pin_memory=pin_memory, persistent_workers=False)


def forever(loader: DataLoader, start_epoch: int = 0, start_batch: int = 0) -> Iterator[dict[str, Any]]:
    """Iterate ``loader`` endlessly, epoch after epoch, calling ``set_epoch`` on its dataset and batch sampler.

    ``start_epoch``/``start_batch`` resume in the middle of a pass (samplers from ``make_loader`` skip the batches
    without loading them). Batches whose items were all skipped are not yielded.
    """
    epoch = start_epoch
    sampler = loader.batch_sampler
    if start_batch:
        if not hasattr(sampler, "set_start"):
            raise ValueError("start_batch needs a loader from make_loader (its sampler can skip batches)")
        sampler.set_start(start_batch)  # type: ignore[union-attr]
    while True:
        for target in (loader.dataset, sampler, loader.sampler):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        yielded = False
        for batch in loader:
            if batch is not None:
                yielded = True
                yield batch
        if not yielded and not (epoch == start_epoch and start_batch):
            # Without this an empty or entirely unreadable dataset would spin here forever.
            raise DatasetError("a whole pass over the data loaded nothing (no items, or every file was skipped); "
                               "run `pss doctor` on the data folder")
        epoch += 1
