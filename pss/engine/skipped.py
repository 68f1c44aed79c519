"""The files a run did not train on, named at the end of the run (DESIGN: bad input never crashes a batch job).

A bad file is skipped where it is met: ``SegDataset`` returns no item for an unreadable image or a mask of the
wrong size or with values outside the label space, and feature extraction gives an unreadable image no k-means
group. Either way training goes on; this module collects those files once training ended, with the reason for
each, so the run's log ends with a list a person can act on (and ``pss doctor`` lists every problem up front).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pss.data.datasets import SegDataset
from pss.data.loaders import BatchStream
from pss.data.records import ImageRecord
from pss.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedFile:
    """One file a run did not use: the stream it belongs to (``source``, ``target``, ...), its path and why."""

    stream: str
    path: Path
    reason: str


def _reason(dataset: SegDataset, index: int) -> str:
    """Why record ``index`` cannot be used (decoding it again: skipped files are few, reasons are not stored in
    the DataLoader workers that met them)."""
    try:
        dataset.load(index)
    except DatasetError as exc:
        return str(exc)
    return "could not be read during training (it reads now: was it replaced meanwhile?)"


def skipped_files(streams: Mapping[str, BatchStream],
                  groups: Mapping[str, Mapping[str, int] | None] | None = None) -> list[SkippedFile]:
    """Every file of ``streams`` that was skipped during training, or that has no group in ``groups[stream]``
    (feature extraction could not read it), with the reason; each path once."""
    out: list[SkippedFile] = []
    seen: set[Path] = set()
    for name, stream in streams.items():
        dataset = stream.dataset
        if not isinstance(dataset, SegDataset):
            continue
        flagged = {r.image_path for r in dataset.skipped_records}
        by_group = (groups or {}).get(name)
        for index, record in enumerate(dataset.records):
            ungrouped = by_group is not None and record.name not in by_group
            if record.image_path in seen or not (record.image_path in flagged or ungrouped):
                continue
            seen.add(record.image_path)
            reason = _reason(dataset, index)
            path = _bad_path(record, reason)
            out.append(SkippedFile(name, path, reason.removeprefix(f"{path}: ")))
    return out


def _bad_path(record: ImageRecord, reason: str) -> Path:
    """The mask when the reason names it (the image reads, its mask does not), else the image."""
    return record.mask_path if record.mask_path is not None and str(record.mask_path) in reason else record.image_path


def log_skipped(streams: Mapping[str, BatchStream], log: Callable[[str], None],
                groups: Mapping[str, Mapping[str, int] | None] | None = None) -> list[SkippedFile]:
    """Write the list of skipped files through ``log`` (nothing when none was skipped) and return it."""
    files = skipped_files(streams, groups)
    lines = [f"{len(files)} file(s) skipped, not trained on (fix them and run again; `pss doctor DATA` lists "
             "every problem):"] + [f"  skipped [{item.stream}] {item.path}: {item.reason}" for item in files]
    for line in lines if files else []:
        log(line)
        if "PSS_JOB_ID" not in os.environ:  # a foreground `pss train`: also on the terminal (a job's stderr
            logger.warning("%s", line)      # is its log already, where ``log`` wrote the line)
    return files
