"""The one record type every reader, dataset and statistic shares."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        name: file stem, unique within its collection (a VOC id or a PSS image name).
        image_path: the JPEG (or PNG) image.
        mask_path: the label PNG, or ``None`` for an unlabelled image.
        tags: image-level class indices (1..20; background is never a tag).
        user: the PSS user folder (``"id3"``) or ``None`` for source images.
        scored: whether the mask is ground truth that metrics may score. ``False`` for a user's masked images outside
            the evaluation set (``val_all.txt``), e.g. images annotated for training (``annotated.txt``): they are
            trained on, never scored. The PSS reader sets it; every scorer reads :attr:`eval_mask`, never
            ``mask_path`` (the one rule of the honest splits).
    """

    name: str
    image_path: Path
    mask_path: Path | None
    tags: tuple[int, ...] = ()
    user: str | None = None
    scored: bool = True

    @property
    def labelled(self) -> bool:
        return self.mask_path is not None

    @property
    def eval_mask(self) -> Path | None:
        """The mask to score this image against, or ``None`` (unlabelled, or a training annotation)."""
        return self.mask_path if self.scored else None
