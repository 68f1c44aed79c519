"""Strict image and mask decoding: EXIF orientation applied, corrupt or truncated files rejected.

This is the data loaders' hot path. JPEG/PNG/WebP/GIF are decoded with ``torchvision.io.decode_image``
(libjpeg-turbo / libpng, straight into a (3, H, W) uint8 tensor, EXIF orientation applied, truncated
data rejected); anything it cannot read (BMP, TIFF, unusual JPEG variants) falls back to Pillow with
``ImageFile.LOAD_TRUNCATED_IMAGES`` forced off and a full ``load()``, so a file is accepted only if one
strict decoder decoded all of it. Pillow's ``draft()`` (DCT-domain downscaling) is deliberately not used:
it is not equal to a full decode followed by a resize, and training/eval must see identical pixels.
"""
from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pss.data.labels import label_value_problem, read_label_png
from pss.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_EXIF_ORIENTATION = 0x0112
# Orientations 5..8 rotate by 90 degrees: the displayed image is the stored one with W and H swapped.
_SWAPS_AXES = {5, 6, 7, 8}
# Errors Pillow raises for unreadable, corrupt or truncated files (DecompressionBombError is a plain Exception).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, UnidentifiedImageError,
               Image.DecompressionBombError)


def _find_torchvision_decoder() -> Callable[..., torch.Tensor] | None:
    """torchvision's native ``decode_image`` op, or None (then Pillow decodes everything).

    The public ``torchvision.io.decode_image`` wrapper emits a DeprecationWarning on every call since 0.29 (the
    codecs move to TorchCodec); the op underneath is the same code without the per-call warning. pyproject pins
    torchvision <= 0.29.1, and if a later version drops the op we fall back to Pillow instead of failing.
    """
    try:
        import torchvision.io  # noqa: F401  (registers torch.ops.image)

        return torch.ops.image.decode_image
    except (ImportError, AttributeError, RuntimeError):
        return None


_TV_DECODE = _find_torchvision_decoder()
_TV_MODE_RGB = 3  # torchvision.io.ImageReadMode.RGB.value


def ensure_strict_pillow() -> None:
    """Undo ``LOAD_TRUNCATED_IMAGES = True`` set by another library: it makes Pillow pad truncated files with grey."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True (set by another module); pss turns it off "
                       "so that truncated images are reported instead of silently padded with grey")
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _read_bytes(path: Path) -> bytearray:
    try:
        return bytearray(path.read_bytes())
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: image file not found; restore it or remove it from the list/folder") from exc
    except OSError as exc:  # permission denied, is a directory, I/O error
        raise DatasetError(f"{path}: cannot read image file ({exc}); check the path and its permissions") from exc


def _decode_with_pillow(path: Path, first_error: str) -> torch.Tensor:
    """Fallback decoder: full strict Pillow decode, EXIF transpose, RGB; returns (3, H, W) uint8."""
    ensure_strict_pillow()
    try:
        with Image.open(path) as image:
            image.load()  # full decode: raises on truncated data now that LOAD_TRUNCATED_IMAGES is off
            oriented = ImageOps.exif_transpose(image) or image
            if oriented.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = (np.asarray(oriented, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                array = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                array = np.array(oriented if oriented.mode == "RGB" else oriented.convert("RGB"))
    except _PIL_ERRORS as exc:
        raise DatasetError(f"{path}: corrupt, truncated or unsupported image ({first_error}; Pillow: {exc}); "
                           "re-export or re-download the file, or remove it from the dataset") from exc
    return torch.from_numpy(array).permute(2, 0, 1)  # same memory layout as torchvision's output


def load_rgb_tensor(path: str | Path) -> torch.Tensor:
    """Decode an image fully into RGB with its EXIF orientation applied.

    Raises ``DatasetError`` (naming the file and what to do) for missing, corrupt or truncated files.

    Shape:
        returns (3, H, W) uint8, H and W as displayed (after EXIF orientation). Its memory is channels-last (a
        permuted view of (H, W, 3) pixels, as the decoders write them): torchvision's resize kernels are fastest on
        it and ``transforms`` convert to contiguous float (3, H, W) in one pass.
    """
    path = Path(path)
    data = _read_bytes(path)
    if _TV_DECODE is None or not data:
        return _decode_with_pillow(path, "empty file" if not data else "torchvision decoder unavailable")
    try:
        image = _TV_DECODE(torch.frombuffer(data, dtype=torch.uint8), _TV_MODE_RGB, True)
    except (RuntimeError, ValueError) as exc:
        # torchvision rejects both broken files and formats it lacks (BMP, TIFF, arithmetic-coded JPEG);
        # Pillow tells the two apart and is just as strict about truncation.
        # The op's message starts with "<function>, <source file>:<line>, "; keep the human part.
        reason = re.sub(r"^.*\.cpp:\d+,\s*", "", str(exc).strip().splitlines()[-1])
        return _decode_with_pillow(path, f"torchvision: {reason}")
    if image.ndim == 4:  # animated GIF/WebP: the first frame is the photo
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG: keep the 8 most significant bits
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image fully into an RGB array with its EXIF orientation applied (alpha dropped, grey expanded).

    Raises ``DatasetError`` (naming the file and what to do) for missing, corrupt or truncated files.

    Shape:
        returns (H, W, 3) uint8, C-contiguous and writable.
    """
    return np.ascontiguousarray(load_rgb_tensor(path).permute(1, 2, 0).numpy())


def _exif_orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _PIL_ERRORS + (KeyError, TypeError, IndexError):
        return 1  # unreadable EXIF: the decoders treat it as "no orientation" too
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) of an image as displayed, i.e. after EXIF orientation, read from the header only (no pixel decode)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = _exif_orientation(image)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: image file not found; restore it or remove it from the list/folder") from exc
    except _PIL_ERRORS as exc:
        raise DatasetError(f"{path}: not a readable image ({exc}); re-export the file or remove it") from exc
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def load_mask(path: str | Path, expected_hw: tuple[int, int]) -> np.ndarray:
    """Read a label PNG and check that it has the image's (displayed) size.

    Raises ``DatasetError`` for unreadable masks, size mismatches and values outside the label space (a value
    such as 37 would index past the 21 classes in the loss: a crash on the CPU, a device-side assert on CUDA);
    a mask whose size is the image's size transposed is reported as an orientation mismatch (typically a phone
    photo with an EXIF rotation whose mask was drawn on the unrotated pixels).

    Shape:
        returns (H, W) uint8 with (H, W) == expected_hw.
    """
    ensure_strict_pillow()
    mask = read_label_png(path)
    height, width = expected_hw
    if mask.shape == (height, width):
        problem = label_value_problem(mask)
        if problem is not None:
            raise DatasetError(f"{path}: {problem}")
        return mask
    if mask.shape == (width, height):
        raise DatasetError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {width}x{height} as displayed "
            "(after EXIF orientation): the mask was probably drawn on the photo before its EXIF rotation. Rotate the "
            "mask to match the displayed image (or re-save the image with the rotation applied and no EXIF tag)")
    raise DatasetError(
        f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {width}x{height}; masks must have "
        "exactly the image's size: re-export the mask at the image's resolution (nearest-neighbour resize)")
