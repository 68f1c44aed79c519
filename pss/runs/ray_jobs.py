"""Jobs that run as tasks on a Ray cluster instead of as processes of this machine (issue 19, the app on a cluster).

The job queue (``pss.runs.jobs``) is the same for both: a job on a Ray device (``ray:auto``, ``ray:cpu``,
``ray:cuda``; ``JobQueue`` lets any number of them run at once, the cluster schedules them by their resources) is
claimed by a :class:`RayWorker` instead of the local ``Worker``. The worker submits one Ray task per job (asking for
what ``pss.runs.ray_cluster.task_spec`` says the run's device needs, as an experiment's cells do), and the task runs
``execute_run`` of the job's run into the same run store, which therefore must lie on a filesystem every node
mounts at the same path. The app reads progress from the run store as for a local job.

The life cycle is that of a local job:

* **states**: ``queued`` → ``running`` (submitted; the run itself says ``running`` once the task started) →
  ``done`` | ``failed`` | ``cancelled``.
* **cancel**: ``JobQueue.cancel`` flags the job; this worker then calls ``ray.cancel`` on its task, which raises
  SIGINT's handler in the task; the task turns it into the SIGTERM a local job gets, so the engine stops between
  steps, writes its checkpoint and marks the run ``cancelled`` (resumable). A task still running ``grace_s`` later
  is force-cancelled (its worker process killed), as a local job is SIGKILLed.
* **kill -9**: a task whose worker process (or node) died comes back as a Ray error: the job and its run are marked
  ``failed`` with that error, resumable from the last checkpoint.
* **app restart**: Ray ends a task when the process that submitted it (its owner, the app) ends, so the job's
  ``pid`` is the owner's. A later app's ``JobQueue.reap`` finds that process gone and marks the job failed
  (cancelled if a cancel was requested) with a message saying so.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pss.errors import ConfigError, RunStoreError
from pss.runs import ray_cluster
from pss.runs.jobs import RAY_DEVICE_PREFIX, Job, JobQueue
from pss.runs.store import RunStore
from pss.status import ACTIVE, Status

log = logging.getLogger(__name__)

RAY_DEVICES: tuple[str, ...] = tuple(RAY_DEVICE_PREFIX + d for d in ("auto", "cpu", "cuda"))
RAY_ADDRESS_ENV = "PSS_RAY_ADDRESS"
LOCAL_RAY = "local"  # PSS_RAY_ADDRESS / --ray-address value for "a local Ray this process starts"


def ray_device(device: str) -> str:
    """The Ray job device for a form's device: ``auto`` → ``ray:auto``, ``cpu`` → ``ray:cpu``, ``cuda`` /
    ``cuda:N`` → ``ray:cuda`` (Ray picks the GPU: a task sees the one it was given)."""
    spec = (device or "auto").strip().lower()
    if spec in ("auto", "cpu"):
        return RAY_DEVICE_PREFIX + spec
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return RAY_DEVICE_PREFIX + "cuda"
    raise ConfigError(f"device {device!r} cannot be asked of a Ray cluster; choose auto, cpu or cuda")


@dataclass(frozen=True)
class RaySettings:
    """Where the job service's Ray jobs go. ``address``: a running cluster (``HEAD:6379``, ``auto``,
    ``ray://HOST:10001``); None: a local Ray this process starts on first use with ``num_cpus`` CPUs (None: all).
    ``cpus_per_task``: the CPUs (torch threads) a CPU run asks for."""

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_task: int = 1

    @classmethod
    def from_env(cls) -> RaySettings:
        """From ``PSS_RAY_ADDRESS`` (unset, empty or ``local``: a local Ray)."""
        address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
        return cls(address=None if address in ("", LOCAL_RAY) else address)

    def describe(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "a local Ray on this machine"


@dataclass
class _Task:
    """A submitted job's Ray task, as this process tracks it."""

    job_id: str
    root: Path  # the run store's root: a worker collects only the tasks of its own store
    ref: Any  # the task's ObjectRef
    owner: weakref.ref[RayWorker]
    cancel_sent: float | None = None
    forced: bool = False


# Every task this process submitted, by job id. Module-level, not per worker: a job service that is stopped and
# started again in the same process (the app's tests do) adopts the tasks of the previous one, whose ObjectRefs
# still hold the results.
_TASKS: dict[str, _Task] = {}
_TASKS_LOCK = threading.Lock()


class RayWorker(threading.Thread):
    """Background thread: submit queued Ray jobs as Ray tasks, carry out their cancels, end them when their task
    ends. ``run_once()`` does one pass (for tests and callers that poll themselves); it connects to Ray only when
    there is a Ray job to submit.

    Args:
        store: the run store (on a shared filesystem when the cluster has other nodes).
        workspace_root: the workspace the tasks open (``execute_run`` reads its data and cache).
        settings: which Ray.
        queue: the job queue (its ``grace_s`` is the time from cancel to force-cancel).
    """

    def __init__(self, store: RunStore, workspace_root: Path, settings: RaySettings, queue: JobQueue | None = None,
                 poll_s: float = 1.0) -> None:
        super().__init__(name="pss-ray-job-worker", daemon=True)
        self.store = store
        self.workspace_root = Path(workspace_root)
        self.settings = settings
        self.queue = queue or JobQueue(store)
        self.poll_s = poll_s
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._ray: Any = None
        self._remote: Any = None

    # ---- thread ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.run_once()
            except Exception:  # the worker must outlive any one bad job or a transient Ray/DB error
                log.exception("Ray job worker: iteration failed; retrying in %.1f s", self.poll_s)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def wake(self) -> None:
        """Run the next pass now (a job was just queued)."""
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the thread; the tasks keep running (another worker of this process adopts them)."""
        self._stop_event.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    # ---- one pass -------------------------------------------------------------------------------------------
    def run_once(self) -> list[str]:
        """Collect ended tasks, carry out cancels, end lost jobs, submit queued Ray jobs; returns the submitted ids."""
        with self._lock:
            self._collect()
            self._end_lost()
            started: list[str] = []
            while not self._stop_event.is_set():
                job = self.queue.next_runnable(devices=RAY_DEVICES, exclusive=False)
                if job is None:
                    break
                if self._submit(job):
                    started.append(job.job_id)
            return started

    def connect(self) -> Any:
        """The ``ray`` module, connected (a local Ray is started on first use); ConfigError when Ray is absent."""
        if self._ray is None or not self._ray.is_initialized():
            ray = ray_cluster.import_ray("running a job on a Ray cluster", "or launch it on this machine")
            ray_cluster.connect(ray, self.settings.address, self.settings.num_cpus)
            self._ray, self._remote = ray, ray.remote(_job_task)
        return self._ray

    def _submit(self, job: Job) -> bool:
        try:
            ray = self.connect()
            spec = ray_cluster.task_spec(ray, job.device[len(RAY_DEVICE_PREFIX):], self.settings.cpus_per_task)
            # no automatic retry: a retried task could race its first attempt on the same run; a job whose task
            # died fails and is resumed from its last checkpoint (as an experiment's cell)
            ref = self._remote.options(**spec.resources, max_retries=0, name=f"pss-job {job.run_id}").remote(
                str(self.workspace_root), job.run_id, job.job_id, spec.device, "--resume" in job.command,
                spec.threads)
        except Exception as exc:  # cannot connect, no GPU on the cluster, ...: this job's failure, not the worker's
            log.warning("job %s: could not submit it to Ray: %s", job.job_id, exc)
            self.queue.mark_ended(job.job_id, Status.FAILED, f"could not start it on {self.settings.describe()}: "
                                                             f"{_first_line(exc)}")
            return False
        with _TASKS_LOCK:
            _TASKS[job.job_id] = _Task(job.job_id, self.store.root, ref, weakref.ref(self))
        try:
            self.store.open_run(job.run_id).log(
                f"job {job.job_id}: submitted to {self.settings.describe()} ({ray_cluster.describe_cluster(ray)}) "
                f"as a Ray task asking for {spec.describe()}")
            job = self.queue.mark_running(job.job_id, os.getpid())
        except (RunStoreError, OSError) as exc:  # ended (cancelled, deleted) meanwhile
            log.warning("%s", exc)
            ray.cancel(ref, force=True)
            with _TASKS_LOCK:
                _TASKS.pop(job.job_id, None)
            return False
        return True

    def _mine(self) -> list[_Task]:
        """The tracked tasks of this store that this worker owns or adopts (their worker stopped)."""
        with _TASKS_LOCK:
            tasks = []
            for task in _TASKS.values():
                owner = task.owner()
                if task.root != self.store.root:
                    continue
                if owner is not self and (owner is None or not owner.is_alive()):
                    task.owner = weakref.ref(self)
                    owner = self
                if owner is self:
                    tasks.append(task)
            return tasks

    def _collect(self) -> None:
        tasks = self._mine()
        if not tasks:
            return
        if self._ray is None:  # adopted from a stopped worker of this process: the connection is the process's
            self._ray = ray_cluster.import_ray("collecting Ray jobs")
        ray = self._ray
        if not ray.is_initialized():  # the connection ended (ray.shutdown): the tasks went with it
            for task in tasks:
                self._end(task, None, "the app's connection to Ray ended before the run finished, and its Ray "
                                      "task with it; resume it")
            return
        now = time.time()
        for task in tasks:
            try:
                job = self.queue.get(task.job_id)
            except RunStoreError:  # deleted meanwhile
                self._forget(task, cancel=True)
                continue
            ready, _ = ray.wait([task.ref], timeout=0)
            if ready:
                self._finish(task, job)
            elif job.status != Status.RUNNING:  # ended by someone else (a reap): do not leave the task running
                self._forget(task, cancel=True)
            elif job.cancel_requested:
                if task.cancel_sent is None:
                    log.info("job %s: cancelling its Ray task", job.job_id)
                    ray.cancel(task.ref)  # SIGINT's handler in the task: the engine stops as on SIGTERM
                    task.cancel_sent = now
                elif not task.forced and now - task.cancel_sent > self.queue.grace_s:
                    log.warning("job %s: its Ray task did not stop within %.0f s; killing its worker", job.job_id,
                                self.queue.grace_s)
                    ray.cancel(task.ref, force=True)
                    task.forced = True

    def _finish(self, task: _Task, job: Job) -> None:
        ray = self._ray
        status: str | None = None
        failure = "its Ray task ended"
        try:
            status = ray.get(task.ref)
            failure = f"the run ended {status} in its Ray task"
        except ray.exceptions.TaskCancelledError:
            failure = "its Ray task was cancelled"
        except ray.exceptions.RayTaskError as exc:  # the run raised: execute_run wrote the error into the run
            cause = getattr(exc, "cause", None) or exc
            failure = "the run failed in its Ray task" if self._run_error(job) else \
                f"its Ray task raised {type(cause).__name__}: {_first_line(cause)}"
        except ray.exceptions.RayError as exc:  # the worker process or its node died (kill -9, OOM, node lost)
            failure = f"its Ray task died before the run finished ({type(exc).__name__}: {_first_line(exc)})"
        self._end(task, status, failure, job)

    def _end(self, task: _Task, status: str | None, failure: str, job: Job | None = None) -> None:
        self._forget(task)
        try:
            job = job or self.queue.get(task.job_id)
        except RunStoreError:
            return
        if job.status not in ACTIVE:
            return
        if status == Status.DONE and not job.cancel_requested:
            self.queue.mark_ended(job.job_id, Status.DONE)
        else:
            outcome, error = self.queue.outcome(job, failure)
            self.queue.mark_ended(job.job_id, outcome, error)

    def _end_lost(self) -> None:
        """Ray jobs this process owns (by pid) that no tracked task belongs to: their task is gone."""
        with _TASKS_LOCK:
            tracked = set(_TASKS)
        for job in self.queue.list_jobs(status=Status.RUNNING):
            if job.on_ray and job.pid == os.getpid() and job.job_id not in tracked:
                status, error = self.queue.outcome(job, "this app lost track of its Ray task (the connection to "
                                                        "Ray ended) before the run finished; resume it")
                self.queue.mark_ended(job.job_id, status, error)

    def _forget(self, task: _Task, cancel: bool = False) -> None:
        with _TASKS_LOCK:
            _TASKS.pop(task.job_id, None)
        if cancel and self._ray is not None and self._ray.is_initialized():
            self._ray.cancel(task.ref, force=True)

    def _run_error(self, job: Job) -> bool:
        try:
            return bool(self.store.open_run(job.run_id).meta.get("error"))
        except RunStoreError:
            return False


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _job_task(root: str, run_id: str, job_id: str, device: str, resume: bool, threads: int) -> str:
    """The Ray task of one job: ``execute_run`` of the run (its saved config) into the shared run store, on the
    worker Ray picked; returns the run's final status.

    Ray's cancel raises SIGINT's handler in the task's thread; here it raises SIGTERM, the signal a local job is
    cancelled with, so the engine stops between steps and checkpoints exactly as it does for a local job.
    """
    import torch

    from pss.config import resolve_config
    from pss.runs.execute import execute_run
    from pss.workspace import Workspace

    torch.set_num_threads(threads)
    if not Path(root).is_dir():
        raise RunStoreError(f"workspace {root} does not exist on {socket.gethostname()}: every node must see the "
                            "workspace (the run store) at the same path, on a shared filesystem")
    ws = Workspace(Path(root))
    run = ws.store().open_run(run_id)
    run.log(f"job {job_id}: running as a Ray task on {socket.gethostname()}, process {os.getpid()} ({device}, "
            f"{threads} thread(s))")
    in_run = [False]

    def stop_like_sigterm(signum: int, frame: Any) -> None:
        if not in_run[0]:
            raise KeyboardInterrupt("cancelled before the run started")
        signal.raise_signal(signal.SIGTERM)  # execute_run's handler: stop after this step, checkpoint, cancelled

    previous = signal.signal(signal.SIGINT, stop_like_sigterm)
    try:
        in_run[0] = True
        outcome = execute_run(run, resolve_config(run.config), ws, device, resume=resume, console=False)
    finally:
        in_run[0] = False
        signal.signal(signal.SIGINT, previous)
    return str(outcome.status)


__all__ = ["LOCAL_RAY", "RAY_ADDRESS_ENV", "RAY_DEVICES", "RaySettings", "RayWorker", "ray_device"]
