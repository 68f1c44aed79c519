"""Drawing the maps the Inspect and Compare views show: label overlays, heat maps with a colour bar,
pseudo labels with their ignored pixels, error maps against the ground truth, and Fig. 4-style grids.

Everything here is numpy + Pillow + OpenCV (no torch), works on (H, W, 3) uint8 RGB arrays, and is
written to disk as PNG by ``save_png`` (label colours must survive: Gradio's default webp would blur them).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pss.data.labels import IGNORE_INDEX, VOC_PALETTE, colorize
from pss.fileio import atomic_path

MAX_VIEW_SIDE = 1024  # the browser never needs more than this
MIN_VIEW_SIDE = 480  # small images (the demo's 192 px) are enlarged by an integer factor to at least this

# Error-map categories (pred vs GT). "Correct" covers background and object pixels alike.
IGNORED, CORRECT, WRONG_CLASS, MISSED, FALSE_POSITIVE = 0, 1, 2, 3, 4
ERROR_NAMES = {IGNORED: "ignore (255)", CORRECT: "correct", WRONG_CLASS: "wrong class",
               MISSED: "missed (GT object, predicted background)",
               FALSE_POSITIVE: "false positive (GT background, predicted object)"}
ERROR_SHORT = {IGNORED: "ignore", CORRECT: "correct", WRONG_CLASS: "wrong class", MISSED: "missed",
               FALSE_POSITIVE: "false positive"}  # table column names (the legend gives ERROR_NAMES)
ERROR_COLOURS = {IGNORED: (128, 128, 128), CORRECT: (40, 170, 70), WRONG_CLASS: (255, 160, 0),
                 MISSED: (40, 110, 255), FALSE_POSITIVE: (230, 30, 40)}
HATCH = ((255, 0, 255), (40, 40, 40))  # ignored pseudo-label pixels: magenta/dark stripes, unlike any class colour

# Drawing threads: PNG encoding (zlib) and OpenCV/numpy array work release the GIL, so the maps of one request
# are drawn side by side (the model's forward pass, which uses every core, is over by then).
_DRAWING = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="pss-draw")


def draw_all(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run drawing jobs concurrently and return their results in order (exceptions propagate)."""
    if len(jobs) <= 1:
        return [job() for job in jobs]
    return [future.result() for future in [_DRAWING.submit(job) for job in jobs]]


@dataclass(frozen=True)
class DisplaySize:
    """The size an image is drawn at: ``scale`` = display pixels per image pixel."""

    width: int
    height: int
    scale: float

    @classmethod
    def scaled(cls, width: int, height: int, scale: float) -> "DisplaySize":
        """An image of ``width`` x ``height`` drawn at ``scale`` (sides rounded, at least 1 pixel)."""
        return cls(max(1, round(width * scale)), max(1, round(height * scale)), scale)

    def to_image(self, x: float, y: float, image_width: int, image_height: int) -> tuple[int, int]:
        """Image pixel (x, y) under display pixel (x, y), clamped into the image."""
        return (min(image_width - 1, max(0, int(x / self.scale))), min(image_height - 1, max(0, int(y / self.scale))))


def display_size(width: int, height: int) -> DisplaySize:
    """Long side at most MAX_VIEW_SIDE; images smaller than MIN_VIEW_SIDE enlarged by an integer factor."""
    long_side = max(width, height)
    if long_side > MAX_VIEW_SIDE:
        scale = MAX_VIEW_SIDE / long_side
    elif long_side < MIN_VIEW_SIDE:
        scale = float(math.ceil(MIN_VIEW_SIDE / long_side))
    else:
        scale = 1.0
    return DisplaySize.scaled(width, height, scale)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) or (H, W) float/uint8 array to ``size`` = (width, height)."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (no new label values appear)."""
    if label.shape[1] == size[0] and label.shape[0] == size[1]:
        return label
    return cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)


def blend(image: np.ndarray, colours: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours`` with a scalar or per-pixel (H, W) alpha, as uint8."""
    a = np.asarray(alpha, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    out = (1.0 - a) * image.astype(np.float32) + a * colours.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def label_overlay(image: np.ndarray, label: np.ndarray, opacity: float) -> np.ndarray:
    """VOC colours of ``label`` over ``image`` at ``opacity``; background (0) pixels stay the photo."""
    alpha = float(np.clip(opacity, 0.0, 1.0))
    out = image.copy()
    drawn = label != 0  # blend only where there is an object: most pixels are background
    out[drawn] = blend(image[drawn], colorize(label[drawn]), alpha)
    return out


def heat_colours(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """(H, W) values -> (H, W, 3) RGB with the perceptually uniform *inferno* colour map (dark = low)."""
    span = max(vmax - vmin, 1e-12)
    scaled = np.clip((np.asarray(values, dtype=np.float32) - vmin) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap(np.rint(scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return bgr[..., ::-1].copy()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


COLOUR_BAR_WIDTH = 96


def colour_bar(height: int, vmin: float, vmax: float, title: str, width: int = COLOUR_BAR_WIDTH) -> np.ndarray:
    """A vertical inferno colour bar (high at the top) with 5 tick labels and a title above it."""
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    top, bottom, bar_w = 22, 8, 16
    ramp = np.linspace(1.0, 0.0, max(2, height - top - bottom), dtype=np.float32)[:, None].repeat(bar_w, 1)
    canvas.paste(Image.fromarray(heat_colours(ramp)), (6, top))
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    span = max(vmax - vmin, 1e-12)
    digits = min(6, max(2, math.ceil(-math.log10(span)) + 2))  # a stretched, narrow range still reads apart
    for i in range(5):
        fraction = i / 4
        y = top + round((1 - fraction) * (height - top - bottom - 1))
        draw.line([(6 + bar_w, y), (10 + bar_w, y)], fill=(0, 0, 0))
        draw.text((13 + bar_w, y - 7), f"{vmin + fraction * span:.{digits}f}", fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def with_colour_bar(image: np.ndarray, vmin: float, vmax: float, title: str) -> np.ndarray:
    """``image`` with a colour bar of its value range appended on the right."""
    return np.concatenate([image, colour_bar(image.shape[0], vmin, vmax, title)], axis=1)


def hatch_colours(rows: np.ndarray, cols: np.ndarray, period: int = 8) -> np.ndarray:
    """(N, 3) colours of pixels (rows, cols) in a pattern of diagonal stripes of the two HATCH colours."""
    stripes = ((rows + cols) // (period // 2)) % 2 == 0
    return np.where(stripes[:, None], np.array(HATCH[0], np.uint8), np.array(HATCH[1], np.uint8))


def pseudo_label_colours(pseudo: np.ndarray) -> np.ndarray:
    """VOC colours of a pseudo label with its ignored (255) pixels hatched (so they read as "no label")."""
    colours = colorize(pseudo)
    rows, cols = np.nonzero(pseudo == IGNORE_INDEX)
    colours[rows, cols] = hatch_colours(rows, cols)
    return colours


def error_categories(pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Per-pixel error category of a prediction against the ground truth.

    IGNORED where the target is ``ignore_index``; CORRECT where pred == target; MISSED where the target is
    an object and pred is background; FALSE_POSITIVE where the target is background and pred an object;
    WRONG_CLASS where both are (different) objects.

    Shape:
        pred, target: (H, W) integer class maps -> (H, W) uint8 categories.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {target.shape} differ in size")
    out = np.full(pred.shape, WRONG_CLASS, dtype=np.uint8)
    out[pred == target] = CORRECT
    out[(target == 0) & (pred != 0)] = FALSE_POSITIVE
    out[(target != 0) & (pred == 0)] = MISSED
    out[target == ignore_index] = IGNORED
    return out


def error_colours(categories: np.ndarray, target: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """Colour an error-category map; correct *background* pixels show the photo darkened (or black), so the
    errors and the correctly found objects stand out."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for category, colour in ERROR_COLOURS.items():
        lut[category] = colour
    out = lut[categories]
    background = (categories == CORRECT) & (np.asarray(target) == 0)
    if image is not None:
        grey = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.35
        out[background] = np.repeat(grey, 3, axis=2).astype(np.uint8)[background]
    else:
        out[background] = 0
    return out


def mark_pixel(image: np.ndarray, x: float, y: float,
               box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """A crosshair at display pixel (x, y) and, optionally, the outline of ``box`` = (x0, y0, x1, y1)."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    if box is not None:
        draw.rectangle(box, outline=(255, 255, 255), width=2)
    for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
        draw.line([(x - 12, y), (x - 4, y)], fill=colour, width=width)
        draw.line([(x + 4, y), (x + 12, y)], fill=colour, width=width)
        draw.line([(x, y - 12), (x, y - 4)], fill=colour, width=width)
        draw.line([(x, y + 4), (x, y + 12)], fill=colour, width=width)
    return np.asarray(canvas)


def titled(image: np.ndarray, lines: Sequence[str], height: int = 38) -> np.ndarray:
    """``image`` under a white caption band holding up to two lines of text."""
    band = Image.new("RGB", (image.shape[1], height), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    font = _font(14)
    for i, line in enumerate(list(lines)[:2]):
        draw.text((4, 2 + 17 * i), line, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(band), image], axis=0)


def grid(rows: Sequence[Sequence[np.ndarray | None]], gap: int = 6) -> np.ndarray:
    """Panels of equal size in rows (None = empty cell), separated by white gaps: a Fig. 4-style figure."""
    cells = [cell for row in rows for cell in row if cell is not None]
    if not cells:
        raise ValueError("grid needs at least one panel")
    cell_h = max(c.shape[0] for c in cells)
    cell_w = max(c.shape[1] for c in cells)
    columns = max(len(row) for row in rows)
    out = np.full((len(rows) * (cell_h + gap) - gap, columns * (cell_w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell is not None:
                y, x = r * (cell_h + gap), c * (cell_w + gap)
                out[y:y + cell.shape[0], x:x + cell.shape[1]] = cell
    return out


def save_png(image: np.ndarray, path: Path, compress_level: int = 1) -> Path:
    """Write ``image`` as PNG atomically (``pss.fileio``), so a concurrent reader never sees half a file.

    Level 1 compression: the maps are regenerated from cached inference anyway; encoding speed matters more.
    """
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=compress_level)
    return path


def palette_hex(index: int) -> str:
    r, g, b = (int(v) for v in VOC_PALETTE[index])
    return f"#{r:02x}{g:02x}{b:02x}"
