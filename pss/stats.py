"""Dataset statistics of the paper's Fig. 2, as pandas DataFrames ready for plotly.

(a) ``class_proportion_per_user`` -- fraction of each user's images tagged with each class (image-level tags);
(b) ``class_cooccurrence`` -- 20 x 20 images-tagged-with-both matrix (or its row-normalised variant);
(c) ``mean_object_size`` -- mean fraction of the image a class covers, over labelled masks where it appears;
(d) ``instances_per_class`` -- connected components per class over all labelled masks.

Only the 20 foreground classes appear (background is never a tag and is not an object). Mask statistics read each
mask once: ``mask_summary`` caches its per-mask result by (path, mtime, size, min_pixels), so redrawing charts is
cheap and an edited mask is re-read. Unreadable masks and invalid tags never raise here: they are skipped and listed
in ``df.attrs["problems"]`` (one "path-or-name: message" string each) so the app can show them.

(d) is an approximation: the paper counts instances from ``SegmentationObject`` masks, which the PSS layout read here
does not carry; a class region split by an occluder counts twice, touching objects of one class separated by the VOC
255 boundary band count separately, and components smaller than ``min_pixels`` (boundary slivers) are not counted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from pss.data.labels import CLASS_NAMES, NUM_CLASSES, read_label_png
from pss.data.records import ImageRecord
from pss.errors import DatasetError

FOREGROUND: tuple[int, ...] = tuple(range(1, NUM_CLASSES))
DEFAULT_MIN_PIXELS = 16


@dataclass(frozen=True)
class MaskSummary:
    """Per-mask counts from one pass over a label map.

    Attributes:
        height, width: mask size in pixels (the area denominator includes 255 pixels).
        areas: pixels per class 0..20 (values outside the label space are not counted).
        instances: 8-connected components of at least ``min_pixels`` pixels per class (0 for background).
    """

    height: int
    width: int
    areas: tuple[int, ...]
    instances: tuple[int, ...]


def summarize_mask(label: np.ndarray, min_pixels: int = DEFAULT_MIN_PIXELS) -> MaskSummary:
    """Class areas and connected-component counts of one (H, W) label map."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {label.shape}")
    counts = np.bincount(label.reshape(-1).astype(np.int64), minlength=256)[:NUM_CLASSES]
    instances = [0] * NUM_CLASSES
    for cls in FOREGROUND:
        if counts[cls] < max(min_pixels, 1):
            continue  # no component of this class can reach min_pixels
        binary = (label == cls).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        # row 0 of stats is the background of the binary image
        instances[cls] = int(np.count_nonzero(stats[1:n, cv2.CC_STAT_AREA] >= min_pixels))
    return MaskSummary(int(label.shape[0]), int(label.shape[1]), tuple(int(c) for c in counts), tuple(instances))


@lru_cache(maxsize=65536)
def _cached_summary(path: str, mtime_ns: int, size: int, min_pixels: int) -> MaskSummary:
    # mtime_ns and size are part of the key only, so that a rewritten mask misses the cache.
    return summarize_mask(read_label_png(path), min_pixels)


def mask_summary(path: str | Path, min_pixels: int = DEFAULT_MIN_PIXELS) -> MaskSummary:
    """``summarize_mask`` of a label PNG, cached by (resolved path, mtime, size, min_pixels).

    Raises ``DatasetError`` when the file is missing or unreadable.
    """
    resolved = Path(path).resolve()
    try:
        st = os.stat(resolved)
    except OSError as exc:
        raise DatasetError(f"{resolved}: cannot read mask ({exc.strerror}); "
                           "check the SegmentationClass folder") from exc
    return _cached_summary(str(resolved), st.st_mtime_ns, st.st_size, int(min_pixels))


def clear_mask_cache() -> None:
    """Forget every cached ``MaskSummary``."""
    _cached_summary.cache_clear()


def _summaries(records: Sequence[ImageRecord], min_pixels: int) -> tuple[list[MaskSummary], list[str]]:
    summaries: list[MaskSummary] = []
    problems: list[str] = []
    for record in records:
        if record.mask_path is None:
            continue
        try:
            summaries.append(mask_summary(record.mask_path, min_pixels))
        except DatasetError as exc:
            problems.append(str(exc))
    return summaries, problems


def _foreground_tags(record: ImageRecord, problems: list[str]) -> set[int]:
    tags = set()
    for tag in record.tags:
        if tag in FOREGROUND:
            tags.add(int(tag))
        else:
            problems.append(f"{record.name}: tag {tag!r} is not a foreground class index 1..{NUM_CLASSES - 1}")
    return tags


def _class_frame(values: dict[str, list]) -> pd.DataFrame:
    frame = pd.DataFrame({"class_index": list(FOREGROUND), "class_name": [CLASS_NAMES[c] for c in FOREGROUND]})
    for column, data in values.items():
        frame[column] = data
    return frame


def class_proportion_per_user(collections: Mapping[str, Sequence[ImageRecord]]) -> pd.DataFrame:
    """Fig. 2(a): per user and foreground class, the fraction of the user's images tagged with the class.

    Long format, one row per (user, class) in the mapping's user order: ``user, class_index, class_name, images``
    (images tagged with the class), ``total_images`` (all the user's images, tagged or not), ``proportion``
    (``images / total_images``, 0 for a user without images).
    """
    rows = []
    problems: list[str] = []
    for user, records in collections.items():
        counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        for record in records:
            for tag in _foreground_tags(record, problems):
                counts[tag] += 1
        total = len(records)
        for cls in FOREGROUND:
            rows.append((user, cls, CLASS_NAMES[cls], int(counts[cls]), total,
                         float(counts[cls] / total) if total else 0.0))
    frame = pd.DataFrame(rows, columns=["user", "class_index", "class_name", "images", "total_images", "proportion"])
    frame.attrs["problems"] = problems
    return frame


def class_cooccurrence(records: Sequence[ImageRecord], normalize: bool = False) -> pd.DataFrame:
    """Fig. 2(b): 20 x 20 matrix (index and columns = class names) of images whose tags contain both classes.

    The diagonal counts the images tagged with the class. With ``normalize=True`` row ``i`` is divided by its
    diagonal: entry (i, j) = P(image tagged j | image tagged i), 1 on the diagonal, 0 for never-tagged classes.
    """
    problems: list[str] = []
    hot = np.zeros((len(records), len(FOREGROUND)), dtype=np.int64)
    for row, record in enumerate(records):
        for tag in _foreground_tags(record, problems):
            hot[row, tag - 1] = 1
    matrix = (hot.T @ hot).astype(np.float64 if normalize else np.int64)
    if normalize:
        diagonal = np.diag(matrix).copy()
        matrix = np.divide(matrix, diagonal[:, None], out=np.zeros_like(matrix), where=diagonal[:, None] > 0)
    names = [CLASS_NAMES[c] for c in FOREGROUND]
    frame = pd.DataFrame(matrix, index=pd.Index(names, name="class"), columns=pd.Index(names, name="with_class"))
    frame.attrs["problems"] = problems
    return frame


def mean_object_size(records: Sequence[ImageRecord], min_pixels: int = DEFAULT_MIN_PIXELS) -> pd.DataFrame:
    """Fig. 2(c): per foreground class, the mean fraction of the image area it covers in labelled masks where it
    appears (area > 0; the denominator is H * W including ignore pixels).

    Columns: ``class_index, class_name, images`` (labelled masks containing the class), ``mean_fraction``
    (NaN if the class never appears). ``min_pixels`` only selects which cached summaries are reused.
    """
    summaries, problems = _summaries(records, min_pixels)
    fractions: list[list[float]] = [[] for _ in range(NUM_CLASSES)]
    for summary in summaries:
        total = summary.height * summary.width
        for cls in FOREGROUND:
            if summary.areas[cls] > 0:
                fractions[cls].append(summary.areas[cls] / total)
    frame = _class_frame({
        "images": [len(fractions[c]) for c in FOREGROUND],
        "mean_fraction": [float(np.mean(fractions[c])) if fractions[c] else np.nan for c in FOREGROUND],
    })
    frame.attrs["problems"] = problems
    return frame


def instances_per_class(records: Sequence[ImageRecord], min_pixels: int = DEFAULT_MIN_PIXELS) -> pd.DataFrame:
    """Fig. 2(d): per foreground class, connected components (8-connectivity, >= ``min_pixels``) over all labelled
    masks (see the module docstring for what this approximates).

    Columns: ``class_index, class_name, instances, images`` (labelled masks with at least one counted component).
    """
    summaries, problems = _summaries(records, min_pixels)
    instances = np.zeros(NUM_CLASSES, dtype=np.int64)
    images = np.zeros(NUM_CLASSES, dtype=np.int64)
    for summary in summaries:
        counts = np.asarray(summary.instances)
        instances += counts
        images += counts > 0
    frame = _class_frame({"instances": [int(instances[c]) for c in FOREGROUND],
                          "images": [int(images[c]) for c in FOREGROUND]})
    frame.attrs["problems"] = problems
    return frame
