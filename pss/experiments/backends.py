"""Where an experiment's cells run: in this process, in local worker processes, or as tasks on a Ray cluster.

The runner (``pss.experiments.runner``) decides *what* each cell runs and in which order; a backend only runs one
cell's run (a :class:`CellTask`: find, resume or train it, or evaluate the shared No-DA model on a user) and hands
back a :class:`CellResult`. That is the whole seam:

* :class:`InProcess` (``--jobs 1``): the cell runs right here, as before the seam.
* :class:`LocalProcesses` (``--jobs N``): a pool of N spawned processes, each with ``cpu_count // N`` threads.
* :class:`RayBackend` (``--backend ray [--address ADDR]``): each cell is a Ray task asking for the resources its
  device needs (one GPU for a CUDA run, ``cpus_per_task`` CPUs otherwise), on a running cluster or on a local
  Ray this process starts. Every node must see the workspace at the same path (a shared filesystem): the run
  store is where cells find, resume and write their runs, exactly as with local processes.

A backend's failures (a worker process that died, a Ray node lost) become the cell's failure, never the
experiment's; ``cancel`` (Ctrl-C) drops what is queued and interrupts what runs (execute_run marks such a run
``cancelled``; the next invocation resumes it from its last checkpoint or trains it again).
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pss.config import ExperimentConfig
from pss.errors import ConfigError, PssError
from pss.runs import ray_cluster
from pss.runs.index import RunRecord
from pss.workspace import Workspace

log = logging.getLogger(__name__)

Outcome = tuple[RunRecord, str]
#: errors of one cell's run that the experiment reports and goes on from (cells that start from it are skipped)
CELL_ERRORS: tuple[type[BaseException], ...] = (PssError, FloatingPointError, RuntimeError, ValueError)
BACKENDS = ("local", "ray")
RAY_INSTALL = ray_cluster.RAY_INSTALL


@dataclass(frozen=True)
class CellTask:
    """One cell's run as plain, picklable values. ``kind``: ``train`` (``ensure_run`` of ``config``: reused,
    resumed or trained) or ``evaluate`` (the No-DA model ``source`` evaluated on ``user``, tag ``tag``)."""

    root: Path
    kind: Literal["train", "evaluate"]
    device: str
    config: ExperimentConfig | None = None
    console: bool = False
    source: RunRecord | None = None
    user: str = ""
    tag: str = ""


@dataclass(frozen=True)
class CellResult:
    """What came of a task: its run and action, or the error that stopped it, or that it was cancelled."""

    outcome: Outcome | None = None
    error: str | None = None
    cancelled: bool = False


def run_task(task: CellTask) -> CellResult:
    """Run one cell where this function is called (this process, a pool worker or a Ray worker)."""
    from pss.experiments.reuse import ensure_run, evaluation_run

    if not Path(task.root).is_dir():
        return CellResult(error=f"workspace {task.root} does not exist on {socket.gethostname()}: every node must "
                                "see the workspace (the run store) at the same path, on a shared filesystem")
    ws = Workspace(Path(task.root))
    try:
        if task.kind == "train":
            if task.config is None:
                raise ConfigError("a train cell needs its config")
            return CellResult(ensure_run(ws, task.config, task.device, task.console))
        if task.source is None:
            raise ConfigError("an evaluate cell needs the No-DA run it evaluates")
        return CellResult(evaluation_run(ws, task.source, task.user, task.tag, task.device))
    except CELL_ERRORS as exc:
        log.debug("experiment cell failed", exc_info=True)
        return CellResult(error=f"{type(exc).__name__}: {exc}")


class Backend:
    """Runs cells. ``parallel``: whether the runner may have several cells in flight (one thread per user)."""

    parallel = False

    def submit(self, task: CellTask) -> Future[CellResult]:
        raise NotImplementedError

    def result(self, future: Future[CellResult]) -> CellResult:
        """The task's result; a failure of the backend itself (not of the run) is the cell's failure."""
        try:
            return future.result()
        except CancelledError:
            return CellResult(cancelled=True)

    def cancel(self) -> None:
        """Ctrl-C: drop the queued cells and interrupt the running ones; later submits come back cancelled."""

    def close(self) -> None:
        """Release the backend's processes (after the last cell)."""

    def run(self, task: CellTask) -> CellResult:
        return self.result(self.submit(task))


def _done(result: CellResult) -> Future[CellResult]:
    future: Future[CellResult] = Future()
    future.set_result(result)
    return future


class InProcess(Backend):
    """Each cell runs in this process when submitted (``--jobs 1``); Ctrl-C interrupts it directly."""

    def submit(self, task: CellTask) -> Future[CellResult]:
        return _done(run_task(task))


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class LocalProcesses(Backend):
    """A pool of ``jobs`` spawned worker processes on this machine, each with ``cpu_count // jobs`` threads."""

    parallel = True

    def __init__(self, jobs: int) -> None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        # spawn, not fork: the parent has initialised torch's thread pools, which a forked child cannot reuse
        self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=(threads,))
        self.cancelled = False

    def submit(self, task: CellTask) -> Future[CellResult]:
        if self.cancelled:
            return _done(CellResult(cancelled=True))
        try:
            return self.pool.submit(run_task, task)
        except (BrokenProcessPool, RuntimeError) as exc:  # a worker died and broke the pool, or it is shut down
            return _done(CellResult(error=f"the worker pool is gone: {exc}"))

    def result(self, future: Future[CellResult]) -> CellResult:
        try:
            return super().result(future)
        except BrokenProcessPool as exc:
            return CellResult(error=f"its worker process died ({exc})")
        except KeyboardInterrupt:
            # the worker's cell was interrupted (Ctrl-C reaches the whole process group): a cancelled cell; an
            # interrupt of this thread's own wait (the future is not done) is the experiment's and goes on up
            if future.done():
                return CellResult(cancelled=True)
            raise

    def cancel(self) -> None:
        self.cancelled = True
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=self.cancelled)


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says what to install."""
    return ray_cluster.import_ray("--backend ray", "or run with --backend local")


class RayBackend(Backend):
    """Each cell is a Ray task (``ray.remote`` of :func:`run_task`).

    Args:
        address: a running cluster (``HEAD:6379`` or ``auto``, from a node of it); None: start a local Ray
            with ``num_cpus`` CPUs for this experiment (stopped again by :meth:`close`).
        device: the cells' ``--device``; ``cuda``/``cuda:N`` ask for one GPU per task, ``auto`` does so when the
            cluster has GPUs; on a GPU worker Ray sets ``CUDA_VISIBLE_DEVICES``, so the task's ``cuda:0`` is the
            GPU Ray gave it.
        cpus_per_task: the CPUs a CPU cell asks for (its torch threads).
    """

    parallel = True

    def __init__(self, address: str | None, device: str, num_cpus: int | None = None, cpus_per_task: int = 1) -> None:
        ray = self.ray = import_ray()
        self.address = address
        self.started = ray_cluster.connect(ray, address, num_cpus)
        # a GPU task sees one device (CUDA_VISIBLE_DEVICES), which is cuda in it (the job service asks the same)
        spec = self.spec = ray_cluster.task_spec(ray, device, cpus_per_task)
        self.resources: dict[str, float] = spec.resources
        self.device = spec.device if spec.device != "cpu" else device
        # no automatic retry: a retried cell could race its first attempt on the same run; a cell whose node died
        # fails, and the next invocation resumes it from its last checkpoint
        self.remote = ray.remote(_ray_task).options(**self.resources, max_retries=0)
        self.threads = spec.threads
        self.pending: dict[Any, Future[CellResult]] = {}
        self.lock = threading.Lock()
        self.cancelled = False

    def describe(self) -> str:
        """One line for the console: which Ray, what it has, what each cell asks for."""
        if not self.started:
            where = "the Ray this process was already connected to"
        else:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray started for this experiment"
        return f"{where}: {ray_cluster.describe_cluster(self.ray)}; each cell asks for {self.spec.describe()}"

    def submit(self, task: CellTask) -> Future[CellResult]:
        with self.lock:
            if self.cancelled:
                return _done(CellResult(cancelled=True))
            ref = self.remote.remote(_with_device(task, self.device), self.threads)
            future: Future[CellResult] = ref.future()
            self.pending[ref] = future
        return future

    def result(self, future: Future[CellResult]) -> CellResult:
        ray = self.ray
        try:
            return future.result()
        except (CancelledError, ray.exceptions.TaskCancelledError):
            return CellResult(cancelled=True)
        except ray.exceptions.RayError as exc:  # the worker or its node died, the task could not be scheduled...
            return CellResult(error=f"{type(exc).__name__}: {exc}")
        finally:
            if future.done():  # not when Ctrl-C interrupted the wait: cancel() must still find the task
                with self.lock:
                    for ref, pending in list(self.pending.items()):
                        if pending is future:
                            del self.pending[ref]

    def cancel(self, wait_s: float = 30.0) -> None:
        with self.lock:
            self.cancelled = True
            refs = list(self.pending)
        for ref in refs:
            # a queued task is dropped; a running one gets KeyboardInterrupt (execute_run marks its run cancelled)
            self.ray.cancel(ref)
        if refs:  # let the running cells mark their runs cancelled before a local Ray is shut down under them
            self.ray.wait(refs, num_returns=len(refs), timeout=wait_s)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _with_device(task: CellTask, device: str) -> CellTask:
    from dataclasses import replace

    return replace(task, device=device)


def _ray_task(task: CellTask, threads: int) -> CellResult:
    """The Ray task: one cell on the worker Ray picked (torch threads = the CPUs it asked for)."""
    import torch

    torch.set_num_threads(threads)
    return run_task(task)


@contextlib.contextmanager
def ctrl_c_interrupts() -> Iterator[None]:
    """While an experiment waits on its cells, Ctrl-C (SIGINT) raises KeyboardInterrupt in this, the main, thread:
    that is how it cancels the queued cells and interrupts the running ones.

    Whatever the process had set up for SIGINT is put back afterwards; meanwhile Python's default handler is in
    place and SIGINT is not blocked in this thread. Without that, a handler installed earlier in a long-lived
    process (an asyncio runner's, which only cancels its own main task on the first Ctrl-C; ``SIG_IGN`` of a
    library; a mask inherited from code that blocked SIGINT around a spawn) would make the Ctrl-C do nothing, and
    the experiment would run on to its end. Nothing changes off the main thread (signals only reach Python there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.default_int_handler:
        log.debug("experiment: SIGINT handler was %r; using Python's default while the cells run", before)
    # installed even when Python thinks it is in place: a C library may have replaced the process's handler
    # (or set SIG_IGN) behind Python's back, which getsignal cannot see
    signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        if before is not signal.default_int_handler and before is not None:
            signal.signal(signal.SIGINT, before)


def make_backend(name: str, jobs: int | None, device: str, address: str | None = None) -> Backend:
    """The backend ``pss experiment --backend NAME`` asked for. ``jobs``: local processes (``local``; None = 1), or
    the CPUs of the local Ray this starts (``ray`` without ``address``; None = all of this machine's)."""
    if name == "ray":
        return RayBackend(address, device, num_cpus=jobs)
    if name != "local":
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if address:
        raise ConfigError("--address is the Ray cluster to use: give it with --backend ray")
    return InProcess() if (jobs or 1) <= 1 else LocalProcesses(jobs or 1)


__all__ = ["BACKENDS", "Backend", "CellResult", "CellTask", "InProcess", "LocalProcesses", "RayBackend",
           "ctrl_c_interrupts", "make_backend", "run_task"]
