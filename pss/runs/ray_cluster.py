"""The Ray pieces shared by everything that runs runs on a Ray cluster: importing Ray, connecting to a cluster (or
starting a local Ray), and the resources one run's task asks for.

Two callers: the experiment backend (``pss.experiments.backends.RayBackend``: each cell is a task) and the job
service (``pss.runs.ray_jobs``: each launched job is a task). Both go through these functions, so a run asks a
cluster for the same resources whichever way it was started. Ray itself is an optional extra (``pss[cluster]``);
nothing here imports it at module import.
"""
from __future__ import annotations

import importlib.util
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from pss.errors import ConfigError

log = logging.getLogger(__name__)

RAY_INSTALL = 'pip install -e ".[cluster]" in a checkout, or pip install "pss[cluster]"  (or: pip install "ray>=2.60")'


def ray_installed() -> bool:
    """Whether Ray is installed here, without importing it (the app asks when it builds the Runs form; importing
    Ray takes seconds and registers exit hooks, which an app that never uses Ray should not pay for)."""
    try:
        return importlib.util.find_spec("ray") is not None  # None too when sys.modules["ray"] is None (tests)
    except (ImportError, ValueError):  # a broken or half-imported installation
        return False


def import_ray(needed_for: str, otherwise: str = "") -> Any:
    """The ``ray`` module, or a ConfigError naming what needed it, what to install and (``otherwise``) what to do
    instead."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"{needed_for or 'this'} needs Ray, which is not installed here: {RAY_INSTALL}"
                          + (f"; {otherwise}" if otherwise else "")) from exc
    return ray


def connect(ray: Any, address: str | None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray; returns True when it started the connection (so it should ``ray.shutdown()``).

    ``address``: a running cluster (``HEAD:6379``, ``auto`` on one of its nodes, ``ray://...``); None: start a
    local Ray with ``num_cpus`` CPUs (None: all of this machine's). A process already connected keeps its connection
    (a test's local Ray, an experiment started from the app's process).

    In the main thread Ray starts with Python's default SIGINT handler (so its processes do not inherit an ignored
    SIGINT) and the handler found is put back afterwards (Ctrl-C must stay KeyboardInterrupt in this process: an
    experiment's cancel, ``tests/test_cluster.py``).
    """
    if ray.is_initialized():
        return False
    before = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if before is not None:
        # a local Ray's processes inherit an ignored SIGINT across exec, and Ray cancels a task by SIGINT in its
        # worker: started from a process that ignores it (a shell's `cmd &`, a library), no cell could be cancelled
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)  # as it was, whatever ray.init did to it
    return True


@dataclass(frozen=True)
class TaskSpec:
    """What one run's task asks Ray for and how it then runs: ``resources`` (``ray.remote`` options), the torch
    ``device`` inside the task, and its torch ``threads``."""

    resources: dict[str, float]
    device: str
    threads: int

    def describe(self) -> str:
        """``1 GPU and 1 CPU`` / ``1 CPU``."""
        return " and ".join(f"{v:g} {k[4:-1].upper()}" for k, v in self.resources.items())


def task_spec(ray: Any, device: str, cpus_per_task: int = 1) -> TaskSpec:
    """The resources a run on ``device`` asks of the connected cluster: one GPU (and one CPU) for ``cuda``/
    ``cuda:N``, and for ``auto`` when the cluster has GPUs; ``cpus_per_task`` CPUs otherwise (its torch threads).

    On a GPU worker Ray sets ``CUDA_VISIBLE_DEVICES``, so the task sees only the GPU it was given, as ``cuda``.
    ConfigError when a GPU is asked of a cluster without one.
    """
    gpus = float(ray.cluster_resources().get("GPU", 0))
    spec = device.strip().lower()
    wants_gpu = spec.startswith("cuda") or (spec == "auto" and gpus > 0)
    if wants_gpu and gpus == 0:
        raise ConfigError(f"device {device}: the Ray cluster has no GPU; use device cpu or add GPU nodes")
    if wants_gpu:
        return TaskSpec({"num_gpus": 1, "num_cpus": 1}, "cuda" if spec != "auto" else "auto", 1)
    return TaskSpec({"num_cpus": cpus_per_task}, "cpu" if spec != "auto" else "auto", cpus_per_task)


def describe_cluster(ray: Any) -> str:
    """``2 CPUs, 0 GPUs``: what the connected cluster has."""
    resources = ray.cluster_resources()
    return f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"


__all__ = ["RAY_INSTALL", "TaskSpec", "connect", "describe_cluster", "import_ray", "ray_installed",
           "task_spec"]
