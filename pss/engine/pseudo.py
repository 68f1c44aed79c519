"""Pseudo labels for the second stage of PSS, FDA and MRNet (methods.md §1.6, §4, §6, §7).

``make_pseudo_labels`` picks the policy from the type of the method's pseudo config (``PSEUDO_POLICIES``):

* PSS step 2 (paper §4.3, §5.2): images ranked by mean entropy, the easiest ``select_rate`` kept (below).
* FDA SSL: every image; per class, pixels under the 66th-percentile confidence of that class (capped 0.9) -> 255;
  the teacher may average several models (multi-band transfer).
* MRNet stage II: every image, argmax of ``softmax(main + 0.5·aux)``, no threshold.

PSS step 2: images are ranked by their mean pixel entropy (IntraDA-style image-level ranking, as the released code
does); the lowest-entropy ``select_rate`` of them (paper: r = 0.5) become pseudo-labelled. Inside a
selected image, the paper sets "masked pseudo label pixels" to 255: we keep the ``pixel_keep_rate``
lowest-entropy pixels of the image and set the rest to 255 (``pixel_keep_rate = 1`` reproduces the
released code's full argmax maps).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pss.data.image_io import load_rgb
from pss.data.labels import IGNORE_INDEX, write_label_png
from pss.data.records import ImageRecord
from pss.engine.device import FastPath
from pss.engine.evaluate import Prediction, chunk_by_group, chunk_logits, predict_records
from pss.errors import ConfigError, DatasetError
from pss.losses import pixel_entropy, select_easy_images
from pss.methods.fda import ClassThresholdPseudoConfig
from pss.methods.mrnet import FusedArgmaxPseudoConfig
from pss.methods.pss import EntropyRankedPseudoConfig
from pss.models.segmenter import SegOutput, Segmenter

log = logging.getLogger(__name__)


@dataclass
class PseudoLabels:
    """The selected records (``mask_path`` = their pseudo-label PNG), every image's mean entropy, and a summary of
    the policy's choices for the run log (e.g. FDA's class thresholds)."""

    records: list[ImageRecord]
    mean_entropy: dict[str, float]
    selected: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


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


def build_pseudo_labels(predictions: Sequence[Prediction], records: Sequence[ImageRecord], config: EntropyRankedPseudoConfig,
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


# ---- per-method pseudo-label policies (FDA, MRNet) ---------------------------------------------------------------


@dataclass
class PseudoContext:
    """What every pseudo-label policy needs besides the starting model and the method's pseudo config.

    load_model: a run id or checkpoint path -> a segmenter on ``device`` (extra teachers, e.g. FDA's MBT models).
    """

    records: Sequence[ImageRecord]
    groups: dict[str, int] | None
    device: torch.device
    short_side: int
    batch_size: int
    fast: FastPath | None
    out_dir: Path
    load_model: Callable[[str], Segmenter] | None = None


class Teacher(nn.Module):
    """The fused prediction of one or more segmenters: ``mean_k softmax(main_k + aux_weight·aux_k)``.

    ``forward`` returns a ``SegOutput`` whose ``logits`` are the log of that mean, so ``softmax(logits)`` is the fused
    probability and ``predict_records``-style code can use a teacher like a segmenter. ``aux_weight = 0.5`` is
    MRNet's fusion; several models with ``aux_weight = 0`` are FDA's multi-band transfer (MBT) average.

    Shape:
        x (N, 3, H, W) in [0, 1] -> logits (N, C, h, w).
    """

    def __init__(self, models: Sequence[Segmenter], aux_weight: float = 0.0) -> None:
        super().__init__()
        if not models:
            raise ValueError("a teacher needs at least one model")
        self.models = nn.ModuleList(models)
        self.aux_weight = aux_weight

    def forward(self, x: torch.Tensor, group_ids: torch.Tensor | None = None) -> SegOutput:
        probs = []
        for model in self.models:
            out = model(x, group_ids)
            logits = out.logits.float() + (self.aux_weight * out.aux_logits.float() if self.aux_weight else 0.0)
            probs.append(torch.softmax(logits, dim=1))
        log_mean = torch.log(torch.stack(probs).mean(dim=0).clamp_min(1e-12))
        return SegOutput(log_mean, log_mean, log_mean)


@dataclass
class SoftPrediction:
    """One image's teacher prediction at its original size: argmax ``label`` (H, W) uint8 and ``confidence``
    (H, W) float16 = the max probability (float16 keeps a user's collection in memory at 3 bytes per pixel)."""

    name: str
    label: np.ndarray
    confidence: np.ndarray
    mean_entropy: float


@torch.inference_mode()
def predict_soft(teacher: nn.Module, ctx: PseudoContext) -> Iterator[SoftPrediction]:
    """Predict every record group by group, exactly as evaluation does (``pss.engine.evaluate``: chunks inside one
    group, resized to a common short side, logits upsampled back to each image's size); unreadable images skipped."""
    teacher.eval()
    for chunk in chunk_by_group(ctx.records, ctx.groups, ctx.batch_size):
        loaded: list[tuple[ImageRecord, np.ndarray]] = []
        for index in chunk:
            try:
                loaded.append((ctx.records[index], load_rgb(ctx.records[index].image_path)))
            except DatasetError as exc:
                log.warning("pseudo labels: skipping %s: %s", ctx.records[index].name, exc)
        if not loaded:
            continue
        logits = chunk_logits(teacher, [im for _, im in loaded], ctx.short_side, ctx.device, ctx.fast,
                              pad_to=ctx.batch_size)
        for (record, image), one in zip(loaded, logits):
            prob = torch.softmax(F.interpolate(one[None], size=image.shape[:2], mode="bilinear",
                                               align_corners=False), dim=1)
            confidence, label = prob.max(dim=1)
            yield SoftPrediction(record.name, label[0].to(torch.uint8).cpu().numpy(),
                                 confidence[0].cpu().numpy().astype(np.float16), float(pixel_entropy(prob).mean()))


def class_thresholds(predictions: Sequence[SoftPrediction], num_classes: int, percentile: float,
                     cap: float) -> np.ndarray:
    """FDA's class-wise thresholds: per class c, the ``percentile`` quantile of the max-probabilities of all pixels
    predicted c (``sorted(conf_c)[round(percentile·n_c)]``), capped at ``cap``; classes never predicted get ``cap``.

    Shape:
        returns (num_classes,) float64.
    """
    per_class: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for p in predictions:
        for c in np.unique(p.label):
            per_class[int(c)].append(p.confidence[p.label == c])
    thresholds = np.full(num_classes, cap, dtype=np.float64)
    for c, parts in enumerate(per_class):
        if parts:
            values = np.concatenate(parts).astype(np.float64)
            k = min(int(round(percentile * values.size)), values.size - 1)
            thresholds[c] = min(cap, float(np.partition(values, k)[k]))
    return thresholds


def _write(record: ImageRecord, label: np.ndarray, out_dir: Path) -> ImageRecord:
    path = out_dir / f"{record.name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)  # mixed target sets name images "<user>/<name>"
    write_label_png(path, label)
    return replace(record, mask_path=path)


def _entropy_ranked(model: Segmenter, config: EntropyRankedPseudoConfig, ctx: PseudoContext) -> PseudoLabels:
    predictions = list(predict_records(model, ctx.records, ctx.groups, ctx.device, ctx.short_side, ctx.batch_size,
                                       ctx.fast))
    return build_pseudo_labels(predictions, ctx.records, config, ctx.out_dir)


def _class_thresholded(model: Segmenter, config: ClassThresholdPseudoConfig, ctx: PseudoContext) -> PseudoLabels:
    extra = [ctx.load_model(ref) for ref in config.extra_models] if config.extra_models and ctx.load_model else []
    if config.extra_models and not extra:
        raise ConfigError("pseudo.extra_models needs a model loader (run the method through `pss train`)")
    predictions = list(predict_soft(Teacher([model, *extra]), ctx))
    num_classes = int(model.num_classes)
    thresholds = class_thresholds(predictions, num_classes, config.percentile, config.cap)
    by_name = {r.name: r for r in ctx.records}
    records, kept = [], 0
    for p in predictions:
        label = p.label.copy()
        label[p.confidence.astype(np.float64) < thresholds[p.label]] = IGNORE_INDEX
        kept += int((label != IGNORE_INDEX).sum())
        records.append(_write(by_name[p.name], label, ctx.out_dir))
    pixels = sum(p.label.size for p in predictions)
    summary = {"thresholds": [round(float(t), 4) for t in thresholds], "kept_pixels": kept / max(pixels, 1),
               "teachers": 1 + len(extra)}
    return PseudoLabels(records, {p.name: p.mean_entropy for p in predictions}, [p.name for p in predictions], summary)


def _fused_argmax(model: Segmenter, config: FusedArgmaxPseudoConfig, ctx: PseudoContext) -> PseudoLabels:
    by_name = {r.name: r for r in ctx.records}
    records, entropy = [], {}
    for p in predict_soft(Teacher([model], config.aux_weight), ctx):
        records.append(_write(by_name[p.name], p.label, ctx.out_dir))
        entropy[p.name] = p.mean_entropy
    return PseudoLabels(records, entropy, list(entropy), {"kept_pixels": 1.0})


# Pseudo-label policy per method config type (a literal registry, no if/elif over methods).
PSEUDO_POLICIES: dict[type, Callable[[Segmenter, Any, PseudoContext], PseudoLabels]] = {
    EntropyRankedPseudoConfig: _entropy_ranked,             # PSS step 2: entropy-ranked easy images
    ClassThresholdPseudoConfig: _class_thresholded,  # FDA SSL: class-wise 66th percentile, capped 0.9
    FusedArgmaxPseudoConfig: _fused_argmax,         # MRNet stage II: argmax of main + 0.5 aux, no threshold
}


def make_pseudo_labels(model: Segmenter, config: Any, ctx: PseudoContext) -> PseudoLabels:
    """Build the pseudo labels of ``ctx.records`` with the policy of the method's pseudo config and write them to
    ``ctx.out_dir/<name>.png``."""
    policy = PSEUDO_POLICIES.get(type(config))
    if policy is None:
        raise ConfigError(f"no pseudo-label policy for {type(config).__name__}; known: "
                          f"{', '.join(t.__name__ for t in PSEUDO_POLICIES)}")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return policy(model, config, ctx)
