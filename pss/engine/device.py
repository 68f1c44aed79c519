"""Device selection and the CUDA fast path (bf16 autocast, channels_last), passed down explicitly."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from pss.errors import ConfigError


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


@dataclass(frozen=True)
class FastPath:
    """What the loop does to go fast on this device (decided once from the train config)."""

    autocast_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def fast_path(device: torch.device, amp: str, channels_last: str) -> FastPath:
    """``auto``: bf16 autocast + channels_last on CUDA, plain fp32 NCHW on CPU (CPU bf16 depends on the CPU)."""
    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if amp == "bf16" or (amp == "auto" and on_cuda) else None
    cl = channels_last == "on" or (channels_last == "auto" and on_cuda)
    return FastPath(dtype, cl)
