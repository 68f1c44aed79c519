"""``Problem``, one thing wrong with a dataset, and the kinds of problem there are.

The readers (``pss_layout``, ``voc_layout``) collect problems while reading and the dataset doctor
(``validate``) adds its own and reports them all; this module sits below the three of them so that each
imports it and the doctor imports the readers, with no import going back up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KINDS: dict[str, str] = {
    "unknown_layout": "folder is not a data root, VOC root, personal root or user folder",
    "missing_folder": "an expected folder is missing",
    "missing_file": "a file named by a list (or a required file) is missing",
    "corrupt_image": "image cannot be fully decoded (corrupt, truncated or unsupported)",
    "corrupt_mask": "mask cannot be read as a palette/grey label PNG",
    "mask_size_mismatch": "mask size differs from its image's size",
    "mask_orientation_mismatch": "mask is the image's size transposed (EXIF-rotated photo)",
    "bad_label_values": "mask holds values outside the label space (0..20, 255)",
    "bad_list_line": "malformed list line",
    "bad_tag_line": "malformed image-level tag line",
    "unknown_class": "tag names a class outside the VOC label space",
    "untagged_image": "image has no line in imgLabelList.txt",
    "tag_for_missing_image": "tag line for an image that does not exist",
    "duplicate_tag_line": "image tagged on more than one line",
    "duplicate_name": "two images share a name",
    "orphan_mask": "mask without an image",
    "ungrouped_image": "image missing from the grouping file",
    "missing_saliency": "image has no saliency map in SALImages/",
    "corrupt_saliency": "saliency map cannot be read as an 8-bit grey (or RGB) PNG",
    "saliency_size_mismatch": "saliency map size differs from its image's size",
    "saliency_orientation_mismatch": "saliency map is the image's size transposed (EXIF-rotated photo)",
    "bad_saliency_values": "saliency map values are not 0-255 grey levels (16-bit, palette, or a 0/1 map)",
}
"""Every ``Problem.kind``, with the one-line description the doctor's report heads each kind's list with."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset. ``kind`` is a key of ``KINDS``; ``message`` says what is wrong and what
    to do; ``line`` is 1-based."""

    path: Path
    kind: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: [{self.kind}] {self.message}"
