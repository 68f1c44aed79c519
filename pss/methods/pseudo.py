"""Pseudo-label policies of the second-stage methods (methods.md §1.6, §4, §6, §7): each policy builds its labels.

A second-stage method (``pss_s2``, ``fda_ssl``, ``mrnet_s2``) holds one of these configs as ``config.pseudo`` and
returns it from :meth:`pss.methods.base.Method.pseudo_policy`. Before training, the engine calls
``policy.build(model, source)``: the policy decides which images and pixels become labels; the engine's
``source`` (:class:`PseudoSource`, ``pss.engine.pseudo.PseudoContext``) predicts the target images exactly as
evaluation does and writes the label PNGs. So a new policy is one dataclass here, with no change to the engine.

* :class:`EntropyRankedPseudoConfig` (PSS step 2, paper §4.3, §5.2): images ranked by mean pixel entropy
  (IntraDA-style image-level ranking, as the released code does); the lowest-entropy ``select_rate`` of them (paper:
  r = 0.5) are pseudo-labelled. Inside a selected image the paper sets "masked pseudo label pixels" to 255: we keep
  the ``pixel_keep_rate`` lowest-entropy pixels and set the rest to 255 (``pixel_keep_rate = 1`` reproduces the
  released code's full argmax maps).
* :class:`ClassThresholdPseudoConfig` (FDA SSL): every image; per class, pixels under the 66th-percentile confidence
  of that class (capped 0.9) -> 255; the teacher may average several models (multi-band transfer).
* :class:`FusedArgmaxPseudoConfig` (MRNet stage II): every image, argmax of ``softmax(main + 0.5·aux)``, no
  threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from pss.data.labels import IGNORE_INDEX
from pss.data.records import ImageRecord
from pss.losses import select_easy_images
from pss.models.segmenter import SegOutput, Segmenter

if TYPE_CHECKING:
    from pss.engine.evaluate import Prediction


@dataclass
class PseudoLabels:
    """The records to train on (``mask_path`` = their pseudo-label PNG), every image's mean entropy, the names of
    the selected images, and a summary of the policy's choices for the run log (e.g. FDA's class thresholds)."""

    records: list[ImageRecord]
    mean_entropy: dict[str, float]
    selected: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class SoftPrediction:
    """One image's teacher prediction at its original size: argmax ``label`` (H, W) uint8 and ``confidence``
    (H, W) float16 = the max probability (float16 keeps a user's collection in memory at 3 bytes per pixel)."""

    name: str
    label: np.ndarray
    confidence: np.ndarray
    mean_entropy: float


class PseudoSource(Protocol):
    """What a policy gets from the engine: the target images, predicted as evaluation predicts them, and a writer."""

    def predict(self, model: nn.Module) -> Iterable["Prediction"]:
        """Argmax label and pixel entropy of every readable target image (unreadable ones skipped and logged)."""
        ...

    def predict_soft(self, teacher: nn.Module) -> Iterable[SoftPrediction]:
        """Argmax label and max probability of every readable target image under ``teacher``."""
        ...

    def write(self, name: str, label: np.ndarray) -> ImageRecord:
        """Write ``label`` as image ``name``'s pseudo-label PNG; returns its record with ``mask_path`` set."""
        ...

    def load_model(self, ref: str) -> Segmenter:
        """A run id or checkpoint path -> that segmenter on the training device (extra teachers)."""
        ...

    def tags(self, name: str) -> tuple[int, ...]:
        """Image ``name``'s image-level tags (class indices 1..20; ``()`` when it has none)."""
        ...


class PseudoPolicy(Protocol):
    """A pseudo config: ``pseudo_every`` (the loop trains a pseudo batch every that many steps), ``build`` and
    ``selected_images``; ``select_rate``: the fraction of the images labelled; ``pixel_keep_rate``: inside a
    selected image, the fraction of pixels kept lowest entropy first (1.0 for policies that keep pixels by another
    rule, which the app's Inspect then names)."""

    @property
    def pseudo_every(self) -> int: ...

    @property
    def select_rate(self) -> float: ...

    @property
    def pixel_keep_rate(self) -> float: ...

    def build(self, model: Segmenter, source: PseudoSource) -> PseudoLabels: ...

    def selected_images(self, mean_entropy: dict[str, float]) -> list[str]:
        """Which images (by name) ``build`` would label, given every image's mean entropy (the app's Inspect)."""
        ...


class Teacher(nn.Module):
    """The fused prediction of one or more segmenters: ``mean_k softmax(main_k + aux_weight·aux_k)``.

    ``forward`` returns a ``SegOutput`` whose ``logits`` are the log of that mean, so ``softmax(logits)`` is the fused
    probability and prediction code can use a teacher like a segmenter. ``aux_weight = 0.5`` is MRNet's fusion;
    several models with ``aux_weight = 0`` are FDA's multi-band transfer (MBT) average.

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


def _check_every(every: int) -> None:
    if every < 1:
        raise ValueError("pseudo_every must be >= 1")


# ---- PSS step 2 ---------------------------------------------------------------------------------------------------


def mask_uncertain_pixels(prediction: "Prediction", keep_rate: float) -> np.ndarray:
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


def restrict_to_tags(label: np.ndarray, tags: Sequence[int]) -> np.ndarray:
    """"OURS-S2 + tags" (issue 17): pixels whose pseudo class is neither background nor one of the image's ``tags``
    become 255 (ignored), so a pseudo label never teaches a class the user said is not in the image. An image
    without tags (``()``) is left as it is: a user image with no tag line is untagged, not a photo of nothing
    (``pss.data.tags``: untagged images are reported, never guessed; the record cannot tell it from ``UNKNOWN``).

    Shape:
        label (H, W) uint8 -> (H, W) uint8.
    """
    if not tags:
        return label
    allowed = np.zeros(256, dtype=bool)
    allowed[[0, IGNORE_INDEX, *(int(t) for t in tags)]] = True
    out = label.copy()
    out[~allowed[label]] = IGNORE_INDEX
    return out


@dataclass
class EntropyRankedPseudoConfig:
    """How PSS step 2 builds pseudo labels (paper §4.3, §5.2; methods.md §1.6 for the released code).

    select_rate: fraction r of the user's images, ranked by mean pixel entropy, used as pseudo-labelled
        (paper: r = 0.5; released code 0.6/0.67).
    pixel_keep_rate: inside a selected image, the fraction of pixels kept, lowest entropy first; the rest
        are set to 255 ("the masked pseudo label pixels are set to 255"). 1.0 = the released code's full
        argmax maps.
    pseudo_every: train a pseudo batch every this many steps (released code: 2).
    restrict_to_tags: "OURS-S2 + tags" (issue 17): in each selected image, pixels whose argmax is a class outside
        the image's tags (``imgLabelList.txt``) plus background become 255 (:func:`restrict_to_tags`; after the
        entropy masking). False: the paper's OURS-S2.
    """

    select_rate: float = 0.5
    pixel_keep_rate: float = 0.8
    pseudo_every: int = 2
    restrict_to_tags: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.select_rate <= 1 or not 0 < self.pixel_keep_rate <= 1:
            raise ValueError("select_rate and pixel_keep_rate must be in (0, 1]")
        _check_every(self.pseudo_every)

    def selected_images(self, mean_entropy: dict[str, float]) -> list[str]:
        """The easiest ``select_rate`` of the images by mean entropy (``select_easy_images``), in rank order."""
        names = list(mean_entropy)
        return [names[i] for i in select_easy_images([mean_entropy[n] for n in names], self.select_rate)]

    def label_predictions(self, predictions: Sequence["Prediction"], write: Any,
                          tags: Callable[[str], Sequence[int]] | None = None) -> PseudoLabels:
        """Select the easy images among ``predictions`` and write their masked labels with ``write(name, label)``;
        with ``restrict_to_tags``, ``tags(name)`` gives each image's tags."""
        entropy = {p.name: p.mean_entropy for p in predictions}
        by_name = {p.name: p for p in predictions}
        chosen = self.selected_images(entropy)
        if self.restrict_to_tags and tags is None:
            raise ValueError("restrict_to_tags needs the images' tags (the pseudo source's tags())")
        records = []
        for name in chosen:
            label = mask_uncertain_pixels(by_name[name], self.pixel_keep_rate)
            if self.restrict_to_tags and tags is not None:
                label = restrict_to_tags(label, tags(name))
            records.append(write(name, label))
        return PseudoLabels(records, entropy, chosen, {"restrict_to_tags": True} if self.restrict_to_tags else {})

    def build(self, model: Segmenter, source: PseudoSource) -> PseudoLabels:
        return self.label_predictions(list(source.predict(model)), source.write,
                                      source.tags if self.restrict_to_tags else None)


# ---- FDA SSL ------------------------------------------------------------------------------------------------------


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


@dataclass
class ClassThresholdPseudoConfig:
    """FDA's pseudo labels (``getSudoLabel_multi.py``): class-wise confidence thresholds over the target set.

    percentile: per class, the threshold is this quantile of the max-probabilities of its predicted pixels (0.66).
    cap: thresholds above this are lowered to it (0.9), so confident classes keep every pixel above 0.9.
    extra_models: run ids or checkpoint paths whose softmax is averaged with the starting model's (MBT).
    pseudo_every: train a pseudo batch every this many steps (1: every step, as the SSL round does).
    """

    percentile: float = 0.66
    cap: float = 0.9
    extra_models: list[str] = field(default_factory=list)
    pseudo_every: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.percentile < 1.0 or not 0.0 < self.cap <= 1.0:
            raise ValueError("percentile must be in [0, 1) and cap in (0, 1]")
        _check_every(self.pseudo_every)

    select_rate: ClassVar[float] = 1.0  # every image
    pixel_keep_rate: ClassVar[float] = 1.0  # pixels are kept by class threshold, not by entropy rank

    def selected_images(self, mean_entropy: dict[str, float]) -> list[str]:
        return list(mean_entropy)  # every image; the thresholds act on pixels

    def build(self, model: Segmenter, source: PseudoSource) -> PseudoLabels:
        teachers = [model, *(source.load_model(ref) for ref in self.extra_models)]
        predictions = list(source.predict_soft(Teacher(teachers)))
        thresholds = class_thresholds(predictions, int(model.num_classes), self.percentile, self.cap)
        records, kept = [], 0
        for p in predictions:
            label = p.label.copy()
            label[p.confidence.astype(np.float64) < thresholds[p.label]] = IGNORE_INDEX
            kept += int((label != IGNORE_INDEX).sum())
            records.append(source.write(p.name, label))
        pixels = sum(p.label.size for p in predictions)
        summary = {"thresholds": [round(float(t), 4) for t in thresholds], "kept_pixels": kept / max(pixels, 1),
                   "teachers": len(teachers)}
        return PseudoLabels(records, {p.name: p.mean_entropy for p in predictions}, [p.name for p in predictions],
                            summary)


# ---- MRNet stage II -----------------------------------------------------------------------------------------------


@dataclass
class FusedArgmaxPseudoConfig:
    """MRNet's pseudo labels: ``argmax softmax(main + aux_weight·aux)`` for every target image, no threshold.

    pseudo_every: train a pseudo batch every this many steps (1: stage II trains on pseudo labels every step).
    """

    aux_weight: float = 0.5
    pseudo_every: int = 1

    def __post_init__(self) -> None:
        if self.aux_weight < 0:
            raise ValueError("aux_weight must be >= 0")
        _check_every(self.pseudo_every)

    select_rate: ClassVar[float] = 1.0
    pixel_keep_rate: ClassVar[float] = 1.0  # every pixel of every image

    def selected_images(self, mean_entropy: dict[str, float]) -> list[str]:
        return list(mean_entropy)

    def build(self, model: Segmenter, source: PseudoSource) -> PseudoLabels:
        records, entropy = [], {}
        for p in source.predict_soft(Teacher([model], self.aux_weight)):
            records.append(source.write(p.name, p.label))
            entropy[p.name] = p.mean_entropy
        return PseudoLabels(records, entropy, list(entropy), {"kept_pixels": 1.0})


__all__ = ["ClassThresholdPseudoConfig", "EntropyRankedPseudoConfig", "FusedArgmaxPseudoConfig", "PseudoLabels",
           "PseudoPolicy", "PseudoSource", "SoftPrediction", "Teacher", "class_thresholds", "mask_uncertain_pixels",
           "restrict_to_tags"]
