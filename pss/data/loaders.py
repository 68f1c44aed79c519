"""Training batches: the batch plans (shuffled; one k-means group per batch), the skip-None collate and
``BatchStream``, the one resumable, infinite stream of batches (no faked dataset length, code_examples.md A7).

A stream is a *plan*, a function ``epoch -> list of index batches`` that is deterministic for a seed, over a
dataset whose augmentation is seeded per (epoch, index) (``SegDataset``). Its position is just ``(epoch, batch)``,
so a checkpoint can store it and a resumed run sees exactly the batches the uninterrupted run would have.

Without loader processes (``num_workers=0``, the default on small machines) the next batch is decoded and
augmented in a background thread while the training step computes: decoding (PIL, OpenCV) and the step's
torch kernels release the GIL, so the ~30-70 ms a demo batch takes to load (``bench/train_step.py --data``) no
longer adds to every step. The batches and the saved position are the same as without it (tested).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from pss.errors import DatasetError

BatchPlan = Callable[[int], list[list[int]]]
"""``plan(epoch)``: the batches of dataset indices of that epoch, in order (the same list for the same epoch)."""

MIN_BATCH = 2  # BatchNorm's training statistics need two images
EMPTY_EPOCHS = 3  # epochs in a row without a usable batch before a stream gives up


def _check_plan_args(batch_size: int, seed: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seed < 0:  # numpy's SeedSequence takes no negative entropy
        raise ValueError(f"seed must be >= 0, got {seed}")


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's plan: a function of (seed, epoch) only, so any epoch can be replayed alone."""
    return np.random.default_rng([seed, epoch])


def shuffled_batches(num_items: int, batch_size: int, seed: int) -> BatchPlan:
    """Batches of a fresh permutation of ``range(num_items)`` per epoch.

    The last, partial batch is dropped when there is at least one full batch (``drop_last``); with fewer items
    than ``batch_size`` the epoch is the one short batch of all of them.
    """
    _check_plan_args(batch_size, seed)

    def plan(epoch: int) -> list[list[int]]:
        order = _epoch_rng(seed, epoch).permutation(num_items).tolist()
        usable = (num_items // batch_size) * batch_size or num_items
        return [order[i:i + batch_size] for i in range(0, usable, batch_size)]
    return plan


def group_batches(groups: Sequence[int], batch_size: int, seed: int) -> BatchPlan:
    """Every batch holds indices of ONE group (methods.md §1.4, official ``GroupDataset._reset_list``).

    Per epoch: each group's items are shuffled; each group is cut into ``ceil(n / batch_size)`` batches of
    consecutive items, the last one wrapping around to the group's start, so a group smaller than a batch is
    repeated to fill it; then the order of all batches is shuffled. Every item appears at least once per epoch
    and every batch is full.

    Args:
        groups: group id of each dataset index (any integers; callers give ungrouped items one id of their own).
    """
    _check_plan_args(batch_size, seed)
    ids = np.asarray(groups, dtype=np.int64).reshape(-1)
    members = [np.flatnonzero(ids == g) for g in np.unique(ids)]  # in ascending group id: part of the seeded order

    def plan(epoch: int) -> list[list[int]]:
        rng = _epoch_rng(seed, epoch)
        batches: list[list[int]] = []
        for group in members:
            items = rng.permutation(group)
            count = math.ceil(len(items) / batch_size)
            # Positions wrap inside the group: small groups are repeated to fill the batch.
            positions = np.arange(count * batch_size) % len(items)
            batches += items[positions].reshape(count, batch_size).tolist()
        return [batches[i] for i in rng.permutation(len(batches))]
    return plan


def collate_skip_none(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``default_collate`` over the items that loaded; ``None`` when every item of the batch was skipped.

    Shape:
        each item's tensor of shape (...) becomes one of shape (B, ...), B = the number of items that loaded.
    """
    kept = [item for item in items if item is not None]
    return default_collate(kept) if kept else None


@dataclass
class StreamState:
    """A position in a stream: the next batch to return is batch ``batch`` of epoch ``epoch``'s plan."""

    epoch: int = 0
    batch: int = 0


class BatchStream:
    """Infinite iterator of collated batches of ``dataset`` in the order of ``plan``.

    ``state`` is the position after the last batch returned: ``state_dict``/``load_state_dict`` save and restore
    it, and a restored stream continues exactly as the uninterrupted one. ``prefetch`` (default: when there are no
    loader processes) loads one batch ahead in a thread; call ``close`` to stop it.

    A batch whose items were skipped (``collate`` gets ``None`` for an unreadable file) shrinks; one with fewer
    than ``MIN_BATCH`` images is passed over. After ``EMPTY_EPOCHS`` epochs without a usable batch the stream
    raises ``DatasetError``.

    Shape:
        each batch is what ``collate`` makes of the dataset's items; with ``collate_skip_none`` and ``SegDataset``
        ``image`` (B, 3, H, W) float32 and ``label`` (B, H, W) int64, MIN_BATCH <= B <= batch size.
    """

    def __init__(self, dataset: Dataset, plan: BatchPlan, collate: Callable[[list[Any]], Any] = collate_skip_none,
                 num_workers: int = 0, pin_memory: bool = False, prefetch: bool | None = None) -> None:
        self.dataset, self.plan, self.collate = dataset, plan, collate
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.state = StreamState()
        self._cursor = StreamState()  # where the loader is: ahead of ``state`` by the prefetched batch
        self._iter: Iterator[Any] | None = None
        # Loader processes already overlap loading with the step; a thread on top would only add contention.
        self.prefetch = num_workers == 0 if prefetch is None else prefetch
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def _start_epoch(self) -> None:
        """A loader over the rest of the cursor's epoch (the skipped batches are never loaded)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._cursor.epoch)
        batches = self.plan(self._cursor.epoch)[self._cursor.batch:]
        loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            # not persistent: workers are started each epoch and so see the dataset's new epoch
                            persistent_workers=False,
                            # the loader draws its worker base seed from this generator, not from the global RNG,
                            # so creating a loader on resume does not shift dropout's random stream
                            generator=torch.Generator().manual_seed(self._cursor.epoch))
        self._iter = iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def _load_next(self) -> tuple[Any, StreamState]:
        """The next usable batch at the cursor and the position after it (advances the cursor)."""
        # A batch shrinks when its files are skipped (unreadable, bad mask): one with fewer than MIN_BATCH images
        # cannot train (BatchNorm), so it is passed over like an empty one. Only epochs that yield nothing usable
        # count towards giving up, so a run of bad batches (a k-means group of unreadable files) is not fatal.
        empty_epochs = 0  # epochs that ended during this call without a usable batch
        while empty_epochs < EMPTY_EPOCHS:
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
        raise DatasetError(f"the data stream produced no usable batch (two readable images) for {EMPTY_EPOCHS} "
                           "epochs: nearly every image failed to load; run `pss doctor` on the data root")

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
        """The position after the last batch returned (not after the one loaded ahead)."""
        return {"epoch": self.state.epoch, "batch": self.state.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position; a batch already loaded ahead is dropped."""
        self._drop_prefetched()
        self.state = StreamState(int(state["epoch"]), int(state["batch"]))
        self._cursor = replace(self.state)
        self._iter = None


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move a collated batch's tensors to ``device``; other values (names) are kept as they are.

    The copy is non-blocking, which overlaps it with computation when the stream pinned the batch
    (``pin_memory=True``); ``channels_last`` converts the 4-D tensors (images) for the fast path.

    Shape:
        unchanged: image (B, 3, H, W), label (B, H, W).
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out
