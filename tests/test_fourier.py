"""FDA against an independent NumPy oracle (window chosen by frequency value, not by shifted index)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pss.ops import fda_source_to_target, low_freq_half_size, low_freq_mutate


def numpy_fda(src: np.ndarray, trg: np.ndarray, beta: float) -> np.ndarray:
    """Complex result of FDA eq. 1 with the window |k_y| <= b and |k_x| <= b (integer frequencies)."""
    h, w = src.shape[-2:]
    b = min(int(np.floor(min(h, w) * beta)), (min(h, w) - 1) // 2)
    fs, ft = np.fft.fft2(src, axes=(-2, -1)), np.fft.fft2(trg, axes=(-2, -1))
    ky, kx = np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w
    window = (np.abs(ky)[:, None] <= b) & (np.abs(kx)[None, :] <= b)
    amp = np.where(window, np.abs(ft), np.abs(fs))
    return np.fft.ifft2(amp * np.exp(1j * np.angle(fs)), axes=(-2, -1))


def images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape))


def test_half_size():
    assert low_freq_half_size(32, 64, 0.01) == 0
    assert low_freq_half_size(100, 200, 0.05) == 5
    assert low_freq_half_size(10, 12, 0.5) == 4       # capped at (10 - 1) // 2
    with pytest.raises(ValueError, match="beta"):
        low_freq_half_size(10, 10, 0.6)
    with pytest.raises(ValueError, match="beta"):
        low_freq_half_size(10, 10, -0.01)


@pytest.mark.parametrize("shape,beta", [((2, 3, 16, 20), 0.1), ((1, 3, 15, 17), 0.2), ((2, 1, 9, 8), 0.5)])
def test_matches_numpy_oracle_and_is_real(shape, beta):
    src, trg = images(shape, 0), images(shape, 1)
    expected = numpy_fda(src.numpy(), trg.numpy(), beta)
    # the symmetric window keeps the spectrum Hermitian: the inverse FFT is real
    assert np.abs(expected.imag).max() < 1e-10
    out = fda_source_to_target(src, trg, beta)
    assert out.dtype == torch.float64 and not out.is_complex() and out.shape == src.shape
    np.testing.assert_allclose(out.numpy(), expected.real, atol=1e-10)


def test_low_frequency_amplitude_is_the_targets():
    src, trg = images((2, 3, 16, 16), 2), images((2, 3, 16, 16), 3)
    beta, b = 0.15, 2                                  # floor(16 * 0.15) = 2 -> frequencies -2..2
    out = fda_source_to_target(src, trg, beta)
    amp_out, amp_src, amp_trg = (torch.fft.fft2(x).abs() for x in (out, src, trg))
    low = torch.zeros(16, 16, dtype=torch.bool)
    idx = torch.tensor([0, 1, 2, 14, 15])              # frequencies 0, 1, 2, -2, -1
    low[idx[:, None], idx[None, :]] = True
    torch.testing.assert_close(amp_out[..., low], amp_trg[..., low])
    torch.testing.assert_close(amp_out[..., ~low], amp_src[..., ~low])


def test_beta_zero_swaps_only_dc():
    src, trg = images((2, 3, 8, 10), 4), images((2, 3, 8, 10), 5)
    out = fda_source_to_target(src, trg, 0.0)
    # non-negative images: the DC phase is 0, so only the per-channel mean changes to the target's
    expected = src - src.mean(dim=(-2, -1), keepdim=True) + trg.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(out, expected)


def test_identity_when_target_is_source_and_broadcast_target():
    src = images((3, 3, 12, 12), 6)
    torch.testing.assert_close(fda_source_to_target(src, src, 0.1), src)
    one = images((1, 3, 12, 12), 7)
    batched = fda_source_to_target(src, one, 0.1)
    torch.testing.assert_close(batched, fda_source_to_target(src, one.expand(3, -1, -1, -1), 0.1))


def test_float32_and_bfloat16_keep_dtype():
    src, trg = images((1, 3, 8, 8), 8).float(), images((1, 3, 8, 8), 9).float()
    out32 = fda_source_to_target(src, trg, 0.2)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), numpy_fda(src.double().numpy(), trg.double().numpy(), 0.2).real,
                               atol=1e-5)
    assert fda_source_to_target(src.bfloat16(), trg.bfloat16(), 0.2).dtype == torch.bfloat16


def test_low_freq_mutate_on_amplitudes():
    amp_src, amp_trg = torch.zeros(5, 6), torch.ones(5, 6)
    out = low_freq_mutate(amp_src, amp_trg, 0.2)        # b = floor(5 * 0.2) = 1: rows {0,1,4} x cols {0,1,5}
    expected = torch.zeros(5, 6)
    rows, cols = torch.tensor([0, 1, 4]), torch.tensor([0, 1, 5])
    expected[rows[:, None], cols[None, :]] = 1
    torch.testing.assert_close(out, expected)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same size"):
        fda_source_to_target(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), 0.1)
    with pytest.raises(ValueError, match="same size"):
        fda_source_to_target(torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 8, 8), 0.1)
    with pytest.raises(ValueError, match="float"):
        fda_source_to_target(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8), 0.1)
