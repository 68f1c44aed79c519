"""Image-level tags as supervision (issue 17): the 20-dim multi-hot class vector of an image, and which user images
have no tags.

Where a vector comes from:

* a **source** image (``ImageRecord.user is None``, VOC): the classes 1..20 present in its full mask (psa's
  ``make_cls_labels.py`` builds ``cls_labels.npy`` from the annotations the same way; EPS reads that file);
* a **user** image: only the user's own ``imgLabelList.txt`` line (``ImageRecord.tags``). Its mask, when it has one,
  is evaluation ground truth and is never read for tags.

A user image without a tag line is *untagged*: it is reported (:func:`user_tag_report`), never guessed. An image
tagged with no VOC class (``name.jpg:UNKNOWN``) is a true negative (all classes 0), not untagged.

The vectors drop the background (EPS/psa ``cls_labels``: float32[20], index i = VOC class i + 1). The batch field
``tags`` of :mod:`pss.data.datasets` is the 21-dim form (background slot always 0): :func:`batch_tags20` converts.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pss.data.labels import IGNORE_INDEX, NUM_CLASSES, read_label_png
from pss.data.pss_layout import TAG_FILES, UserCollection
from pss.data.records import ImageRecord

NUM_TAGS: int = NUM_CLASSES - 1  # 20 VOC object classes; background is never a tag


def tags_from_indices(indices: Iterable[int]) -> np.ndarray:
    """Multi-hot (20,) float32 of class indices 1..20 (index i of the vector = class i + 1).

    Raises ``ValueError`` for an index outside 1..20 (background 0 and ignore 255 are not tags)."""
    vector = np.zeros(NUM_TAGS, dtype=np.float32)
    for index in indices:
        if not 0 < int(index) < NUM_CLASSES:
            raise ValueError(f"tag index {index} is outside the VOC object classes 1..{NUM_CLASSES - 1}")
        vector[int(index) - 1] = 1.0
    return vector


def tags_from_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Multi-hot (20,) float32 of the object classes present in a VOC mask (0 background and 255 ignored).

    Shape:
        mask: (H, W) class indices."""
    values = np.unique(mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask))
    return tags_from_indices(int(v) for v in values if 0 < v < NUM_CLASSES and v != IGNORE_INDEX)


def record_tags(record: ImageRecord, mask: np.ndarray | None = None) -> np.ndarray:
    """The (20,) tag vector of one image: a source image's mask classes (``mask``, else its ``mask_path`` is read),
    a user image's ``imgLabelList.txt`` tags (its mask is never used). Raises ``ValueError`` for a source record
    without a mask (nothing to derive tags from)."""
    if record.user is not None:
        return tags_from_indices(record.tags)
    if mask is None:
        if record.mask_path is None:
            raise ValueError(f"source image {record.name} has no mask to derive its tags from")
        mask = read_label_png(record.mask_path)
    return tags_from_mask(mask)


def batch_tags20(tags: torch.Tensor) -> torch.Tensor:
    """The 20 object-class columns of the 21-dim ``tags`` batch field (``pss.data.datasets.image_tags``).

    Shape: (N, 21) -> (N, 20); an input already (N, 20) is returned as it is."""
    if tags.shape[-1] == NUM_TAGS:
        return tags
    if tags.shape[-1] != NUM_CLASSES:
        raise ValueError(f"tags must have {NUM_CLASSES} or {NUM_TAGS} columns, got shape {tuple(tags.shape)}")
    return tags[..., 1:]


@dataclass
class TagReport:
    """A user's images split by what their tags say.

    ``tagged``: images with a tag line (their vectors are the supervision; ``negatives`` among them name no VOC
    class); ``untagged``: image names without a tag line (or every image when the user has no tag file): left
    out of every weakly supervised stage and listed, not guessed."""

    tagged: list[ImageRecord] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{len(self.tagged)} tagged image(s) ({len(self.negatives)} with no VOC class)"
        if self.untagged:
            shown = ", ".join(self.untagged[:10]) + (" ..." if len(self.untagged) > 10 else "")
            text += f"; {len(self.untagged)} untagged, left out: {shown} (add their lines to {TAG_FILES[0]})"
        return text


def user_tag_report(collection: UserCollection) -> TagReport:
    """Split a user's records into tagged / untagged (from the reader's ``untagged_image`` and missing tag file
    problems, the only place the two are told apart: ``ImageRecord.tags == ()`` is both "untagged" and "UNKNOWN")."""
    # no tag file, or one that cannot be read (a file-level problem, without a line number): nothing is tagged
    no_tag_file = any(p.kind in ("missing_file", "bad_tag_line") and p.line is None and p.path.name in TAG_FILES
                      for p in collection.problems)
    untagged_paths = {Path(p.path) for p in collection.problems if p.kind == "untagged_image"}
    report = TagReport()
    for record in collection.records:
        if no_tag_file or Path(record.image_path) in untagged_paths:
            report.untagged.append(record.name)
            continue
        report.tagged.append(record)
        if not record.tags:
            report.negatives.append(record.name)
    return report
