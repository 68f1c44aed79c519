"""The job facade: launch, cancel, resume and delete training runs that run as separate processes.

Used by the app's Runs tab (and usable from notebooks). A launch validates the form into a config *before*
anything starts (``ConfigError`` with a message for the UI), creates the run (status ``queued``) with its
resolved config, and queues a job whose command trains exactly that saved config::

    python -m pss.cli train -w WS --run-id RUN --device DEVICE -c WS/runs/RUN/config.yaml

One ``JobService`` per workspace and process (``job_service(ws)``) owns the run store and a ``Worker``
thread that starts queued jobs, one per device; on start it reaps jobs whose process is gone (killed,
crashed, or left by a previous app), which then become ``failed`` — resumable when a checkpoint exists.

Nothing here imports torch at module import: the config modules (which import the model code) are
imported inside the functions that validate a launch, and visible GPUs are asked of torch in a
subprocess, so the app process never initialises CUDA.
"""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pss.api.waiting import ReleasingWorker, cancel_waiting, defer, waiting_for
from pss.errors import ConfigError, RunStoreError
from pss.runs import TERMINAL_STATUSES, JobQueue, RunStore, Worker
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from pss.config import Bounds, ExperimentConfig

DEFAULT_PRESET = "demo"
AUTO_DEVICE = "auto"
METHOD_DEFAULT = "default"  # context mode: the method's own default (``group`` for PSS, ``none`` otherwise)
CONTEXT_MODES = ("none", "global", "group")
RESUMABLE_STATUSES = ("failed", "cancelled")
ACTIVE_JOB_STATUSES = ("queued", "running")
STARTUP_KILL_S = 3.0  # a job cancelled before its first step has no checkpoint to write: stop it this fast


@dataclass
class LaunchRequest:
    """The Runs form. ``None`` numbers keep the preset's value; ``context="default"`` the method's own mode.

    ``init_from``: a run id of this workspace (its latest checkpoint) or a ``.pt`` path. ``extra``: further
    dotted overrides (``train.log_every=1``).
    """

    user: str
    method: str = "pss"
    context: str = METHOD_DEFAULT
    k: float | None = None
    steps: float | None = None
    lr: float | None = None
    batch_size: float | None = None
    seed: float | None = None
    device: str = AUTO_DEVICE
    init_from: str | None = None
    preset: str = DEFAULT_PRESET
    extra: tuple[str, ...] = ()

    def overrides(self) -> list[str]:
        """Dotted overrides of the preset (values checked: whole numbers where a count is meant)."""
        out = [f"method.name={self.method}", f"data.user={self.user}"]
        if self.context not in (None, "", METHOD_DEFAULT):
            if self.context not in CONTEXT_MODES:
                raise ConfigError(f"context mode {self.context!r} is not one of {', '.join(CONTEXT_MODES)} "
                                  f"(or {METHOD_DEFAULT!r} for the method's own)")
            out.append(f"model.context.mode={self.context}")
        from pss.config import BATCH_SIZE, K, LR, SEED, STEPS

        # batch norm needs two images per batch: the form asks for 2 where the config allows 1
        for bounds, value, minimum in ((K, self.k, None), (STEPS, self.steps, None), (BATCH_SIZE, self.batch_size, 2),
                                       (SEED, self.seed, None)):
            if value is not None:
                out.append(f"{bounds.name}={_whole(bounds, value, minimum)}")
        if self.lr is not None:
            lr = _form_number(LR.name, self.lr)
            if not lr > 0:
                raise ConfigError(f"learning rate must be > 0 (got {self.lr})")
            LR.check(lr)
            out.append(f"train.lr={lr!r}")
        if self.init_from:
            out.append(f"train.init_from={self.init_from}")
        return out + list(self.extra)


@dataclass
class Launched:
    """What a launch or resume queued."""

    run_id: str
    job_id: str
    device: str
    warnings: list[str] = field(default_factory=list)


def _form_number(name: str, value: Any) -> float:
    """A form value as a finite float (numbers, or text such as ``5e-4``), else ConfigError naming the field."""
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(text, bool):
            raise TypeError
        number = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name.split('.')[-1].replace('_', ' ')} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name.split('.')[-1].replace('_', ' ')} must be a finite number, got {value!r}")
    return number


def _whole(bounds: Bounds, value: Any, minimum: int | None = None) -> int:
    """A form value as a whole number inside ``bounds`` (``minimum`` raises its lower end), else ConfigError."""
    from pss.config import show_number

    number = _form_number(bounds.name, value)
    low = bounds.minimum if minimum is None else minimum
    if not number.is_integer() or not low <= number <= bounds.maximum:
        why = "batch norm needs two images per batch" if bounds.name == "train.batch_size" else \
            (bounds.why or "it is a count")
        raise ConfigError(f"{bounds.name.split('.')[-1].replace('_', ' ')} must be a whole number from "
                          f"{show_number(low)} to {show_number(bounds.maximum)} (got {value}: {why})")
    return int(number)


# ---- devices --------------------------------------------------------------------------------------------

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
            if job.status in ACTIVE_JOB_STATUSES and job.device in load:
                load[job.device] += 1
        return min(gpus, key=lambda gpu: (load[gpu], gpus.index(gpu)))
    if spec == "cuda":
        spec = "cuda:0"
    if spec == "cpu" or spec in gpus:
        return spec
    raise ConfigError(f"device {spec!r} is not available here; choose one of {', '.join(device_choices())}")


# ---- configs --------------------------------------------------------------------------------------------

def method_default_context(method: str) -> str:
    """The context mode a method uses when the form leaves it at ``default``."""
    from pss.methods import method_class

    return str(method_class(method).default_context)


def preset_defaults(preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """The form's starting values from a preset: ``method``, ``k``, ``steps``, ``lr``, ``batch_size``, ``seed``."""
    from pss.config import build_config

    config = build_config(preset)
    return {"method": config.method_name, "k": config.grouping.k, "steps": config.train.steps,
            "lr": config.train.lr, "batch_size": config.train.batch_size, "seed": config.train.seed}


def validate_launch(ws: Workspace, request: LaunchRequest, store: RunStore | None = None,
                    after: str | None = None) -> ExperimentConfig:
    """The resolved config of ``request``, or ``ConfigError`` saying what to change (nothing is written).

    ``after``: the run this launch will wait for (``JobService.launch``); an init-from run that is ``after`` may
    still lack its checkpoint (it is checked for model settings only)."""
    from pss.config import build_config, config_to_dict
    from pss.data.pss_layout import list_users

    users = list_users(Path(ws.data) / "personal") if (Path(ws.data) / "personal").is_dir() else []
    if request.user not in users:
        raise ConfigError(f"unknown user {request.user!r}; users of this workspace: {', '.join(users) or 'none'}")
    config = build_config(request.preset, request.overrides(), base={"data": {"root": str(ws.data)}})
    init = config.train.init_from
    if init:
        if init.endswith(".pt") or "/" in init:
            # checkpoints are pickles (arbitrary code when loaded): only those our own runs wrote are accepted
            path = Path(init).expanduser().resolve()
            if not path.is_relative_to(Path(ws.runs).resolve()) or not path.is_file():
                raise ConfigError(f"init-from checkpoint {init} is not a checkpoint file under {ws.runs}; "
                                  "pick a run (its latest checkpoint is used)")
        else:
            store = store or RunStore(ws.runs)
            try:
                source = store.open_run(init)
            except RunStoreError as exc:
                raise ConfigError(f"init-from: {exc}") from exc
            if source.latest_checkpoint() is None and init != after:
                raise ConfigError(f"init-from run {init} has no checkpoint yet; wait until it is done")
            mine, theirs = config_to_dict(config)["model"], source.config.get("model", {})
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if (theirs.get("context") or {}).get("mode") == "none":
                # a context model starts from a context-free one with fresh context layers (the engine's init)
                diff = [k for k in diff if k != "context"]
            if diff:
                raise ConfigError(f"init-from run {init} has other model settings ({', '.join(diff)}: "
                                  f"{[theirs.get(k) for k in diff]} there, {[mine.get(k) for k in diff]} here); "
                                  "its weights would not fit — pick the same context mode and backbone")
    return config


def train_command(ws: Workspace, run_id: str, device: str, config_path: Path | None = None,
                  resume: bool = False) -> list[str]:
    """The job's command line: train the saved config of ``run_id``, or resume it from its checkpoint."""
    base = [sys.executable, "-m", "pss.cli", "train", "-w", str(ws.root), "--device", device]
    if resume:
        return base + ["--resume", run_id]
    return base + ["--run-id", run_id, "-c", str(config_path)]


# ---- the service ----------------------------------------------------------------------------------------

class JobService:
    """Launch/cancel/resume/delete runs of one workspace; owns its run store, queue and worker thread."""

    def __init__(self, ws: Workspace, poll_s: float = 0.5, grace_s: float = 10.0, warm: bool | None = None) -> None:
        self.ws = ws
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
        threading.Thread(target=self._add_gpus, name="pss-gpu-probe", daemon=True).start()
        return self

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

    def _kick(self) -> None:
        """Start what can start now rather than at the worker's next poll."""
        worker = self.worker
        if worker is not None and worker.is_alive():
            worker.run_once()

    def launch(self, request: LaunchRequest, after: str | None = None) -> Launched:
        """Validate, create the run, queue its job; returns ids (ConfigError before anything is written).

        ``after``: a run id; the job is queued only once that run is done (``pss.api.waiting``; ``job_id`` is
        ``""`` until then), and the run is cancelled if that run fails, is cancelled or deleted. Typically the
        run's ``init_from``, which may then still be queued or running."""
        from pss.config import config_to_dict
        from pss.methods import method_class

        if after:
            parent = self.store.index.get_run(after)
            if parent is None or parent.status in RESUMABLE_STATUSES:
                state = parent.status if parent else "not in this workspace"
                raise ConfigError(f"run {after} to start after is {state}; resume or relaunch it first")
        config = validate_launch(self.ws, request, self.store, after=after)
        device = pick_device(request.device, self.queue)
        run = self.store.create_run(config.data.user, config.method_name, config_to_dict(config), device,
                                    config.train.steps)
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
        if method_class(config.method_name).uses("pseudo") and not config.train.init_from:
            warnings.append(f"{config.method_name} builds pseudo labels from its starting model; without "
                            "init-from that model is untrained on this task")
        self._kick()
        return Launched(run.run_id, job_id, device, warnings)

    def cancel(self, run_id: str) -> str:
        """Cancel the run's queued or running job; returns the job status (``running`` while it stops)."""
        job = self.queue.latest_job(run_id)
        if job is None and cancel_waiting(self.store, run_id):
            return "cancelled"
        if job is None or job.status not in ACTIVE_JOB_STATUSES:
            raise RunStoreError(f"run {run_id} has no queued or running job to cancel")
        status = self.queue.cancel(job.job_id)
        if status == "running" and not self.store.open_run(run_id).events("train"):
            # still loading data / grouping: the engine only stops between steps, and there is nothing to save
            timer = threading.Timer(STARTUP_KILL_S, self._kill_if_still_starting, (job.job_id, run_id))
            timer.daemon = True
            timer.start()
        return status

    def _kill_if_still_starting(self, job_id: str, run_id: str) -> None:
        import signal

        from pss.runs.procs import process_alive, signal_group

        job = self.queue.get(job_id)
        if job.status == "running" and job.pid and process_alive(job.pid, job.proc_start) \
                and not self.store.open_run(run_id).events("train"):
            signal_group(job.pid, signal.SIGKILL)

    def waiting_for(self, run_id: str) -> str | None:
        """The run that ``run_id`` waits for before its job is queued (``launch(after=)``), or None."""
        return waiting_for(self.store, run_id)

    def can_resume(self, run_id: str) -> bool:
        """A failed or cancelled run with a checkpoint and no active job."""
        run = self.store.open_run(run_id)
        job = self.queue.latest_job(run_id)
        return (run.meta["status"] in RESUMABLE_STATUSES and run.latest_checkpoint() is not None
                and (job is None or job.status not in ACTIVE_JOB_STATUSES))

    def resume(self, run_id: str, device: str | None = None) -> Launched:
        """Queue a job continuing ``run_id`` from its latest checkpoint (on its own device unless given)."""
        run = self.store.open_run(run_id)
        status = run.meta["status"]
        if status not in RESUMABLE_STATUSES:
            raise RunStoreError(f"run {run_id} is {status}; only failed or cancelled runs can be resumed")
        if run.latest_checkpoint() is None:
            raise RunStoreError(f"run {run_id} has no checkpoint to resume from; launch it again instead")
        target = pick_device(device or run.meta.get("device") or AUTO_DEVICE, self.queue)
        job_id = self.queue.enqueue(run_id, train_command(self.ws, run_id, target, resume=True), target)
        self._kick()
        return Launched(run_id, job_id, target)

    def delete(self, run_id: str, wait_s: float = 15.0) -> None:
        """Delete the run's directory and index rows (RunStoreError while a job is queued or running).

        A run the engine has already ended (done/failed/cancelled) may still have its process exiting for
        a moment; the worker collects it first (up to ``wait_s``) instead of refusing the delete.
        """
        job = self.queue.latest_job(run_id)
        if job is not None and job.status == "running" and \
                self.store.open_run(run_id).meta["status"] in TERMINAL_STATUSES:
            deadline = time.monotonic() + wait_s
            while self.queue.get(job.job_id).status == "running" and time.monotonic() < deadline:
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
