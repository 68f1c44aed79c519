"""The strong/weak class split of transferable semi-supervised segmentation (issue 18; Xiao et al., AAAI 2018,
``papers/transferable_semi_supervised_abstract.txt``, methods.md §11): "strong" categories keep their pixel-level
annotations, "weak" categories have image-level labels only.

The abstract fixes only that much (and the 50 % / 0 % strong settings on VOC). Our choices, labelled as such:

* **Which classes** (:func:`choose_strong_classes`): an explicit list, or ``round(fraction * 20)`` object classes
  drawn without replacement by ``numpy.random.default_rng(seed)``. Background (0) is always strong: it is annotated
  wherever any pixel label exists and is no image-level tag (``pss.data.tags``).
* **What is hidden** (:func:`hide_weak_pixels`, :class:`StrongWeakSplit`), two policies:

  - ``"pixels"`` (the default): every pixel of a weak class becomes 255 (ignored); strong classes and background
    stay. Caution: the ignored region then *is* the weak objects' silhouette, and the background labelled up to
    it tells a segmenter where they end. Nothing downstream may read the 255 region as information (the L-Net
    stages here never do), but a P-Net trained on these labels sees background exactly up to the weak objects.
  - ``"image"``: an image containing any weak class loses its whole mask (all 255: an image-level-labelled
    image); images with strong classes only keep theirs. No weak-object geometry leaks; the stricter protocol.

* **Tags stay complete**: the image-level tag vector of a source image is computed from its *full* mask
  (``pss.data.tags.tags_from_mask``) before hiding and stored in ``ImageRecord.tags``, so ``image_tags`` (the
  ``tags`` batch field) and :func:`split_record_tags` give every class, weak ones included. Do not call
  ``pss.data.tags.record_tags`` on a split record: for a source record it reads the (hidden) mask again.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from pss.data.labels import IGNORE_INDEX, NUM_CLASSES, read_label_png, write_label_png
from pss.data.records import ImageRecord
from pss.data.tags import tags_from_indices, tags_from_mask

HidePolicy = Literal["pixels", "image"]
HIDE_POLICIES: tuple[str, ...] = ("pixels", "image")
BACKGROUND = 0


@dataclass
class StrongWeakConfig:
    """The split's settings, part of the transfer methods' own configs (``method.strong_classes`` etc.).

    strong_classes: explicit strong object classes (1..20); when given, ``strong_fraction`` is not used.
    strong_fraction: else this fraction of the 20 object classes, drawn with ``split_seed`` (0.5: the abstract's
        50 % setting; 0: its 0 % setting; 1: fully supervised).
    hide: ``"pixels"`` (weak-class pixels 255) or ``"image"`` (whole mask 255 when a weak class is present).
    """

    strong_classes: tuple[int, ...] | None = None
    strong_fraction: float = 0.5
    split_seed: int = 0
    hide: str = "pixels"

    def __post_init__(self) -> None:
        if self.hide not in HIDE_POLICIES:
            raise ValueError(f"hide must be one of {', '.join(HIDE_POLICIES)}, got {self.hide!r}")
        self.strong(NUM_CLASSES)  # validates the classes / fraction now, at the config boundary

    def strong(self, num_classes: int = NUM_CLASSES) -> tuple[int, ...]:
        """The strong classes (background included) this config selects."""
        if self.strong_classes is not None:
            return choose_strong_classes(self.strong_classes, num_classes=num_classes)
        return choose_strong_classes(fraction=self.strong_fraction, seed=self.split_seed, num_classes=num_classes)


def choose_strong_classes(classes: Sequence[int] | None = None, fraction: float | None = None, seed: int = 0,
                          num_classes: int = NUM_CLASSES) -> tuple[int, ...]:
    """The strong classes, background included, sorted.

    Exactly one of ``classes`` (explicit object-class indices 1..C-1; background may be listed or not) and
    ``fraction`` (in [0, 1]: ``round(fraction * (C - 1))`` object classes drawn without replacement with
    ``numpy.random.default_rng(seed)``) must be given. ``fraction=0`` gives ``(0,)`` (the abstract's 0 % setting),
    ``fraction=1`` every class (the fully supervised baseline).

    Raises ``ValueError`` for both or neither, a fraction outside [0, 1] or a class index out of range."""
    if (classes is None) == (fraction is None):
        raise ValueError("give either the strong classes (method.strong_classes) or a fraction of the object "
                         "classes (method.strong_fraction), not both and not neither")
    if classes is not None:
        chosen = {int(c) for c in classes}
        bad = sorted(c for c in chosen if not 0 <= c < num_classes)
        if bad:
            raise ValueError(f"strong class index(es) {bad} outside 0..{num_classes - 1}")
        return tuple(sorted(chosen | {BACKGROUND}))
    assert fraction is not None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"strong_fraction must be in [0, 1] (0.5 = the abstract's 50 % setting), got {fraction}")
    count = int(round(fraction * (num_classes - 1)))
    drawn = np.random.default_rng(seed).choice(np.arange(1, num_classes), size=count, replace=False)
    return tuple(sorted({BACKGROUND, *(int(c) for c in drawn)}))


def weak_classes(strong: Iterable[int], num_classes: int = NUM_CLASSES) -> tuple[int, ...]:
    """The object classes that are not strong (background is never weak)."""
    strong_set = set(strong)
    return tuple(c for c in range(1, num_classes) if c not in strong_set)


def hide_weak_pixels(mask: np.ndarray, strong: Iterable[int], policy: HidePolicy = "pixels") -> np.ndarray:
    """The label a strong/weak split leaves of a full mask: weak-class pixels 255 (``"pixels"``), or the whole
    mask 255 when any weak class is present (``"image"``). Background, strong classes and 255 stay otherwise;
    label values outside the label space are left to the readers' checks (they are not classes of either group).

    Shape: mask (H, W) integer -> (H, W) uint8 (a new array)."""
    if policy not in HIDE_POLICIES:
        raise ValueError(f"unknown hide policy {policy!r}; use one of {', '.join(HIDE_POLICIES)}")
    mask = np.asarray(mask)
    strong_lut = np.zeros(256, dtype=bool)
    strong_lut[[c for c in set(strong) if 0 <= c < 256]] = True
    strong_lut[IGNORE_INDEX] = True
    values = mask.astype(np.int64)
    keep = strong_lut[np.clip(values, 0, 255)] | (values >= NUM_CLASSES)
    out = mask.astype(np.uint8).copy()
    if policy == "image":
        if not keep.all():
            out[:] = IGNORE_INDEX
        return out
    out[~keep] = IGNORE_INDEX
    return out


def split_record_tags(record: ImageRecord) -> np.ndarray:
    """The (20,) tag vector of a record made by :func:`apply_split` (its ``tags``: from the full mask)."""
    return tags_from_indices(record.tags)


def is_weak_image(tags: np.ndarray, strong: Iterable[int]) -> bool:
    """Whether an image's (20,) tag vector names a weak class (such an image needs L-Net's coarse labels)."""
    present = np.flatnonzero(np.asarray(tags)) + 1
    strong_set = set(strong)
    return any(int(c) not in strong_set for c in present)


@dataclass(frozen=True)
class StrongWeakSplit:
    """The result of :func:`apply_split`.

    ``records``: every labelled source record with ``mask_path`` = its hidden label PNG and ``tags`` = the classes
    of its full mask; ``weak_images`` / ``strong_images``: the names of those whose tags do / do not name a weak
    class."""

    strong: tuple[int, ...]
    weak: tuple[int, ...]
    policy: str
    records: tuple[ImageRecord, ...]
    weak_images: tuple[str, ...]
    strong_images: tuple[str, ...]

    def record(self, name: str) -> ImageRecord:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(name)


def apply_split(source: Sequence[ImageRecord], strong: Sequence[int], folder: Path,
                policy: HidePolicy = "pixels") -> StrongWeakSplit:
    """Write ``<folder>/<name>.png`` = :func:`hide_weak_pixels` of every labelled source mask and return the split
    records (unlabelled records are left out: they carry no tags to derive). The full masks are read once here, for
    the tags only; nothing else of them reaches a training stage."""
    strong_t = tuple(sorted(set(strong) | {BACKGROUND}))
    folder.mkdir(parents=True, exist_ok=True)
    records: list[ImageRecord] = []
    weak_names: list[str] = []
    strong_names: list[str] = []
    for record in source:
        if record.mask_path is None:
            continue
        full = read_label_png(record.mask_path)
        tags = tags_from_mask(full)
        path = folder / f"{record.name}.png"
        write_label_png(path, hide_weak_pixels(full, strong_t, policy))
        records.append(replace(record, mask_path=path, tags=tuple(int(c) for c in np.flatnonzero(tags) + 1)))
        (weak_names if is_weak_image(tags, strong_t) else strong_names).append(record.name)
    return StrongWeakSplit(strong_t, weak_classes(strong_t), policy, tuple(records), tuple(weak_names),
                           tuple(strong_names))
