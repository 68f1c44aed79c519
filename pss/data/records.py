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
    """

    name: str
    image_path: Path
    mask_path: Path | None
    tags: tuple[int, ...] = ()
    user: str | None = None

    @property
    def labelled(self) -> bool:
        return self.mask_path is not None
