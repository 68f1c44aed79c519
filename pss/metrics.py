"""Segmentation metrics: confusion matrix, per-class IoU, MIoU (two named conventions), FIoU, per-image IoU.

All values are fractions in [0, 1]; multiply by 100 for the paper's tables.

MIoU conventions (``MIoUConvention``), computed from one confusion matrix accumulated over a user's labelled images:

* ``"pss"`` -- the PSS official evaluation (``advent/utils/func.py: per_class_iu`` with ``+eps``, then ``nanmean``):
  ``iou_c = diag_c / (rowsum_c + colsum_c - diag_c + eps)``, ``eps = np.finfo(float).eps``. A class absent from both
  ground truth and prediction gets IoU 0 and *is averaged in*: the mean is always over all classes (21 for VOC).
* ``"present"`` -- the standard convention (ADVENT's evaluation): ``iou_c`` is NaN when the class has zero union and
  the mean is a ``nanmean`` over the classes that occur in the ground truth or the prediction.

FIoU (paper §5.1, official ``eval_UDA.py: single_image_iou``) is a *per-image* class-aware foreground IoU averaged
over images, see ``foreground_iou``.

Example::

    cm = ConfusionMatrix()
    for pred, target in pairs:                  # (H, W) class-index maps, torch or numpy, any device
        cm.update(pred, target)
    cm.miou("pss"), cm.miou("present")
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Iterable, Literal

import numpy as np
import torch

from pss.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

# np.finfo(float).eps exactly as the PSS official per_class_iu uses it.
PSS_EPS: float = float(np.finfo(float).eps)


class MIoUConvention(str, Enum):
    """How classes with zero union enter the mean IoU (see the module docstring)."""

    PSS = "pss"
    PRESENT = "present"


ConventionLike = MIoUConvention | Literal["pss", "present"]


def _convention(value: ConventionLike) -> MIoUConvention:
    try:
        return MIoUConvention(value)
    except ValueError:
        raise ValueError(f"unknown MIoU convention {value!r}; use 'pss' or 'present'") from None


def _as_index_tensor(x: Any, name: str) -> torch.Tensor:
    """A torch integer tensor of class indices from a torch tensor or numpy array (no copy when possible)."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class indices, got numpy dtype {x.dtype}")
        # torch lacks some unsigned numpy dtypes (uint32/uint64); int64 is always representable here.
        native = x.dtype in (np.uint8, np.int32, np.int64)
        x = torch.from_numpy(np.ascontiguousarray(x if native else x.astype(np.int64)))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise ValueError(f"{name} must hold integer class indices (argmax of the logits), got dtype {x.dtype}")
    return x


class ConfusionMatrix:
    """A (C, C) pixel confusion matrix; rows = ground truth, columns = prediction.

    Counts accumulate on ``device`` (default: the device of the first ``update``) with one ``torch.bincount``
    per update, so evaluation on a GPU never copies the maps to the host.

    A pixel is counted when its target is in ``[0, C)`` and differs from ``ignore_index``: 255 and any other
    out-of-range target value are ignored (as the official ``fast_hist``). Predictions must lie in ``[0, C)``.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.device = torch.device(device) if device is not None else None
        self._counts: torch.Tensor | None = None

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> "ConfusionMatrix":
        """Add one image (H, W) or a batch (N, H, W) of predicted and ground-truth class-index maps.

        Shape:
            pred, target: the same shape, (H, W) or (N, H, W); any integer dtype; any device.
        """
        pred_t, target_t = _as_index_tensor(pred, "pred"), _as_index_tensor(target, "target")
        if pred_t.shape != target_t.shape:
            raise ValueError(f"pred shape {tuple(pred_t.shape)} differs from target shape {tuple(target_t.shape)}")
        if pred_t.dim() not in (2, 3):
            raise ValueError(f"expected (H, W) or (N, H, W) maps, got shape {tuple(pred_t.shape)}")
        device = self.device or (self._counts.device if self._counts is not None else target_t.device)
        # int32 index arithmetic and no boolean-mask gather: ignored pixels go to an extra bin that is dropped
        # (about 10x faster than indexing with the valid mask, bench/data_bench.py)
        pred_t, target_t = pred_t.to(device).int().reshape(-1), target_t.to(device).int().reshape(-1)
        if pred_t.numel():
            low, high = (int(v) for v in torch.aminmax(pred_t))  # one host sync per update
            if low < 0 or high >= self.num_classes:
                raise ValueError(f"predictions must lie in [0, {self.num_classes}), got values in [{low}, {high}]")
        c = self.num_classes
        invalid = (target_t < 0) | (target_t >= c) | (target_t == self.ignore_index)
        index = (target_t * c + pred_t).masked_fill_(invalid, c * c)
        counts = torch.bincount(index, minlength=c * c + 1)[: c * c].reshape(c, c)
        self._counts = counts if self._counts is None else self._counts + counts.to(self._counts.device)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts into this one (e.g. per-worker matrices)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        if other._counts is not None:
            if self._counts is None:
                self._counts = other._counts.to(self.device or other._counts.device).clone()
            else:
                self._counts = self._counts + other._counts.to(self._counts.device)
        return self

    def reset(self) -> None:
        """Forget every count."""
        self._counts = None

    @property
    def matrix(self) -> np.ndarray:
        """The (C, C) int64 counts on the host; rows = ground truth, columns = prediction."""
        if self._counts is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self._counts.detach().cpu().numpy().astype(np.int64)

    def iou(self, convention: ConventionLike = MIoUConvention.PSS) -> np.ndarray:
        """Per-class IoU, (C,) float64: zero-union classes are 0 under ``"pss"``, NaN under ``"present"``."""
        return iou_from_matrix(self.matrix, convention)

    def miou(self, convention: ConventionLike = MIoUConvention.PSS) -> float:
        """Mean IoU: over all C classes (``"pss"``) or over classes with non-zero union (``"present"``)."""
        return miou_from_iou(self.iou(convention))

    def pixel_accuracy(self) -> float:
        """Correct / counted pixels; NaN when no pixel was counted."""
        m = self.matrix
        total = m.sum()
        return float(np.trace(m) / total) if total else math.nan


def iou_from_matrix(matrix: np.ndarray, convention: ConventionLike = MIoUConvention.PSS) -> np.ndarray:
    """Per-class IoU from a (C, C) confusion matrix under a named convention (module docstring)."""
    m = np.asarray(matrix, dtype=np.float64)
    diag = np.diag(m)
    union = m.sum(axis=1) + m.sum(axis=0) - diag
    if _convention(convention) is MIoUConvention.PSS:
        return diag / (union + PSS_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, diag / np.where(union > 0, union, 1.0), np.nan)


def miou_from_iou(iou: np.ndarray) -> float:
    """``nanmean`` of per-class IoU (a plain mean under ``"pss"``, where no NaN occurs); NaN if all are NaN."""
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0 or np.isnan(iou).all():
        return math.nan
    return float(np.nanmean(iou))


def foreground_iou(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                   ignore_as_foreground: bool = True, ignore_index: int = IGNORE_INDEX) -> float:
    """The paper's per-image FIoU term (PSS §5.1; official ``eval_UDA.py: single_image_iou``).

    ``inter = (p == t) & (p > 0)``, ``union = (p > 0) | (t > 0)``, ``FIoU_i = |inter| / |union|`` (0 if the union
    is empty). It is *class-aware*: a foreground pixel predicted as the wrong foreground class is in the union but
    not in the intersection. The user's FIoU is the mean of this over the labelled images.

    Oddity of the official code, kept as the default (``ignore_as_foreground=True``): target pixels equal to 255
    (VOC's boundary/ignore band) satisfy ``t > 0`` and so count as foreground: they always enter the union and can
    never be in the intersection. With ``ignore_as_foreground=False`` pixels whose target is ``ignore_index`` are
    dropped from both the intersection and the union instead.

    Shape:
        pred, target: (H, W) class-index maps (torch on any device, or numpy).
    """
    p, t = _as_index_tensor(pred, "pred"), _as_index_tensor(target, "target")
    if p.shape != t.shape or p.dim() != 2:
        raise ValueError(f"foreground_iou takes two (H, W) maps of one image, got {tuple(p.shape)} "
                         f"and {tuple(t.shape)}")
    p, t = p.long(), t.to(p.device).long()
    inter = (p == t) & (p > 0)
    union = (p > 0) | (t > 0)
    if not ignore_as_foreground:
        keep = t != ignore_index
        inter, union = inter & keep, union & keep
    n_union = int(union.sum())
    return float(int(inter.sum()) / n_union) if n_union else 0.0


def per_image_iou(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                  convention: ConventionLike = MIoUConvention.PRESENT, num_classes: int = NUM_CLASSES,
                  ignore_index: int = IGNORE_INDEX) -> float:
    """MIoU of one image (for ranking images); under ``"present"`` NaN when the image has no counted pixel.

    Shape:
        pred, target: (H, W) class-index maps.
    """
    cm = ConfusionMatrix(num_classes, ignore_index)
    return cm.update(pred, target).miou(convention)


@dataclass
class ImageScore:
    """One image's scores: ``miou`` under ``SegReport.image_convention``."""

    name: str
    fiou: float
    miou: float


@dataclass
class SegReport:
    """Evaluation of a set of (prediction, ground truth) pairs, e.g. one user's labelled images.

    ``miou`` and ``per_class_iou`` are keyed by convention name (``"pss"``, ``"present"``); ``confusion`` is the
    (C, C) matrix as nested lists (rows = ground truth). ``fiou`` is the mean of the per-image FIoU terms (NaN
    when there is no image).
    """

    num_images: int
    fiou: float
    miou: dict[str, float]
    per_class_iou: dict[str, list[float]]
    pixel_accuracy: float
    class_names: list[str]
    confusion: list[list[int]]
    images: list[ImageScore] = field(default_factory=list)
    image_convention: str = MIoUConvention.PRESENT.value

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become ``None``)."""
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegReport":
        """Inverse of ``to_dict`` (``None`` scores become NaN)."""
        return cls(
            num_images=int(data["num_images"]),
            fiou=_float(data["fiou"]),
            miou={k: _float(v) for k, v in data["miou"].items()},
            per_class_iou={k: [_float(x) for x in v] for k, v in data["per_class_iou"].items()},
            pixel_accuracy=_float(data["pixel_accuracy"]),
            class_names=list(data["class_names"]),
            confusion=[[int(x) for x in row] for row in data["confusion"]],
            images=[ImageScore(str(i["name"]), _float(i["fiou"]), _float(i["miou"])) for i in data.get("images", [])],
            image_convention=str(data.get("image_convention", MIoUConvention.PRESENT.value)),
        )


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def evaluate_pairs(pairs: Iterable[tuple[str, torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]],
                   num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                   image_convention: ConventionLike = MIoUConvention.PRESENT,
                   ignore_as_foreground: bool = True) -> SegReport:
    """Evaluate ``(name, pred, target)`` triples of (H, W) maps into a ``SegReport`` (one pass, any device)."""
    image_conv = _convention(image_convention)
    total = ConfusionMatrix(num_classes, ignore_index)
    images: list[ImageScore] = []
    for name, pred, target in pairs:
        one = ConfusionMatrix(num_classes, ignore_index).update(pred, target)
        fiou = foreground_iou(pred, target, ignore_as_foreground, ignore_index)
        images.append(ImageScore(str(name), fiou, one.miou(image_conv)))
        total.merge(one)
    conventions = list(MIoUConvention)
    names = list(CLASS_NAMES) if num_classes == NUM_CLASSES else [str(i) for i in range(num_classes)]
    return SegReport(
        num_images=len(images),
        fiou=float(np.mean([i.fiou for i in images])) if images else math.nan,
        miou={c.value: total.miou(c) for c in conventions},
        per_class_iou={c.value: [float(x) for x in total.iou(c)] for c in conventions},
        pixel_accuracy=total.pixel_accuracy(),
        class_names=names,
        confusion=total.matrix.tolist(),
        images=images,
        image_convention=image_conv.value,
    )
