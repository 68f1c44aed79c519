"""The PASCAL VOC label space: 21 classes (0 background ... 20 tvmonitor), 255 = ignore, the standard palette.

Label maps are stored as palette ("P" mode) PNGs whose pixel values are class indices, exactly like
``VOC2012/SegmentationClass``; ``read_label_png`` also accepts single-channel ``L`` PNGs
(``SegmentationClassAug`` is usually stored that way).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pss.errors import DatasetError

CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
NUM_CLASSES: int = len(CLASS_NAMES)
IGNORE_INDEX: int = 255
_NAME_TO_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}


def _voc_palette() -> np.ndarray:
    """The standard PASCAL VOC bit-interleaved colour map, (256, 3) uint8; index 255 set to white (ignore)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        label, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[index] = (r, g, b)
    palette[IGNORE_INDEX] = (255, 255, 255)
    return palette


VOC_PALETTE: np.ndarray = _voc_palette()
VOC_PALETTE.setflags(write=False)


def class_index(name: str) -> int:
    """Index of a VOC class name (case-insensitive). Raises ``DatasetError`` naming the valid names."""
    key = name.strip().lower()
    if key not in _NAME_TO_INDEX:
        raise DatasetError(f"unknown class name {name!r}; valid names are: {', '.join(CLASS_NAMES)}")
    return _NAME_TO_INDEX[key]


def is_valid_label_value(values: np.ndarray) -> np.ndarray:
    """Boolean mask of label values inside the label space (0..20 or 255)."""
    return (values < NUM_CLASSES) | (values == IGNORE_INDEX)


def label_value_problem(mask: np.ndarray) -> str | None:
    """What is wrong with a mask's values (and what to do), or None when every value is a class or 255.

    One message for the loader (which skips the file) and the doctor (which lists it).
    """
    invalid = ~is_valid_label_value(mask)
    if not invalid.any():
        return None
    values = np.unique(mask[invalid])
    shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
    return (f"{int(invalid.sum())} pixels hold values {shown} outside the label space (0..20 classes, 255 ignore); "
            "remap them to a VOC class or 255")


def colorize(label: np.ndarray) -> np.ndarray:
    """Map a (H, W) label map to a (H, W, 3) uint8 RGB image with the VOC palette."""
    return VOC_PALETTE[np.asarray(label, dtype=np.uint8)]


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write a (H, W) uint8 label map as a VOC palette PNG (pixel value = class index)."""
    array = np.asarray(label)
    if array.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {array.shape}")
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette(VOC_PALETTE.reshape(-1).tolist())
    image.save(path, format="PNG", optimize=False)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG ("P" palette or "L" single channel) into a (H, W) uint8 array of class indices.

    RGB label images are rejected with advice, because their pixel values are colours, not indices.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "L"):
                return np.array(image, dtype=np.uint8)
            mode = image.mode
    except (OSError, SyntaxError) as exc:  # PIL raises OSError for truncated/corrupt files
        raise DatasetError(f"{path}: cannot read label PNG ({exc}); re-export the mask as a palette PNG") from exc
    raise DatasetError(
        f"{path}: label PNG has mode {mode!r}; expected a palette ('P') or single-channel ('L') PNG whose pixel "
        "values are class indices 0..20 (255 = ignore). Convert colour masks with the VOC palette first."
    )
