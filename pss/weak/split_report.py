"""Evaluation of a strong/weak split (issue 18): mIoU on all classes and separately on the strong and the weak
classes, from the same confusion matrix and IoU conventions as every run (``pss.metrics``).

The abstract (``papers/transferable_semi_supervised_abstract.txt``) reports the mIoU on all VOC classes as a
percentage of the fully supervised baseline; the per-group means are ours (they show whether the weak classes, the
ones without pixel labels, are where the gap is). Background counts as strong (``pss.data.strong_weak``).

A group's mIoU is the mean of its classes' IoU from the *full* (C, C) matrix: a weak-class pixel predicted as a
strong class is a false positive of that strong class and a false negative of the weak one, as in the all-class
number (the groups are not re-evaluated on sub-matrices). Conventions: ``"pss"`` averages every class of the group
(zero-union classes count 0), ``"present"`` only those with non-zero union (NaN when none has).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pss.metrics import ConfusionMatrix, ConventionLike, MIoUConvention, SegReport, iou_from_matrix, miou_from_iou


@dataclass(frozen=True)
class GroupMIoU:
    """mIoU (fractions in [0, 1]) of all classes, the strong classes (background included) and the weak ones, under
    one convention; ``weak`` is NaN when there is no weak class (the fully supervised row)."""

    convention: str
    all: float
    strong: float
    weak: float


def group_miou(matrix: np.ndarray | ConfusionMatrix | SegReport, strong: Iterable[int],
               convention: ConventionLike = MIoUConvention.PSS) -> GroupMIoU:
    """Per-group mIoU of a confusion matrix (rows = ground truth), a ``ConfusionMatrix`` or a ``SegReport``.

    ``strong``: the strong class indices (background 0 is added if missing); every other class is weak."""
    if isinstance(matrix, SegReport):
        counts = np.asarray(matrix.confusion, dtype=np.int64)
    elif isinstance(matrix, ConfusionMatrix):
        counts = matrix.matrix
    else:
        counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is (C, C), got shape {counts.shape}")
    num_classes = counts.shape[0]
    strong_set = {int(c) for c in strong} | {0}
    bad = sorted(c for c in strong_set if not 0 <= c < num_classes)
    if bad:
        raise ValueError(f"strong class index(es) {bad} outside 0..{num_classes - 1}")
    iou = iou_from_matrix(counts, convention)
    strong_idx = sorted(strong_set)
    weak_idx = [c for c in range(num_classes) if c not in strong_set]
    return GroupMIoU(MIoUConvention(convention).value, miou_from_iou(iou), miou_from_iou(iou[strong_idx]),
                     miou_from_iou(iou[weak_idx]) if weak_idx else float("nan"))
