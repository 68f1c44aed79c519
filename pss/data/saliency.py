"""Saliency maps (EPS's pseudo-pixel supervision, methods.md §9): the ``SALImages/<name>.png`` layout, a strict
reader, the checks ``pss doctor`` can list, and the coding that carries a map through a training crop
(``SegDataset`` provides the ``saliency`` batch field with it).

Layout (EPS, ``halbielee/EPS`` data lists): one 8-bit grey PNG per image, named like the image, in a ``SALImages/``
folder next to ``JPEGImages/`` (``VOC2012/SALImages/``, ``personal/id3/SALImages/``), 0 = background ... 255 =
salient, at the image's size *as displayed* (after its EXIF orientation). EPS reads the PNG as RGB / 255 and takes
the channel mean; an RGB map is accepted the same way. Maps written by :func:`write_saliency_png` (our own
class-agnostic model, ``pss.weak.pipeline``) follow the same layout.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pss.data.image_io import image_size
from pss.data.problems import Problem
from pss.data.records import ImageRecord
from pss.errors import DatasetError

SALIENCY_FOLDER = "SALImages"
SALIENCY_FIELD = "saliency"
PAD_VALUE = -1.0  # saliency of the padded pixels of a training crop: the EPS loss leaves them out
_ACCEPTED_MODES = ("L", "RGB", "RGBA", "LA")


class SaliencyError(DatasetError):
    """A bad saliency map; ``kind`` is its ``Problem`` kind (``pss.data.problems.KINDS``)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def saliency_path(record: ImageRecord, folder: Path | None = None) -> Path:
    """``<folder>/<name>.png``; default folder: ``SALImages/`` beside the image's ``JPEGImages/`` (EPS layout)."""
    base = Path(folder) if folder is not None else Path(record.image_path).parent.parent / SALIENCY_FOLDER
    return base / f"{record.name}.png"


def _decode(path: Path) -> np.ndarray:
    """(H, W) uint8 grey levels of a saliency PNG; ``SaliencyError`` when it is not one."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("L", "LA"):
                return np.array(image.convert("L"), dtype=np.uint8)
            if mode in ("RGB", "RGBA"):  # EPS: RGB / 255, then the channel mean
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
                return np.rint(rgb.mean(axis=2)).astype(np.uint8)
    except FileNotFoundError as exc:
        raise SaliencyError(f"{path}: no saliency map; add it (8-bit grey PNG, the image's size) or predict the "
                           "maps with our saliency model", "missing_saliency") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise SaliencyError(f"{path}: cannot read the saliency map ({exc}); re-export it as an 8-bit grey PNG",
                           "corrupt_saliency") from exc
    if mode == "P":
        why = "a palette PNG (a label mask in the wrong folder?)"
    elif mode.startswith("I") or mode == "F":
        why = f"a {mode} image (16-bit or float)"
    else:
        why = f"mode {mode!r}"
    modes = "/".join(_ACCEPTED_MODES)
    raise SaliencyError(f"{path}: saliency map is {why}; expected 8-bit grey levels 0-255 ({modes})",
                        "bad_saliency_values")


def read_saliency(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a saliency map as float32 in [0, 1] (grey / 255) and check its size against the image's displayed size.

    Raises ``SaliencyError`` (a ``DatasetError``) naming the file and what to do; its ``kind`` is the ``Problem`` kind
    (``missing_saliency``, ``corrupt_saliency``, ``bad_saliency_values``, ``saliency_size_mismatch``,
    ``saliency_orientation_mismatch``).

    Shape:
        returns (H, W) float32, (H, W) == expected_hw when given.
    """
    path = Path(path)
    grey = _decode(path)
    if expected_hw is not None and grey.shape != tuple(expected_hw):
        height, width = expected_hw
        if grey.shape == (width, height):
            raise SaliencyError(f"{path}: saliency map is {grey.shape[1]}x{grey.shape[0]} (WxH) but its image is "
                               f"{width}x{height} as displayed (after EXIF orientation); rotate the map to match",
                               "saliency_orientation_mismatch")
        raise SaliencyError(f"{path}: saliency map is {grey.shape[1]}x{grey.shape[0]} (WxH) but its image is "
                           f"{width}x{height}; re-export it at the image's size", "saliency_size_mismatch")
    if 0 < int(grey.max()) <= 1:
        raise SaliencyError(f"{path}: saliency values are only 0 and 1 (a binary map saved without scaling); save "
                           "it as 0-255 grey levels (multiply by 255)", "bad_saliency_values")
    return grey.astype(np.float32) / 255.0


def check_saliency(records: Sequence[ImageRecord], folder: Path | None = None) -> list[Problem]:
    """Every problem with the saliency maps of ``records`` (missing, unreadable, wrong size or orientation, values
    that are not 0-255 grey levels): one ``Problem`` per bad map, in the form ``pss.data.validate`` reports.
    An image whose own header cannot be read is left to the image checks."""
    problems: list[Problem] = []
    for record in records:
        path = saliency_path(record, folder)
        try:
            width, height = image_size(record.image_path)
        except DatasetError:
            continue
        try:
            read_saliency(path, (height, width))
        except SaliencyError as exc:
            kind, message = exc.kind, str(exc)
            prefix = f"{path}: "
            problems.append(Problem(path, kind, message[len(prefix):] if message.startswith(prefix) else message))
    return problems


def write_saliency_png(path: str | Path, saliency: np.ndarray) -> None:
    """Write a (H, W) saliency map in [0, 1] as the 8-bit grey PNG of the EPS layout. Grey level 1 is written as 0:
    a map whose maximum is grey 1 would read back as a binary 0/1 map saved without scaling, which
    :func:`read_saliency` refuses (and the dataset would skip the image: exactly the images where our saliency or
    object model sees almost nothing, common after a short training stage)."""
    array = np.asarray(saliency, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"saliency map must be 2-D (H, W), got shape {array.shape}")
    grey = np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    grey[grey == 1] = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey, mode="L").save(path, format="PNG")


def encode_for_transform(saliency: np.ndarray) -> torch.Tensor:
    """A [0, 1] map as uint8 levels 0..254, so that it can ride through a label transform whose pad value is 255.

    Shape: (H, W) float -> (H, W) uint8."""
    return torch.from_numpy(np.rint(np.clip(saliency, 0.0, 1.0) * 254).astype(np.uint8))


def decode_after_transform(code: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_for_transform` after the transform: [0, 1], :data:`PAD_VALUE` on padded pixels.

    Shape: (h, w) integer -> (h, w) float32."""
    return torch.where(code == 255, torch.tensor(PAD_VALUE), code.float() / 254.0)
