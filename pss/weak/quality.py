"""Pseudo-mask quality (issue 17, evaluation only): how close a stage's pseudo masks are to the user's labelled
masks, scored with ``pss.metrics`` (the same confusion matrix, MIoU conventions and FIoU as every run).

EPS reports the train-set pseudo-mask mIoU (VOC: CAM 47.05, EPS 69.22, methods.md §9) and psa the random walk's
(61.0); for a user the labelled images are the evaluation set: the masks are read here to score, never to train.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pss.data.image_io import load_mask
from pss.data.labels import read_label_png
from pss.data.records import ImageRecord
from pss.metrics import SegReport, evaluate_pairs


def pseudo_mask_quality(mask_folder: Path, records: Sequence[ImageRecord]) -> SegReport:
    """``SegReport`` of ``<mask_folder>/<name>.png`` against each evaluation record's mask (``eval_mask``; unlabelled
    records, images annotated for training and records without a pseudo mask, e.g. untagged images, are left out;
    ``num_images`` says how many were scored).

    Raises ``DatasetError`` (from ``load_mask``) when a ground-truth mask's size differs from its pseudo mask's."""
    def pairs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for record in records:
            pseudo_path = Path(mask_folder) / f"{record.name}.png"
            # eval_mask: a user's evaluation images only (an image annotated for training is never scored)
            if record.eval_mask is None or not pseudo_path.is_file():
                continue
            pseudo = read_label_png(pseudo_path)
            yield record.name, pseudo, load_mask(record.eval_mask, (int(pseudo.shape[0]), int(pseudo.shape[1])))
    return evaluate_pairs(pairs())
