"""Tensor operations shared by methods and data code (no nn.Module state)."""
from __future__ import annotations

from pss.ops.fourier import fda_source_to_target, low_freq_half_size, low_freq_mutate

__all__ = ["fda_source_to_target", "low_freq_half_size", "low_freq_mutate"]
