"""Resumable, infinite streams of batches (no faked dataset length, code_examples.md A7).

A stream is defined by a function ``epoch -> list of index batches`` (deterministic for a seed) and a
dataset whose augmentation is seeded per (epoch, index). Its position is just ``(epoch, batch)``, so a
checkpoint can store it and a resumed run sees exactly the batches the uninterrupted run would have.

Without loader processes (``num_workers=0``, the default on small machines) the next batch is decoded and
augmented in a background thread while the training step computes: decoding (PIL, OpenCV) and the step's
torch kernels release the GIL, so the ~30-70 ms a demo batch takes to load (``bench/train_step.py --data``) no
longer adds to every step. The batches and the saved position are the same as without it (tested).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
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
    """Infinite iterator of collated batches; ``state`` (the position after the last batch returned) can be saved
    and restored. ``prefetch`` (default: when there are no loader processes) loads one batch ahead in a thread."""

    def __init__(self, dataset: Dataset, plan: BatchPlan, collate: Callable[[list[Any]], Any],
                 num_workers: int = 0, pin_memory: bool = False, prefetch: bool | None = None) -> None:
        self.dataset, self.plan, self.collate = dataset, plan, collate
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.state = StreamState()
        self._cursor = StreamState()  # where the loader is: ahead of ``state`` by the prefetched batch
        self._iter: Iterator[Any] | None = None
        self.prefetch = num_workers == 0 if prefetch is None else prefetch
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def _start_epoch(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._cursor.epoch)
        batches = self.plan(self._cursor.epoch)[self._cursor.batch:]
        loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            persistent_workers=False,
                            # the loader draws its worker base seed from this generator, not from the global RNG,
                            # so creating a loader on resume does not shift dropout's random stream
                            generator=torch.Generator().manual_seed(self._cursor.epoch))
        self._iter = iter(loader)

    def __iter__(self) -> "BatchStream":
        return self

    def _load_next(self) -> tuple[Any, StreamState]:
        """The next usable batch at the cursor and the position after it (advances the cursor)."""
        # A batch shrinks when its files are skipped (unreadable, bad mask): one with fewer than MIN_BATCH images
        # cannot train (BatchNorm), so it is passed over like an empty one. Only epochs that yield nothing usable
        # count towards giving up, so a run of bad batches (a k-means group of unreadable files) is not fatal.
        empty_epochs = 0  # epochs that ended during this call without a usable batch
        while empty_epochs < 3:
            if self._iter is None:
                self._start_epoch()
            try:
                batch = next(self._iter)  # type: ignore[arg-type]
            except StopIteration:
                self._iter = None
                self._cursor = StreamState(self._cursor.epoch + 1, 0)
                empty_epochs += 1
                continue
            self._cursor.batch += 1
            if batch is not None and len(batch["image"]) >= MIN_BATCH:
                return batch, replace(self._cursor)
        raise DatasetError("the data stream produced no usable batch (two readable images) for 3 epochs: nearly "
                           "every image failed to load; run `pss doctor` on the data root")

    def __next__(self) -> Any:
        if not self.prefetch:
            batch, self.state = self._load_next()
            return batch
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pss-batch")
        pending = self._pending or self._executor.submit(self._load_next)
        batch, self.state = pending.result()  # a loading error is raised here, in the training thread
        self._pending = self._executor.submit(self._load_next)
        return batch

    def _drop_prefetched(self) -> None:
        """Forget the batch loaded ahead (waiting for a load in progress; its error, if any, no longer matters)."""
        if self._pending is not None:
            if not self._pending.cancel():
                self._pending.exception()
            self._pending = None

    def close(self) -> None:
        """Stop the prefetch thread (a stream left open is also cleaned up at exit)."""
        self._drop_prefetched()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.state.epoch, "batch": self.state.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._drop_prefetched()
        self.state = StreamState(int(state["epoch"]), int(state["batch"]))
        self._cursor = replace(self.state)
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
