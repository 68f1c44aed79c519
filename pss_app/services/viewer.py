"""One image opened: the photo (EXIF applied), its tags, and its ground-truth mask drawn over it.

Overlays are written as PNG files under ``WS/cache/views`` and handed to Gradio as file paths, so the
browser gets exactly these pixels (Gradio's default for arrays is lossy webp, which corrupts label
colours; app_anchors §4.2).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pss.api import (CLASS_NAMES, IGNORE_INDEX, VOC_PALETTE, Workspace, atomic_path, colorize, file_key, load_image,
                     load_label, read_user)
from pss.api.maps import MAX_VIEW_SIDE, display_size
from pss.errors import DatasetError


_VIEW_VERSION = "v2"


@dataclass
class ImageView:
    """What the image panel shows for one image.

    Attributes:
        path: PNG of the photo with the GT overlay at the requested opacity (or the plain photo).
        tags: the image-level class names.
        legend: (class name, "#rrggbb", percent of pixels) for every class in the mask, largest first.
        message: a problem to show (mask size mismatch, unreadable mask), or "".
    """

    user: str
    name: str
    path: Path
    labelled: bool
    width: int
    height: int
    tags: list[str] = field(default_factory=list)
    legend: list[tuple[str, str, float]] = field(default_factory=list)
    message: str = ""

    def tags_markdown(self) -> str:
        tags = ", ".join(self.tags) if self.tags else "none (UNKNOWN)"
        state = "labelled (GT mask)" if self.labelled else "unlabelled"
        return f"**{self.name}** · {self.user} · {self.width}×{self.height} · {state}  \n**tags:** {tags}"

    def legend_html(self) -> str:
        if not self.legend:
            return "<div class='pss-legend'>no ground-truth mask</div>" if not self.labelled else ""
        rows = "".join(
            f"<span class='pss-legend-item'><span class='pss-swatch' style='background:{colour}'></span>"
            f"{html.escape(name)} {share:.1f}%</span>" for name, colour, share in self.legend)
        return f"<div class='pss-legend'>{rows}</div>"


def overlay(image: np.ndarray, label: np.ndarray, opacity: float) -> np.ndarray:
    """Blend the VOC colours of ``label`` over ``image``; background (0) pixels stay untouched.

    ``out = (1 - a) * image + a * palette[label]`` where ``a = opacity`` on non-background pixels
    (ignore pixels, 255, are drawn in the palette's white so object boundaries stay visible).

    Shape:
        image: (H, W, 3) uint8; label: (H, W) uint8; returns (H, W, 3) uint8.
    """
    alpha = float(np.clip(opacity, 0.0, 1.0))
    colours = colorize(label).astype(np.float32)
    blended = image.astype(np.float32)
    drawn = label != 0
    blended[drawn] = (1.0 - alpha) * blended[drawn] + alpha * colours[drawn]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def legend(label: np.ndarray) -> list[tuple[str, str, float]]:
    """(class name, hex colour, % of pixels) for every label value present, largest share first."""
    values, counts = np.unique(label, return_counts=True)
    total = max(int(label.size), 1)
    rows = []
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):  # np.unique: one count per value
        name = CLASS_NAMES[value] if value < len(CLASS_NAMES) else ("ignore" if value == IGNORE_INDEX
                                                                       else f"invalid {value}")
        r, g, b = (int(c) for c in VOC_PALETTE[value])
        rows.append((name, f"#{r:02x}{g:02x}{b:02x}", 100.0 * count / total))
    return sorted(rows, key=lambda row: -row[2])


def fit_for_display(image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize for display: long side at most MAX_VIEW_SIDE; small images (the demo's 192 px) enlarged by an
    integer factor to at least MIN_VIEW_SIDE. Labels use nearest neighbour, so no new label values appear."""
    shown = display_size(image.shape[1], image.shape[0])
    if shown.scale == 1.0:
        return image, label
    size = (shown.width, shown.height)
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    if label is not None:
        label = np.asarray(Image.fromarray(label).resize(size, Image.Resampling.NEAREST))
    return resized, label


def _read_mask(path: Path | None, image: np.ndarray) -> tuple[np.ndarray | None, str]:
    if path is None:
        return None, ""
    try:
        label = load_label(path)
    except DatasetError as exc:
        return None, f"the GT mask cannot be shown: {exc}"
    if label.shape != image.shape[:2]:
        return None, (f"the GT mask {path.name} is {label.shape[1]}×{label.shape[0]} but the image is "
                      f"{image.shape[1]}×{image.shape[0]} (after EXIF orientation); re-export the mask "
                      f"at the image's size and orientation")
    return label, ""


def has_image(ws: Workspace, user: str, name: str) -> bool:
    """Whether ``user`` (a valid, present user) has an image called ``name``."""
    return any(record.name == name for record in read_user(ws, user).records)


def image_view(ws: Workspace, user: str, name: str, opacity: float = 0.6) -> ImageView:
    """Open image ``name`` of ``user``: photo + GT overlay PNG + tags + legend.

    ``name`` is looked up among the user's records (never joined into a path). Raises DatasetError for an
    unknown user/image or an undecodable photo; a bad mask only produces ``ImageView.message``.
    """
    records = {record.name: record for record in read_user(ws, user).records}
    if name not in records:
        raise DatasetError(f"user {user!r} has no image named {name!r}")
    record = records[name]
    opacity = float(np.clip(opacity if opacity is not None else 0.6, 0.0, 1.0))
    mask_key = file_key(record.mask_path) if record.mask_path is not None else "none"
    key = file_key(record.image_path, mask_key, f"{opacity:.2f}", MAX_VIEW_SIDE, _VIEW_VERSION)
    out = ws.cache / "views" / key[:2] / f"{key}.png"
    image = load_image(record.image_path)
    label, message = _read_mask(record.mask_path, image)
    height, width = image.shape[:2]
    image, label = fit_for_display(image, label)
    if not out.exists():
        shown = overlay(image, label, opacity) if label is not None else image
        with atomic_path(out) as tmp:  # concurrent requests of one view each write their own temporary file
            Image.fromarray(shown).save(tmp, format="PNG")
    tags = [CLASS_NAMES[t] for t in record.tags if 0 < t < len(CLASS_NAMES)]
    return ImageView(user=user, name=name, path=out, labelled=record.labelled, width=width,
                     height=height, tags=tags, legend=legend(label) if label is not None else [],
                     message=message)
