"""Bilinear resizing of logit maps as two small matrix products: the same values as ``F.interpolate``, faster on CPU.

Bilinear interpolation (``align_corners=False``, no antialiasing) is separable and linear: ``up = R_h · x · R_wᵀ`` per
(image, channel), where ``R`` (out x in) holds each output row's two interpolation weights. Built exactly as PyTorch
computes them (source coordinate ``(o + 0.5)·in/out - 0.5`` clamped at 0; neighbours ``floor`` and ``floor + 1``
capped at the last pixel), so the result equals ``F.interpolate(..., mode="bilinear", align_corners=False)`` up to
rounding (tested). The training losses upsample stride-8/16 logits to the crop (8x8 -> 128x128 on the demo): there
oneDNN's upsample and especially its backward are memory-bound single passes, while the matrix form is a pair of
batched GEMMs and its backward two more (``bench/train_step.py``). Always computed in fp32 (the logits are small; the
full-size maps feed softmax / cross-entropy, which want fp32 anyway).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from pss.ops.kernels import fast_kernels


@functools.lru_cache(maxsize=64)
def _weights(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """(size_out, size_in) float32 interpolation matrix of ``align_corners=False`` bilinear resizing."""
    scale = size_in / size_out
    src = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    low = src.floor().long().clamp_max(size_in - 1)
    high = (low + 1).clamp_max(size_in - 1)
    frac = (src - low.double()).to(torch.float32)
    matrix = torch.zeros(size_out, size_in, dtype=torch.float32)
    rows = torch.arange(size_out)
    matrix.index_put_((rows, low), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(device)


def bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as ``R_h · x · R_wᵀ``, in float32.

    Shape: (N, C, h, w) -> (N, C, H, W) float32 (contiguous NCHW).
    """
    height, width = int(size[0]), int(size[1])
    if not fast_kernels():
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False).float()
    rh = _weights(x.shape[-2], height, x.device)
    rw = _weights(x.shape[-1], width, x.device)
    with torch.autocast(x.device.type, enabled=False):
        return torch.matmul(torch.matmul(rh, x.float()), rw.t())
