"""Gains with confidence intervals: a paired bootstrap over a user's labelled images (and across seeds and users).

A gain is ``metric(method) - metric(control)`` where both runs were scored on the same labelled images of a user.
FIoU is the mean of the per-image FIoU terms (paper §5.1); MIoU (PSS convention, 21 classes, absent = 0) comes from
the *sum* of the per-image confusion matrices (one matrix accumulated over the user's images, as ``pss.metrics``),
so a bootstrap resample of images sums the resampled images' matrices (with multiplicity) and recomputes the MIoU.

Pairing: every resample draws one multiset of image indices per user and applies it to both runs of every pair
(method and control, every seed), so image difficulty cancels in the difference. The estimate over several seeds
and users is the mean over users of the mean over seeds; its interval is the 2.5-97.5 % percentile interval of
the same statistic over resamples (it reflects the choice of images; the seeds enter through their mean, and their
spread is shown separately by the tables' ± std). A gain is "real" at 95 % when its interval excludes 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from pss.data.image_io import load_mask
from pss.data.labels import NUM_CLASSES, read_label_png
from pss.data.records import ImageRecord
from pss.errors import DatasetError
from pss.metrics import ConfusionMatrix, MIoUConvention, foreground_iou, iou_from_matrix, miou_from_iou

Metric = Literal["FIoU", "MIoU"]


@dataclass(frozen=True)
class ImageScores:
    """One run's per-image evaluation of a user's labelled images, in a fixed image order.

    Shape:
        fiou: (n,) per-image FIoU terms; confusion: (n, C, C) per-image confusion matrices (rows = ground truth).
    """

    names: tuple[str, ...]
    fiou: np.ndarray
    confusion: np.ndarray

    def metric(self, name: Metric, weights: np.ndarray | None = None) -> float:
        """FIoU (weighted mean of the per-image terms) or MIoU (PSS convention) of the weighted sum of the
        per-image matrices; ``weights`` (n,) = how many times each image is drawn (None: each once)."""
        w = np.ones(len(self.names)) if weights is None else np.asarray(weights, dtype=np.float64)
        if name == "FIoU":
            return float(np.dot(w, self.fiou) / w.sum())
        matrix = np.tensordot(w, self.confusion, axes=1)
        return miou_from_iou(iou_from_matrix(matrix, MIoUConvention.PSS))


def image_scores(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], num_classes: int = NUM_CLASSES) -> ImageScores:
    """Per-image FIoU and confusion matrices of ``(name, prediction, ground truth)`` (H, W) maps (``pss.metrics``)."""
    names, fious, matrices = [], [], []
    for name, pred, target in pairs:
        names.append(name)
        fious.append(foreground_iou(pred, target))
        matrices.append(ConfusionMatrix(num_classes).update(pred, target).matrix)
    shape = (0, num_classes, num_classes)
    return ImageScores(tuple(names), np.asarray(fious, dtype=np.float64),
                       np.stack(matrices) if matrices else np.zeros(shape, dtype=np.int64))


def run_image_scores(run_dir: Path, records: Sequence[ImageRecord]) -> ImageScores:
    """A run's per-image scores from its saved predictions (``run_dir/predictions/<name>.png``, written at each
    image's original size by the final evaluation) and the records' ground-truth masks; unlabelled records are
    skipped, a labelled image without a saved prediction is an error (the run was evaluated without it)."""
    pairs = []
    for record in records:
        if record.eval_mask is None:  # unlabelled, or annotated for training: not an evaluation image
            continue
        path = Path(run_dir) / "predictions" / f"{record.name}.png"
        if not path.is_file():
            raise DatasetError(f"{path}: the run has no saved prediction for labelled image {record.name}; "
                               "evaluate the run again (eval.save_predictions=true)")
        pred = read_label_png(path)
        pairs.append((record.name, pred, load_mask(record.eval_mask, pred.shape)))
    return image_scores(pairs)


@dataclass(frozen=True)
class Gain:
    """A difference of a metric (fractions: ×100 for points) with its percentile interval."""

    estimate: float
    low: float
    high: float
    pairs: int  # (user, seed) pairs behind the estimate

    @property
    def real(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        """``+1.23 [-0.40, +2.86]`` in points, ``*`` appended when the interval excludes 0."""
        return (f"{self.estimate * 100:+.2f} [{self.low * 100:+.2f}, {self.high * 100:+.2f}]"
                + (" *" if self.real else ""))


def paired_bootstrap(users: Sequence[Sequence[tuple[ImageScores, ImageScores]]], metric: Metric,
                     resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Gain:
    """Bootstrap interval of ``mean_users mean_seeds [metric(a) - metric(b)]``.

    Args:
        users: per user, the ``(method, control)`` scores of each seed; within a user every score covers the same
            images in the same order.
        resamples: bootstrap draws; each draws, per user, as many images as the user has, with replacement.
    """
    if not users or any(not pairs for pairs in users):
        raise ValueError("paired_bootstrap needs at least one (method, control) pair per user")
    for pairs in users:
        names = pairs[0][0].names
        if any(a.names != names or b.names != names for a, b in pairs):
            raise ValueError("the runs of a user must be scored on the same images in the same order")
        if not names:
            raise ValueError("a user has no labelled image to resample")

    def statistic(weights: Sequence[np.ndarray | None]) -> float:
        return float(np.mean([np.mean([a.metric(metric, w) - b.metric(metric, w) for a, b in pairs])
                              for pairs, w in zip(users, weights, strict=True)]))

    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for r in range(resamples):
        # per user: how often each image is drawn (a multinomial of n draws over its n images)
        weights = [rng.multinomial(len(pairs[0][0].names), np.full(len(pairs[0][0].names),
                                                                   1 / len(pairs[0][0].names)))
                   for pairs in users]
        draws[r] = statistic(weights)
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha]) if resamples else (math.nan, math.nan)
    return Gain(statistic([None] * len(users)), float(low), float(high), sum(len(p) for p in users))
