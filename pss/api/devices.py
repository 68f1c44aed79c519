"""Devices for jobs: which GPUs this machine has (probed once, in a subprocess) and where a new job goes.

The app process never initialises CUDA: torch is asked in a subprocess. ``pick_device`` only places a job on one of
the visible devices (``auto``: the least loaded GPU, else ``cpu``); the job's own process turns that name into a
``torch.device`` with ``pss.engine.device.resolve_device``, the one resolver.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from pss.errors import ConfigError
from pss.runs import JobQueue
from pss.status import ACTIVE

AUTO_DEVICE = "auto"


def _may_have_gpu() -> bool:
    """Cheap pre-check (device files), so CPU-only machines never pay for asking torch."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()


@functools.lru_cache(maxsize=1)
def visible_gpus() -> tuple[str, ...]:
    """``("cuda:0", ...)`` as torch sees them, asked in a subprocess (once per process; empty without GPUs)."""
    if not _may_have_gpu():
        return ()
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        count = int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return ()
    return tuple(f"cuda:{i}" for i in range(count))


def device_choices() -> list[str]:
    """What the form offers: ``auto``, ``cpu``, then each visible GPU."""
    return [AUTO_DEVICE, "cpu", *visible_gpus()]


def pick_device(spec: str, queue: JobQueue) -> str:
    """A concrete device for ``spec``: ``auto`` = the GPU with the fewest queued/running jobs, else ``cpu``."""
    if spec is not None and not isinstance(spec, str):
        raise ConfigError(f"device must be a name such as {', '.join(device_choices())}; got {spec!r}")
    spec = (spec or AUTO_DEVICE).strip().lower()
    gpus = list(visible_gpus())
    if spec == AUTO_DEVICE:
        if not gpus:
            return "cpu"
        load = {gpu: 0 for gpu in gpus}
        for job in queue.list_jobs():
            if job.status in ACTIVE and job.device in load:
                load[job.device] += 1
        return min(gpus, key=lambda gpu: (load[gpu], gpus.index(gpu)))
    if spec == "cuda":
        spec = "cuda:0"
    if spec == "cpu" or spec in gpus:
        return spec
    raise ConfigError(f"device {spec!r} is not available here; choose one of {', '.join(device_choices())}")


__all__ = ["AUTO_DEVICE", "device_choices", "pick_device", "visible_gpus"]
