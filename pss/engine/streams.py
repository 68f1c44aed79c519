"""Resumable, infinite streams of batches (no faked dataset length, code_examples.md A7).

A stream is defined by a function ``epoch -> list of index batches`` (deterministic for a seed) and a
dataset whose augmentation is seeded per (epoch, index). Its position is just ``(epoch, batch)``, so a
checkpoint can store it and a resumed run sees exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pss.errors import DatasetError

BatchPlan = Callable[[int], list[list[int]]]
MIN_BATCH = 2  # BatchNorm's training statistics need two images


def shuffled_batches(num_items: int, batch_size: int, seed: int) -> BatchPlan:
    """Plain shuffled batches (``drop_last`` when there is at least one full batch)."""
    def plan(epoch: int) -> list[list[int]]:
        order = np.random.default_rng([seed, epoch]).permutation(num_items).tolist()
        usable = (num_items // batch_size) * batch_size or num_items
        return [order[i:i + batch_size] for i in range(0, usable, batch_size)]
    return plan


def group_batches(groups: Sequence[int], batch_size: int, seed: int) -> BatchPlan:
    """Every batch from one group (pss.data.loaders.GroupBatchSampler; methods.md §1.4)."""
    from pss.data.loaders import GroupBatchSampler

    sampler = GroupBatchSampler(groups, batch_size, seed=seed)

    def plan(epoch: int) -> list[list[int]]:
        sampler.set_epoch(epoch)
        return [list(b) for b in sampler]
    return plan


@dataclass
class StreamState:
    epoch: int = 0
    batch: int = 0


class BatchStream:
    """Infinite iterator of collated batches; ``state`` can be saved and restored."""

    def __init__(self, dataset: Dataset, plan: BatchPlan, collate: Callable[[list[Any]], Any],
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset, self.plan, self.collate = dataset, plan, collate
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.state = StreamState()
        self._iter: Iterator[Any] | None = None

    def _start_epoch(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.state.epoch)
        batches = self.plan(self.state.epoch)[self.state.batch:]
        loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            persistent_workers=False,
                            # the loader draws its worker base seed from this generator, not from the global RNG,
                            # so creating a loader on resume does not shift dropout's random stream
                            generator=torch.Generator().manual_seed(self.state.epoch))
        self._iter = iter(loader)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Any:
        # A batch shrinks when its files are skipped (unreadable, bad mask): one with fewer than MIN_BATCH images
        # cannot train (BatchNorm), so it is passed over like an empty one. Only epochs that yield nothing usable
        # count towards giving up, so a run of bad batches (a k-means group of unreadable files) is not fatal.
        empty_epochs = 0  # epochs that ended during this call without a usable batch
        while empty_epochs < 3:
            if self._iter is None:
                self._start_epoch()
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter = None
                self.state = StreamState(self.state.epoch + 1, 0)
                empty_epochs += 1
                continue
            self.state.batch += 1
            if batch is not None and len(batch["image"]) >= MIN_BATCH:
                return batch
        raise DatasetError("the data stream produced no usable batch (two readable images) for 3 epochs: nearly "
                           "every image failed to load; run `pss doctor` on the data root")

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.state.epoch, "batch": self.state.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = StreamState(int(state["epoch"]), int(state["batch"]))
        self._iter = None


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move a collated batch's tensors to ``device`` (non-blocking from pinned memory)."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out
