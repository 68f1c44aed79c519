"""The engine's side of pseudo labels (methods.md §1.6, §4, §6, §7): predict the target set, write the PNGs.

The second-stage methods' policies (``pss.methods.pseudo``: PSS step 2's entropy ranking, FDA's class thresholds,
MRNet's fused argmax) decide which images and pixels become labels; :class:`PseudoContext` is the
``PseudoSource`` they build from: it predicts every target image group by group exactly as evaluation does
(``pss.engine.evaluate``) and writes label PNGs under ``out_dir``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pss.data.image_io import load_rgb
from pss.data.labels import write_label_png
from pss.data.records import ImageRecord
from pss.engine.evaluate import EvalSettings, Prediction, chunk_by_group, chunk_logits, predict_records
from pss.errors import ConfigError, DatasetError
from pss.losses import pixel_entropy
from pss.methods.pseudo import SoftPrediction
from pss.models.segmenter import Segmenter

log = logging.getLogger(__name__)


@dataclass
class PseudoContext:
    """The target records (and their k-means groups) to pseudo-label, how to predict them, where labels go.

    load_teacher: a run id or checkpoint path -> a segmenter on the device (extra teachers, e.g. FDA's MBT models).
    """

    records: Sequence[ImageRecord]
    groups: dict[str, int] | None
    settings: EvalSettings
    out_dir: Path
    load_teacher: Callable[[str], Segmenter] | None = None
    _by_name: dict[str, ImageRecord] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {r.name: r for r in self.records}
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def predict(self, model: nn.Module) -> Iterator[Prediction]:
        def skipped(record: ImageRecord, reason: str) -> None:
            log.warning("pseudo labels: skipping %s: %s", record.name, reason)

        return predict_records(model, self.records, self.groups, self.settings, on_skip=skipped)

    @torch.inference_mode()
    def predict_soft(self, teacher: nn.Module) -> Iterator[SoftPrediction]:
        """Predict every record group by group, exactly as evaluation does (chunks inside one group, resized to a
        common short side, logits upsampled back to each image's size); unreadable images skipped."""
        teacher.eval()
        for chunk in chunk_by_group(self.records, self.groups, self.settings.batch_size):
            loaded: list[tuple[ImageRecord, np.ndarray]] = []
            for index in chunk:
                try:
                    loaded.append((self.records[index], load_rgb(self.records[index].image_path)))
                except DatasetError as exc:
                    log.warning("pseudo labels: skipping %s: %s", self.records[index].name, exc)
            if not loaded:
                continue
            logits = chunk_logits(teacher, [im for _, im in loaded], self.settings)
            for (record, image), one in zip(loaded, logits, strict=True):
                prob = torch.softmax(F.interpolate(one[None], size=image.shape[:2], mode="bilinear",
                                                   align_corners=False), dim=1)
                confidence, label = prob.max(dim=1)
                yield SoftPrediction(record.name, label[0].to(torch.uint8).cpu().numpy(),
                                     confidence[0].cpu().numpy().astype(np.float16),
                                     float(pixel_entropy(prob).mean()))

    def write(self, name: str, label: np.ndarray) -> ImageRecord:
        path = self.out_dir / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)  # mixed target sets name images "<user>/<name>"
        write_label_png(path, label)
        return replace(self._by_name[name], mask_path=path)

    def tags(self, name: str) -> tuple[int, ...]:
        return self._by_name[name].tags

    def load_model(self, ref: str) -> Segmenter:
        if self.load_teacher is None:
            raise ConfigError("pseudo.extra_models needs a model loader (run the method through `pss train`)")
        return self.load_teacher(ref)
