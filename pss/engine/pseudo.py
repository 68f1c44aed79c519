"""Step 2 of PSS: pseudo labels for the easiest images of a user (paper §4.3, §5.2; methods.md §1.6).

Images are ranked by their mean pixel entropy (IntraDA-style image-level ranking, as the released code
does); the lowest-entropy ``select_rate`` of them (paper: r = 0.5) become pseudo-labelled. Inside a
selected image, the paper sets "masked pseudo label pixels" to 255: we keep the ``pixel_keep_rate``
lowest-entropy pixels of the image and set the rest to 255 (``pixel_keep_rate = 1`` reproduces the
released code's full argmax maps).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pss.data.labels import IGNORE_INDEX, write_label_png
from pss.data.records import ImageRecord
from pss.engine.evaluate import Prediction
from pss.losses import select_easy_images
from pss.methods.pss import PseudoLabelConfig


@dataclass
class PseudoLabels:
    """The selected records (``mask_path`` = their pseudo-label PNG) and every image's mean entropy."""

    records: list[ImageRecord]
    mean_entropy: dict[str, float]
    selected: list[str]


def mask_uncertain_pixels(prediction: Prediction, keep_rate: float) -> np.ndarray:
    """Argmax labels with all but the ``keep_rate`` lowest-entropy pixels set to 255.

    Shape:
        returns (H, W) uint8.
    """
    label = prediction.label.copy()
    if keep_rate >= 1.0:
        return label
    threshold = np.quantile(prediction.entropy, keep_rate)
    label[prediction.entropy > threshold] = IGNORE_INDEX
    return label


def build_pseudo_labels(predictions: Sequence[Prediction], records: Sequence[ImageRecord], config: PseudoLabelConfig,
                        out_dir: Path) -> PseudoLabels:
    """Select the easy images among ``predictions`` and write their pseudo labels to ``out_dir/<name>.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in records}
    scores = [p.mean_entropy for p in predictions]
    chosen = [predictions[i] for i in select_easy_images(scores, config.select_rate)]
    selected: list[ImageRecord] = []
    for prediction in chosen:
        path = out_dir / f"{prediction.name}.png"
        write_label_png(path, mask_uncertain_pixels(prediction, config.pixel_keep_rate))
        selected.append(replace(by_name[prediction.name], mask_path=path))
    return PseudoLabels(selected, {p.name: p.mean_entropy for p in predictions}, [p.name for p in chosen])
