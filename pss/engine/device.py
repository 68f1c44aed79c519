"""Device selection and the fast path (bf16 autocast, channels_last) on CUDA and on CPUs with native bf16."""
from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pss.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> ``cuda:0`` when available else ``cpu``; ``cpu``; ``cuda`` / ``cuda:N`` checked to exist."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available here; use --device cpu or auto")
        device = torch.device(spec if ":" in spec else "cuda:0")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): only then is bf16 autocast faster than fp32 on
    CPU (elsewhere oneDNN emulates bf16 and it is slower). torch's own probes first, /proc/cpuinfo as a fallback."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(callable(probe) for probe in probes):
        return any(bool(probe()) for probe in probes if callable(probe))
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class FastPath:
    """What the loop does to go fast on this device (decided once from the train config)."""

    autocast_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


@functools.cache
def _log_cpu_fallback(amp: str) -> None:
    """Say once per process why CPU training is not in bf16 (or why asking for it is slow here)."""
    if amp == "auto":
        log.info("this CPU has no native bf16 (AVX512-BF16 or AMX): training and evaluation run in fp32")
    else:
        log.warning("train.amp=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): oneDNN emulates bf16 and "
                    "is usually slower than fp32 here; train.amp=auto picks fp32 on such CPUs")


def fast_path(device: torch.device, amp: str, channels_last: str) -> FastPath:
    """``auto``: bf16 autocast + channels_last on CUDA and on CPUs with native bf16; channels_last alone on other CPUs.

    Measured on the demo step (``bench/train_step.py``, README "Performance"): on a 2-core AVX512-BF16 CPU bf16
    autocast + channels_last beats fp32 NCHW for source-only and adversarial methods alike, and channels_last alone
    beats NCHW in fp32. Depthwise convolutions stay fp32 under CPU autocast (``pss.ops.depthwise``).
    """
    on_cuda = device.type == "cuda"
    bf16_native = on_cuda or cpu_has_native_bf16()
    if not on_cuda and amp != "off" and not bf16_native:
        _log_cpu_fallback(amp)
    dtype = torch.bfloat16 if amp == "bf16" or (amp == "auto" and bf16_native) else None
    cl = channels_last == "on" or channels_last == "auto"
    return FastPath(dtype, cl)
