"""Fourier Domain Adaptation (FDA, Yang & Soatto CVPR20): give a source image the target's low-frequency amplitude.

``x_{s->t} = F^-1([ M_b * A(x_t) + (1 - M_b) * A(x_s), P(x_s) ])`` (FDA eq. 1), where ``A``/``P`` are the amplitude
and phase of the 2-D FFT and ``M_b`` selects the low frequencies.

Window definition (ours, explicit): ``b = floor(min(H, W) * beta)`` and ``M_b`` keeps the integer frequencies
``-b..b`` (inclusive) on both axes, i.e. a ``(2b+1) x (2b+1)`` square centred on DC after ``fftshift``. This is the
symmetric window of the official NumPy version and of the fix proposed in FDA issue #40; the official torch version
copies four ``b x b`` corner blocks (frequencies ``-b..b-1``), which is not symmetric under ``k -> -k`` and so
leaves a non-zero imaginary part. Because our window and both amplitude spectra are symmetric and the source phase
is antisymmetric, the mutated spectrum stays Hermitian and the inverse FFT is real (up to rounding).

Consequences of the definition:

* ``beta = 0`` gives ``b = 0``: only the DC term is swapped, so each channel's mean becomes the target's mean
  (for non-negative images; the contrast around the mean is the source's). It is *not* the identity.
* ``b`` is capped at ``(min(H, W) - 1) // 2`` so the window never wraps onto the Nyquist row/column (which would
  break the symmetry); ``beta`` itself must lie in ``[0, 0.5]``.

Apply FDA to raw images (e.g. in [0, 1]) and normalise afterwards, as the FDA README advises.
"""
from __future__ import annotations

import math

import torch


def low_freq_half_size(height: int, width: int, beta: float) -> int:
    """Half-size ``b`` of the low-frequency window: ``floor(min(H, W) * beta)`` capped at ``(min(H, W) - 1) // 2``."""
    if not (math.isfinite(beta) and 0.0 <= beta <= 0.5):
        raise ValueError(f"FDA beta must be in [0, 0.5] (the paper uses 0.01-0.09), got {beta!r}")
    side = min(height, width)
    return min(math.floor(side * beta), (side - 1) // 2)


def low_freq_mutate(amp_src: torch.Tensor, amp_trg: torch.Tensor, beta: float) -> torch.Tensor:
    """Replace the centred low-frequency window of the source amplitude spectrum with the target's.

    Both spectra are un-shifted (``torch.fft.fft2`` order); the window is frequencies ``-b..b`` on both axes
    (module docstring). ``amp_trg`` broadcasts against ``amp_src`` (e.g. one target for a batch of sources).

    Shape:
        amp_src: (..., H, W); amp_trg: broadcastable to amp_src -> (..., H, W).
    """
    height, width = amp_src.shape[-2:]
    b = low_freq_half_size(height, width, beta)
    dims = (-2, -1)
    shifted_src = torch.fft.fftshift(amp_src, dim=dims)
    shifted_trg = torch.fft.fftshift(amp_trg, dim=dims)
    ch, cw = height // 2, width // 2  # index of frequency 0 after fftshift, for even and odd sizes
    rows, cols = slice(ch - b, ch + b + 1), slice(cw - b, cw + b + 1)
    mutated = shifted_src.clone()
    mutated[..., rows, cols] = shifted_trg[..., rows, cols]
    return torch.fft.ifftshift(mutated, dim=dims)


def fda_source_to_target(src: torch.Tensor, trg: torch.Tensor, beta: float) -> torch.Tensor:
    """FDA eq. 1: source images with the target images' low-frequency amplitude, source phase kept.

    Computed in float32 (or float64 if given) and returned in ``src``'s dtype; the result is the real part of the
    inverse FFT (the imaginary part is rounding noise, see the module docstring). Not clamped to the input range.

    Shape:
        src: (N, C, H, W) float; trg: (N, C, H, W) or (1, C, H, W) float, same C, H, W -> (N, C, H, W).
    """
    if src.dim() != 4 or trg.dim() != 4 or src.shape[1:] != trg.shape[1:] or trg.shape[0] not in (1, src.shape[0]):
        raise ValueError(f"FDA needs source (N, C, H, W) and target (N or 1, C, H, W) of the same size; got "
                         f"{tuple(src.shape)} and {tuple(trg.shape)} (crop or resize the target first)")
    if not (src.is_floating_point() and trg.is_floating_point()):
        raise ValueError(f"FDA needs float images, got {src.dtype} and {trg.dtype}")
    work = torch.float64 if src.dtype == torch.float64 else torch.float32
    fft_src = torch.fft.fft2(src.to(work), dim=(-2, -1))
    fft_trg = torch.fft.fft2(trg.to(device=src.device, dtype=work), dim=(-2, -1))
    amp = low_freq_mutate(fft_src.abs(), fft_trg.abs(), beta)
    mixed = torch.polar(amp, fft_src.angle())
    return torch.fft.ifft2(mixed, dim=(-2, -1)).real.to(src.dtype)
