"""Job queue over the run index; the worker thread that runs each job as its own process is ``pss.runs.worker``.

A job is one command (the lead wires ``pss train --run-id …``) for one existing run, on one device.
Life cycle: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled`` (a queued job can be
cancelled directly). At most one job runs per device, across every worker and app instance over
the same workspace: claiming happens inside an SQLite ``BEGIN IMMEDIATE`` transaction.

Jobs outlive the app: they run in their own session and keep going when the app stops. A worker
started later adopts them through ``reap``: a job whose process is gone (killed, crashed, a zombie,
or a reused pid with another start time) is ended — ``done`` if its run says done, ``cancelled``
if a cancel was requested, else ``failed`` (``resumable`` when the run has a checkpoint).

Example::

    queue = JobQueue(store)
    job_id = queue.enqueue(run.run_id, [sys.executable, "-m", "pss.cli", "train", ...], device="cuda:0")
    worker = Worker(store, devices=["cuda:0"], poll_s=1.0)
    worker.start()
    queue.cancel(job_id)          # SIGTERM to the job's process group, SIGKILL after grace_s
"""
from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from pss.errors import RunStoreError
from pss.runs.files import iso_to_epoch, now_iso
from pss.runs.index import ACTIVE_SQL, status_in
from pss.runs.procs import process_alive, process_start_time, signal_group
from pss.runs.store import RunStore
from pss.status import ACTIVE, FINISHED, Status

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 60.0  # a run with no job at all this long after its creation was never queued
#: a job whose device starts with this runs as a task on a Ray cluster (``pss.runs.ray_jobs``): ``ray:auto``,
#: ``ray:cpu``, ``ray:cuda``. Its ``pid`` is the process that submitted the task (the app): Ray ends a task when
#: the process that owns it ends, so that process being alive is what "the job may still run" means; it is never
#: signalled (cancel goes through Ray).
RAY_DEVICE_PREFIX = "ray:"


def on_ray(device: str) -> bool:
    """Whether a job on ``device`` runs as a Ray task."""
    return str(device).startswith(RAY_DEVICE_PREFIX)


@dataclass
class Job:
    """One row of the ``jobs`` table. ``proc_start`` identifies the process together with ``pid``;
    ``cancel_requested`` is the time Cancel was pressed (None if never)."""

    job_id: str
    run_id: str
    status: str  # a pss.status.Status value, as stored
    device: str
    pid: int | None
    proc_start: int | None
    command: list[str]
    created: str
    started: str | None
    ended: str | None
    error: str | None
    resumable: bool
    cancel_requested: str | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        values = {k: row[k] for k in row.keys() if k != "command_json"}
        return cls(command=json.loads(row["command_json"]), **{**values, "resumable": bool(values["resumable"])})

    def to_row(self) -> dict[str, Any]:
        """Column → value, as stored in the table and in the run's jobs.json."""
        row = asdict(self)
        row["command_json"] = json.dumps(row.pop("command"))
        row["resumable"] = int(self.resumable)
        return row

    @property
    def on_ray(self) -> bool:
        """A Ray task (``pss.runs.ray_jobs``), not a process of this machine: ``pid`` is its owner's."""
        return on_ray(self.device)


class JobQueue:
    """Queue operations; stateless apart from the store, so any number may exist at once."""

    def __init__(self, store: RunStore, grace_s: float = 15.0, claim_timeout_s: float = 120.0) -> None:
        self.store = store
        self.grace_s = grace_s  # SIGTERM → SIGKILL: time for the engine to write its checkpoint
        self.claim_timeout_s = claim_timeout_s  # claimed but never started (its worker died)

    # ---- queries ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; RunStoreError if unknown."""
        with self.store.index.connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise RunStoreError(f"no job {job_id!r} in {self.store.index.path}")
        return Job.from_row(row)

    def list_jobs(self, status: str | None = None, run_id: str | None = None) -> list[Job]:
        """Jobs (optionally of one status / run), oldest first."""
        where = [(c, v) for c, v in (("status", status), ("run_id", run_id)) if v is not None]
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(f"{c} = ?" for c, _ in where) if where else "")
        with self.store.index.connect() as conn:
            rows = conn.execute(sql + " ORDER BY created, rowid", [v for _, v in where]).fetchall()
        return [Job.from_row(r) for r in rows]

    def latest_job(self, run_id: str) -> Job | None:
        """The run's most recent job (what a Resume/Cancel button acts on), or None."""
        jobs = self.list_jobs(run_id=run_id)
        return jobs[-1] if jobs else None

    # ---- transitions ------------------------------------------------------------------------

    def enqueue(self, run_id: str, command: list[str], device: str) -> str:
        """Queue ``command`` for the existing run ``run_id`` on ``device``; returns the job id.

        ``device`` must be concrete (``cpu``, ``cuda:0``): resolve ``auto`` before enqueueing, as
        workers only take jobs for the devices they were given.

        Raises:
            RunStoreError: unknown run, empty command, or the run already has a queued/running job.
        """
        if not command or not all(isinstance(part, str) for part in command):
            raise RunStoreError(f"job command must be a non-empty list of strings, got {command!r}")
        run = self.store.open_run(run_id)
        now = now_iso()
        job = Job(job_id=f"job-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}",
                  run_id=run_id, status=Status.QUEUED.value, device=str(device), pid=None, proc_start=None,
                  command=list(command), created=now, started=None, ended=None, error=None,
                  resumable=False, cancel_requested=None)
        with self.store.index.transaction() as conn:
            active = conn.execute(f"SELECT job_id, status FROM jobs WHERE run_id = ? AND {ACTIVE_SQL}",
                                  (run_id,)).fetchone()
            if active is not None:
                raise RunStoreError(f"run {run_id} already has job {active['job_id']} {active['status']}; "
                                    "wait for it or cancel it first")
            row = job.to_row()
            conn.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         list(row.values()))
        run.set_status(Status.QUEUED)
        run.save_job(job.to_row())
        return job.job_id

    def next_runnable(self, busy_devices: Iterable[str] = (), devices: Iterable[str] | None = None,
                      claim: bool = True, exclusive: bool = True) -> Job | None:
        """The oldest queued job whose device is free, or None.

        A device is busy if it is in ``busy_devices`` or any job runs on it. ``devices``, if
        given, restricts the choice to jobs for those devices. With ``claim`` (the default) the job
        is marked ``running`` (pid unknown until ``mark_running``) in the same ``BEGIN IMMEDIATE``
        transaction as the check, so concurrent callers never get the same job or double-book a
        device; ``claim=False`` only peeks. ``exclusive=False``: devices are not booked (Ray jobs: the cluster
        schedules its tasks by their resources).
        """
        allowed = None if devices is None else set(devices)
        with self.store.index.transaction() as conn:
            running = conn.execute("SELECT device FROM jobs WHERE status = ?", (Status.RUNNING,))
            busy = set(busy_devices) | {r[0] for r in running}
            queued = conn.execute("SELECT * FROM jobs WHERE status = ? ORDER BY created, rowid", (Status.QUEUED,))
            for row in queued.fetchall():
                if (exclusive and row["device"] in busy) or (allowed is not None and row["device"] not in allowed):
                    continue
                job = Job.from_row(row)
                if claim:
                    job.status, job.started = Status.RUNNING.value, now_iso()
                    conn.execute("UPDATE jobs SET status = ?, started = ?, pid = NULL, proc_start = NULL "
                                 "WHERE job_id = ?", (job.status, job.started, job.job_id))
                break
            else:
                return None
        if claim:
            self._save(job)
        return job

    def mark_running(self, job_id: str, pid: int) -> Job:
        """Record the process of a claimed (or queued) job and set its run to ``running``.

        Raises:
            RunStoreError: if the job has ended meanwhile (the caller should stop the process).
        """
        with self.store.index.connect() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET status = ?, pid = ?, proc_start = ?, started = COALESCE(started, ?) "
                f"WHERE job_id = ? AND {ACTIVE_SQL}",
                (Status.RUNNING, pid, process_start_time(pid), now_iso(), job_id))
        job = self.get(job_id)
        if cur.rowcount == 0:
            raise RunStoreError(f"job {job_id} is {job.status}, not running; its process {pid} should be stopped")
        self._save(job)
        self._sync_run(job, Status.RUNNING, None)
        return job

    def mark_ended(self, job_id: str, status: Status | str, error: str | None = None) -> Job:
        """End a job (``done``/``failed``/``cancelled``) and carry the status over to its run (a run
        that reports ``done`` itself stays done). A job that already ended is left as it is."""
        if status not in FINISHED:
            raise RunStoreError(f"a job ends as one of {', '.join(FINISHED)}, not {status!r}")
        status = Status(status)
        job = self.get(job_id)
        resumable = status != Status.DONE and self._has_checkpoint(job.run_id)
        with self.store.index.connect() as conn:
            cur = conn.execute(f"UPDATE jobs SET status = ?, ended = ?, error = ?, resumable = ? "
                               f"WHERE job_id = ? AND {ACTIVE_SQL}",
                               (status.value, now_iso(), error, int(resumable), job_id))
        job = self.get(job_id)
        if cur.rowcount:
            self._save(job)
            self._sync_run(job, status, error)
        return job

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns its status afterwards.

        Queued → ``cancelled`` at once. Running → SIGTERM to its process group now (the engine
        checkpoints and exits), SIGKILL after ``grace_s`` if still alive; the status becomes
        ``cancelled`` when the worker sees the process end, so this returns ``running``. A Ray job is only
        flagged: the worker that owns its task cancels it through Ray (``pss.runs.ray_jobs``).
        """
        job = self.get(job_id)
        if job.status == Status.QUEUED:
            job = self.mark_ended(job_id, Status.CANCELLED, "cancelled before it started")
            if job.status == Status.CANCELLED:
                return job.status
        if job.status != Status.RUNNING:
            return job.status
        with self.store.index.connect() as conn:
            conn.execute("UPDATE jobs SET cancel_requested = COALESCE(cancel_requested, ?) WHERE job_id = ?",
                         (now_iso(), job_id))
        if job.pid is not None and not job.on_ray and process_alive(job.pid, job.proc_start):
            log.info("job %s: sending SIGTERM to process group %s", job_id, job.pid)
            signal_group(job.pid, signal.SIGTERM)
            timer = threading.Timer(self.grace_s, self._kill_if_alive, (job.pid, job.proc_start))
            timer.daemon = True
            timer.start()
        return Status.RUNNING.value

    def reap(self, exclude: Iterable[str] = ()) -> list[Job]:
        """End every ``running`` job whose process is gone; returns the jobs it ended.

        Also SIGKILLs cancelled jobs still alive after ``grace_s``, and fails jobs claimed more than
        ``claim_timeout_s`` ago that never got a process. ``exclude``: job ids whose processes the
        caller watches itself (a worker's own children, whose exit codes it will read).
        """
        skip, ended, now = set(exclude), [], time.time()
        for job in self.list_jobs(status=Status.RUNNING):
            if job.job_id in skip:
                continue
            if job.pid is None:
                if now - (iso_to_epoch(job.started) or now) > self.claim_timeout_s:
                    ended.append(self.mark_ended(job.job_id, Status.FAILED, "claimed by a worker that stopped "
                                                 "before starting the process; enqueue the run again"))
                continue
            if process_alive(job.pid, job.proc_start):
                # a Ray job's pid is the app that owns its task: its cancel is that app's to carry out
                if job.cancel_requested and now - iso_to_epoch(job.cancel_requested) > self.grace_s and \
                        not job.on_ray:
                    self._kill_if_alive(job.pid, job.proc_start)
                continue
            if job.on_ray:  # Ray ends a task whose owner ended
                failure = (f"the app that ran it on Ray (process {job.pid}) stopped before the run finished, and "
                           "Ray ended its task with it; resume it")
            else:
                failure = f"process {job.pid} is gone (killed or crashed) before the run finished; see the run's log"
            status, error = self.outcome(job, failure)
            ended.append(self.mark_ended(job.job_id, status, error))
        self.reconcile_runs()
        return ended

    def reconcile_runs(self, orphan_after_s: float = ORPHAN_AFTER_S) -> list[str]:
        """End runs that say ``queued``/``running`` while no job of theirs is queued or running; returns their ids.

        This happens when a write failed half-way (a read-only or full index: the job ended but its run was never
        told) or when a launch died between creating the run and queueing its job. Such a run would show
        "running · starting" forever with nothing to cancel. A run whose latest job ended takes that job's
        outcome; a run without any job is failed once it is ``orphan_after_s`` old (a launch in progress has
        none for a moment), unless it waits for another run (``waiting.json``, ``pss.api.waiting``). An index row
        whose run directory is gone (a failed launch removed the directory but could not drop the row) is dropped.
        """
        with self.store.index.connect() as conn:
            rows = conn.execute(
                f"SELECT run_id, created FROM runs WHERE {status_in(ACTIVE, 'runs.status')} AND NOT EXISTS "
                f"(SELECT 1 FROM jobs WHERE jobs.run_id = runs.run_id AND {status_in(ACTIVE, 'jobs.status')})"
            ).fetchall()
        fixed, now = [], time.time()
        for row in rows:
            run_id = row["run_id"]
            if not self.store.run_dir(run_id).exists():  # a launch removed it but could not remove its row
                try:
                    self.store.index.delete_run(run_id)
                except (RunStoreError, OSError) as exc:
                    log.warning("run %s: stale index row stays for now: %s", run_id, exc)
                continue
            job = self.latest_job(run_id)
            if job is None:
                if now - (iso_to_epoch(row["created"]) or now) < orphan_after_s or \
                        (self.store.run_dir(run_id) / "waiting.json").exists():
                    continue
                status, error = Status.FAILED, "its job was never queued (the launch did not finish); launch it again"
            else:
                status = Status(job.status) if job.status != Status.DONE else Status.FAILED
                error = job.error or f"its job {job.job_id} ended ({job.status}) without the run finishing; " \
                                     "resume or launch it again"
            try:
                run = self.store.open_run(run_id)
                if run.meta["status"] == Status.DONE:  # the run finished; only the index was stale
                    self.store.index.upsert_run(self.store.record_from_dir(run.dir))
                    continue
                run.set_status(status, error=error)
            except (RunStoreError, OSError) as exc:  # still unwritable: try again on the next pass
                log.warning("run %s: could not end it after its job ended: %s", run_id, exc)
                continue
            log.warning("run %s was active with no job; marked %s: %s", run_id, status, error)
            fixed.append(run_id)
        return fixed

    # ---- helpers ----------------------------------------------------------------------------

    def outcome(self, job: Job, failure: str) -> tuple[Status, str | None]:
        """How a job whose process ended should end, given the cancel flag and the run's own status."""
        if job.cancel_requested:
            return Status.CANCELLED, "cancelled by the user"
        try:
            meta = self.store.open_run(job.run_id).meta
        except RunStoreError:
            meta = {}
        if meta.get("status") == Status.DONE:
            return Status.DONE, None
        return Status.FAILED, (f"{failure}: {meta['error']}" if meta.get("error") else failure)

    def _kill_if_alive(self, pid: int, start: int | None) -> None:
        if process_alive(pid, start):
            log.warning("process group %s did not stop within %.0f s of SIGTERM; sending SIGKILL", pid, self.grace_s)
            signal_group(pid, signal.SIGKILL)

    def _has_checkpoint(self, run_id: str) -> bool:
        try:
            return self.store.open_run(run_id).latest_checkpoint() is not None
        except RunStoreError:
            return False

    def _save(self, job: Job) -> None:
        try:
            self.store.open_run(job.run_id).save_job(job.to_row())
        except (RunStoreError, OSError) as exc:  # the run dir may be gone; the index row still holds it
            log.warning("job %s: could not write jobs.json of run %s: %s", job.job_id, job.run_id, exc)

    def _sync_run(self, job: Job, status: Status, error: str | None) -> None:
        try:
            run = self.store.open_run(job.run_id)
            current = run.meta["status"]
            if current != status and current != Status.DONE:
                run.set_status(status, **({"error": error} if error else {}))
        except (RunStoreError, OSError) as exc:
            log.warning("job %s: could not set run %s to %s: %s", job.job_id, job.run_id, status, exc)


# The worker that runs these jobs is pss.runs.worker.Worker: it imports this module, never the other way round.
__all__ = ["RAY_DEVICE_PREFIX", "Job", "JobQueue", "on_ray"]
