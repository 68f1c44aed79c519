"""Training and evaluation transforms, parametrised by the crop size (official PSS: 320).

Images arrive as (3, H, W) uint8 tensors straight from the decoder and leave as float32 in [0, 1], *not*
normalised (the segmenter normalises with its backbone's mean/std, so FDA can work on raw images).
Images are resized bicubic with antialiasing (torchvision's uint8 kernel matches Pillow's ``BICUBIC``, which the
official code uses, to within rounding), labels nearest-neighbour with pixel-centre sampling (= Pillow's
``NEAREST``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from pss.data.labels import IGNORE_INDEX

# The official code pads images with the ImageNet mean (mean * 255 before normalisation), i.e. a padded
# pixel becomes 0 after normalisation. In [0, 1] units that is the mean itself.
MEAN_FILL: tuple[float, float, float] = (0.485, 0.456, 0.406)
EvalMode = Literal["crop", "resize", "none"]


def resize_pair(image: torch.Tensor, label: torch.Tensor, height: int, width: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image (bicubic, antialiased) and its label map (nearest, pixel centres) to (height, width).

    Shape:
        image (3, H, W) uint8, label (H, W) uint8 -> (3, height, width) uint8, (height, width) uint8.
    """
    if tuple(image.shape[1:]) == (height, width):
        return image, label
    image = F.resize(image, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
    # cv2's INTER_NEAREST_EXACT samples pixel centres like Pillow's NEAREST; it is faster than torch here.
    resized = cv2.resize(label.numpy(), (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, torch.from_numpy(resized)


def scaled_size(height: int, width: int, side: int, long_side: bool) -> tuple[int, int]:
    """(H, W) after scaling so that the long (or short) side equals ``side``, keeping the aspect ratio."""
    if (height > width) == long_side:
        return side, max(1, int(side * width / height + 0.5))
    return max(1, int(side * height / width + 0.5)), side


def hwc_view(image: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8 array of a (3, H, W) uint8 tensor; no copy for decoded (channels-last) tensors."""
    array = image.permute(1, 2, 0).numpy()
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _write_float(pixels: np.ndarray, out: np.ndarray, flip: bool = False) -> None:
    """Write (h, w, 3) uint8 pixels into ``out`` (3, h, w) float32 as value / 255, mirrored if ``flip``.

    cv2.split de-interleaves the channels with SIMD; this is ~2x faster than a strided torch/numpy copy-and-cast.
    """
    pixels = np.ascontiguousarray(pixels)
    if flip:
        pixels = cv2.flip(pixels, 1)
    for channel, plane in enumerate(cv2.split(pixels)):
        np.divide(plane, np.float32(255.0), out=out[channel], dtype=np.float32)


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) (any memory layout) -> contiguous float32 (3, H, W) in [0, 1]."""
    out = np.empty(tuple(image.shape), dtype=np.float32)
    _write_float(hwc_view(image), out)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class TrainTransform:
    """Random scale, pad, crop and flip (methods.md §1.4, official ``_augmentation`` with ``base_size = crop``).

    The long side becomes ``randint(scale[0] * crop, scale[1] * crop)`` (both ends included; official 160..640 for
    crop 320), aspect kept; the image is padded bottom/right to at least ``crop`` (image with the mean colour, label
    with 255), a random ``crop`` x ``crop`` window is cut, and the pair is flipped horizontally with probability 0.5.
    """

    crop: int
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    fill: tuple[float, float, float] = MEAN_FILL

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape: image (3, H, W) uint8, label (H, W) uint8 -> (3, crop, crop) float32, (crop, crop) int64."""
        crop = self.crop
        long_side = int(rng.integers(int(self.scale[0] * crop), int(self.scale[1] * crop), endpoint=True))
        height, width = scaled_size(image.shape[1], image.shape[2], long_side, long_side=True)
        image, label = resize_pair(image, label, height, width)
        top = int(rng.integers(0, max(height, crop) - crop, endpoint=True))
        left = int(rng.integers(0, max(width, crop) - crop, endpoint=True))
        flip = self.flip and rng.random() < 0.5
        rows, cols = min(crop, height - top), min(crop, width - left)
        # Pad + crop + flip in one pass: a crop-sized canvas holds the covered window; the rest is padding, which
        # ends up on the left when flipped (the official order is pad, crop, flip).
        out_image = np.empty((3, crop, crop), dtype=np.float32)
        out_label = np.empty((crop, crop), dtype=np.int64)
        if rows < crop or cols < crop:
            out_image[:] = np.asarray(self.fill, dtype=np.float32)[:, None, None]
            out_label[:] = IGNORE_INDEX
        first = crop - cols if flip else 0
        window = label.numpy()[top:top + rows, left:left + cols]
        out_label[:rows, first:first + cols] = window[:, ::-1] if flip else window
        _write_float(hwc_view(image)[top:top + rows, left:left + cols], out_image[:, :rows, first:first + cols], flip)
        return torch.from_numpy(out_image), torch.from_numpy(out_label)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic evaluation transform.

    ``mode="crop"``: short side -> ``size``, then the centre ``size`` x ``size`` crop (official ``_val_augmentation``).
    ``mode="resize"``: the whole image with its short side -> ``size`` (official full-map inference uses 480).
    ``mode="none"``: the image as decoded.
    """

    size: int | None = None
    mode: EvalMode = "crop"

    def __post_init__(self) -> None:
        if self.mode not in ("crop", "resize", "none"):
            raise ValueError(f"eval mode must be 'crop', 'resize' or 'none', got {self.mode!r}")
        if self.mode != "none" and (self.size is None or self.size < 1):
            raise ValueError(f"eval mode {self.mode!r} needs a positive size, got {self.size!r}")

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape: image (3, H, W) uint8, label (H, W) uint8 -> (3, h, w) float32, (h, w) int64."""
        if self.mode != "none":
            assert self.size is not None  # checked in __post_init__
            height, width = scaled_size(image.shape[1], image.shape[2], self.size, long_side=False)
            image, label = resize_pair(image, label, height, width)
            if self.mode == "crop":
                top, left = int(round((height - self.size) / 2)), int(round((width - self.size) / 2))
                image = image[:, top:top + self.size, left:left + self.size]
                label = label[top:top + self.size, left:left + self.size]
        return to_float(image), label.to(torch.int64, memory_format=torch.contiguous_format)
