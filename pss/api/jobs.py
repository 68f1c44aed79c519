"""The job facade: launch, cancel, resume and delete training runs that run as separate processes.

Used by the app's Runs tab (and usable from notebooks). A launch validates the form into a config *before*
anything starts (``ConfigError`` with a message for the UI), creates the run (status ``queued``) with its
resolved config, and queues a job whose command trains exactly that saved config::

    python -m pss.cli train -w WS --run-id RUN --device DEVICE -c WS/runs/RUN/config.yaml

One ``JobService`` per workspace and process (``job_service(ws)``) owns the run store and a ``Worker``
thread that starts queued jobs, one per device; on start it reaps jobs whose process is gone (killed,
crashed, or left by a previous app), which then become ``failed`` — resumable when a checkpoint exists.

Nothing here imports torch at module import: the config modules (which import the model code) are
imported inside the functions that validate a launch (``pss.api.launch_form``), and visible GPUs are asked of
torch in a subprocess (``pss.api.devices``), so the app process never initialises CUDA.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The form model and its validation (pss.api.launch_form) and device probing and placement (pss.api.devices) are
# modules of their own; the names the service's callers use with it are importable from here too.
from pss.api.devices import AUTO_DEVICE, pick_device, visible_gpus
from pss.api.launch_form import RUN_ON_RAY, LaunchRequest, validate_launch
from pss.api.waiting import ReleasingWorker, cancel_waiting, defer, waiting_for
from pss.errors import ConfigError, RunStoreError
from pss.runs import JobQueue, RunStore, Worker
from pss.runs.jobs import on_ray
from pss.runs.ray_cluster import RAY_INSTALL, ray_installed
from pss.runs.ray_jobs import RAY_ADDRESS_ENV, RaySettings, RayWorker, ray_device
from pss.status import ACTIVE, FINISHED, Status
from pss.workspace import Workspace

RESUMABLE: tuple[Status, ...] = (Status.FAILED, Status.CANCELLED)  # a run that stopped early, from its checkpoint
STARTUP_KILL_S = 3.0  # a job cancelled before its first step has no checkpoint to write: stop it this fast


@dataclass
class Launched:
    """What a launch or resume queued."""

    run_id: str
    job_id: str
    device: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RayOption:
    """The launch form's "Run on: Ray cluster" choice: whether it can be picked, its label, and why not."""

    available: bool
    label: str
    message: str


# ---- the job's command line ------------------------------------------------------------------------------

def train_command(ws: Workspace, run_id: str, device: str, config_path: Path | None = None,
                  resume: bool = False) -> list[str]:
    """The job's command line: train the saved config of ``run_id``, or resume it from its checkpoint."""
    if on_ray(device):  # what its Ray task runs, in the terms of `pss train` (Ray places the task)
        device = device.split(":", 1)[1]
    base = [sys.executable, "-m", "pss.cli", "train", "-w", str(ws.root), "--device", device]
    if resume:
        return base + ["--resume", run_id]
    return base + ["--run-id", run_id, "-c", str(config_path)]


# ---- the service ----------------------------------------------------------------------------------------

class JobService:
    """Launch/cancel/resume/delete runs of one workspace; owns its run store, queue and worker thread."""

    def __init__(self, ws: Workspace, poll_s: float = 0.5, grace_s: float = 10.0, warm: bool | None = None,
                 ray: RaySettings | None = None) -> None:
        self.ws = ws
        # where "Run on: Ray cluster" sends jobs (PSS_RAY_ADDRESS / pss-app --ray-address; else a local Ray)
        self.ray = ray or RaySettings.from_env()
        self.ray_worker: RayWorker | None = None
        # a pre-started job process while idle (pss.runs.warm); PSS_WARM_JOBS=0 turns it off
        self.warm = os.environ.get("PSS_WARM_JOBS", "1") != "0" if warm is None else warm
        self.store = RunStore(Path(ws.runs))
        self.queue = JobQueue(self.store, grace_s=grace_s)
        self.poll_s = poll_s
        self.worker: Worker | None = None
        self._lock = threading.Lock()

    def start(self) -> JobService:
        """Reap jobs whose process is gone, then start the worker thread (CPU now; GPUs once probed)."""
        with self._lock:
            if self.worker is not None and self.worker.is_alive():
                return self
            self.queue.reap()
            self.worker = ReleasingWorker(self.store, ["cpu"], poll_s=self.poll_s, queue=self.queue, warm=self.warm)
            self.worker.start()
            if any(on_ray(job.device) for status in ACTIVE for job in self.queue.list_jobs(status=status)):
                self._start_ray_worker()  # Ray jobs queued (or submitted by this process) before this start
        threading.Thread(target=self._add_gpus, name="pss-gpu-probe", daemon=True).start()
        return self

    def _start_ray_worker(self) -> RayWorker:
        """The thread that runs Ray jobs (started on the first one: an app that never uses Ray never polls for
        them). The caller holds ``self._lock``."""
        if self.ray_worker is None or not self.ray_worker.is_alive():
            self.ray_worker = RayWorker(self.store, Path(self.ws.root), self.ray, self.queue, poll_s=self.poll_s)
            self.ray_worker.start()
        return self.ray_worker

    def ray_option(self) -> RayOption:
        """The "Run on: Ray cluster" choice as the form shows it: disabled, saying what to install, without Ray."""
        if not ray_installed():
            return RayOption(False, "Ray cluster (not installed)",
                             f"Running jobs on a Ray cluster needs Ray: {RAY_INSTALL}; then restart the app")
        where = self.ray.address or "a local Ray, started on first use"
        return RayOption(True, f"Ray cluster ({where})",
                         f"Jobs run as tasks on {self.ray.describe()}; the workspace must be on a filesystem every "
                         "node mounts at the same path")

    def _add_gpus(self) -> None:
        gpus = visible_gpus()
        if gpus and self.worker is not None:
            self.worker.devices = ["cpu", *gpus]  # read by the worker on its next iteration

    def stop(self) -> None:
        """Stop the worker thread (running jobs keep running; a later service adopts them)."""
        with self._lock:
            if self.worker is not None:
                self.worker.stop()
                self.worker = None
            if self.ray_worker is not None:
                self.ray_worker.stop()
                self.ray_worker = None

    def _kick(self, device: str = "") -> None:
        """Start what can start now rather than at the worker's next poll (a Ray job: the Ray worker's next pass,
        in its own thread, since connecting to Ray can take seconds)."""
        if on_ray(device):
            with self._lock:
                self._start_ray_worker().wake()
            return
        worker = self.worker
        if worker is not None and worker.is_alive():
            worker.run_once()

    def _job_device(self, device: str, on_ray_cluster: bool) -> str:
        """The job's device: one of this machine's (``pick_device``), or a Ray device (``ray:cpu``, ...)."""
        if not on_ray_cluster:
            return pick_device(device, self.queue)
        option = self.ray_option()
        if not option.available:
            raise ConfigError(option.message)
        return ray_device(device)

    def launch(self, request: LaunchRequest, after: str | None = None) -> Launched:
        """Validate, create the run, queue its job; returns ids (ConfigError before anything is written).

        ``after``: a run id; the job is queued only once that run is done (``pss.api.waiting``; ``job_id`` is
        ``""`` until then), and the run is cancelled if that run fails, is cancelled or deleted. Typically the
        run's ``init_from``, which may then still be queued or running."""
        from pss.config import config_to_dict
        from pss.methods import method_class
        from pss.runs.execute import total_steps  # a pipeline's progress total is the sum of its stages' steps

        if after:
            parent = self.store.index.get_run(after)
            if parent is None or parent.status in RESUMABLE:
                state = parent.status if parent else "not in this workspace"
                raise ConfigError(f"run {after} to start after is {state}; resume or relaunch it first")
        config = validate_launch(self.ws, request, self.store, after=after)
        device = self._job_device(request.device, request.run_on == RUN_ON_RAY)
        run = self.store.create_run(config.data.user, config.method_name, config_to_dict(config), device,
                                    total_steps(config))
        try:
            command = train_command(self.ws, run.run_id, device, run.dir / "config.yaml")
            if after:
                defer(self.store, run.run_id, after, command, device)
                job_id = ""
            else:
                job_id = self.queue.enqueue(run.run_id, command, device)
        except BaseException:
            self.store.discard_run(run.run_id)  # launch fully happens or leaves nothing behind
            raise
        warnings = []
        method = method_class(config.method_name)
        if method.uses("pseudo") and not config.train.init_from:
            warnings.append(f"{config.method_name} builds pseudo labels from its starting model; without "
                            f"init-from (a finished {method.starts_from} run) that model is untrained on this task")
        self._kick(device)
        return Launched(run.run_id, job_id, device, warnings)

    def cancel(self, run_id: str) -> str:
        """Cancel the run's queued or running job; returns the job status (``running`` while it stops)."""
        job = self.queue.latest_job(run_id)
        if job is None and cancel_waiting(self.store, run_id):
            return Status.CANCELLED
        if job is None or job.status not in ACTIVE:
            raise RunStoreError(f"run {run_id} has no queued or running job to cancel")
        status = self.queue.cancel(job.job_id)
        if status == Status.RUNNING and not self.store.open_run(run_id).events("train"):
            # still loading data / grouping: the engine only stops between steps, and there is nothing to save
            timer = threading.Timer(STARTUP_KILL_S, self._kill_if_still_starting, (job.job_id, run_id))
            timer.daemon = True
            timer.start()
        return status

    def _kill_if_still_starting(self, job_id: str, run_id: str) -> None:
        import signal

        from pss.runs.procs import process_alive, signal_group

        job = self.queue.get(job_id)
        if job.on_ray:  # its pid is this app's; the Ray worker cancels the task (immediately before training)
            return
        if job.status == Status.RUNNING and job.pid and process_alive(job.pid, job.proc_start) \
                and not self.store.open_run(run_id).events("train"):
            signal_group(job.pid, signal.SIGKILL)

    def waiting_for(self, run_id: str) -> str | None:
        """The run that ``run_id`` waits for before its job is queued (``launch(after=)``), or None."""
        return waiting_for(self.store, run_id)

    def can_resume(self, run_id: str) -> bool:
        """A failed or cancelled run with a checkpoint and no active job."""
        run = self.store.open_run(run_id)
        job = self.queue.latest_job(run_id)
        return (run.meta["status"] in RESUMABLE and run.latest_checkpoint() is not None
                and (job is None or job.status not in ACTIVE))

    def runs_signature(self) -> list[Any]:
        """One aggregate row of the run index that changes when any run is added, removed, or changes status, steps
        or scores: cheap enough for the app to poll instead of re-reading the history."""
        with self.store.index.connect() as conn:
            row = conn.execute("SELECT COUNT(*), MAX(updated), TOTAL(steps), TOTAL(fiou), "
                               "GROUP_CONCAT(run_id || status, ',') FROM runs").fetchone()
        return list(row)

    def resume(self, run_id: str, device: str | None = None, run_on: str | None = None) -> Launched:
        """Queue a job continuing ``run_id`` from its latest checkpoint (on its own device unless given; ``run_on``
        ``local`` or ``ray``: where, by default where its last job ran)."""
        run = self.store.open_run(run_id)
        status = run.meta["status"]
        if status not in RESUMABLE:
            raise RunStoreError(f"run {run_id} is {status}; only failed or cancelled runs can be resumed")
        if run.latest_checkpoint() is None:
            raise RunStoreError(f"run {run_id} has no checkpoint to resume from; launch it again instead")
        last = self.queue.latest_job(run_id)
        before = last.device if last is not None else str(run.meta.get("device") or AUTO_DEVICE)
        ray_run = on_ray(before) if run_on is None else run_on == RUN_ON_RAY
        if on_ray(before):
            before = before.split(":", 1)[1]  # ray:cpu -> cpu (as a local device too)
        target = self._job_device(device or before, ray_run)
        job_id = self.queue.enqueue(run_id, train_command(self.ws, run_id, target, resume=True), target)
        self._kick(target)
        return Launched(run_id, job_id, target)

    def delete(self, run_id: str, wait_s: float = 15.0) -> None:
        """Delete the run's directory and index rows (RunStoreError while a job is queued or running).

        A run the engine has already ended (done/failed/cancelled) may still have its process exiting for
        a moment; the worker collects it first (up to ``wait_s``) instead of refusing the delete.
        """
        job = self.queue.latest_job(run_id)
        if job is not None and job.status == Status.RUNNING and \
                self.store.open_run(run_id).meta["status"] in FINISHED:
            deadline = time.monotonic() + wait_s
            while self.queue.get(job.job_id).status == Status.RUNNING and time.monotonic() < deadline:
                self._kick()
                time.sleep(0.1)
        self.store.delete_run(run_id)


_SERVICES: dict[Path, JobService] = {}
_SERVICES_LOCK = threading.Lock()


def job_service(ws: Workspace, start: bool = True) -> JobService:
    """This process's service for ``ws`` (created once; its worker started unless ``start=False``)."""
    root = Path(ws.root).resolve()
    with _SERVICES_LOCK:
        service = _SERVICES.get(root)
        if service is None:
            service = _SERVICES[root] = JobService(ws, poll_s=float(os.environ.get("PSS_JOB_POLL_S", "0.5")))
    return service.start() if start else service


def stop_job_service(ws: Workspace) -> None:
    """Stop and forget this process's service for ``ws`` (its jobs keep running)."""
    with _SERVICES_LOCK:
        service = _SERVICES.pop(Path(ws.root).resolve(), None)
    if service is not None:
        service.stop()


__all__ = ["RAY_ADDRESS_ENV", "JobService", "Launched", "RayOption", "RaySettings", "job_service", "stop_job_service",
           "train_command"]
