"""The job worker: a thread that reaps lost jobs and starts queued ones as separate processes.

See ``pss.runs.jobs`` for the job life cycle; this module only runs processes.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from pss.errors import RunStoreError
from pss.runs.jobs import Job, JobQueue
from pss.runs.procs import describe_exit, signal_group
from pss.runs.store import RunStore
from pss.runs.warm import is_module_command, order_line
from pss.status import Status

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    """Background thread: reap, then start queued jobs, one per device, as separate processes.

    Each job runs ``subprocess.Popen(command, start_new_session=True)`` with stdout and stderr
    appended to the run's log.txt and ``PSS_JOB_ID``/``PSS_RUN_ID``/``PSS_DEVICE`` in its
    environment. ``stop()`` ends the thread but not the jobs: they keep running, and a later
    worker adopts them (see ``JobQueue.reap``). ``run_once()`` performs one iteration (for tests
    and for callers that poll themselves).

    With ``warm=True`` the worker keeps one pre-started job process (``pss.runs.warm``: torch and the
    training code already imported) while no job of its own runs, and hands it the next ``python -m``
    command: the job starts ~5 s sooner. A job that finds no spare ready starts cold, as without it.
    """

    def __init__(self, store: RunStore, devices: Iterable[str], poll_s: float = 1.0,
                 queue: JobQueue | None = None, warm: bool = False) -> None:
        super().__init__(name="pss-job-worker", daemon=True)
        self.store = store
        self.devices = list(devices)
        self.poll_s = poll_s
        self.queue = queue or JobQueue(store)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._children: dict[str, tuple[subprocess.Popen, str]] = {}
        self.warm = warm
        self._spare: subprocess.Popen | None = None

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.run_once()
            except Exception:  # the worker must outlive any one bad job or transient DB error
                log.exception("job worker: iteration failed; retrying in %.1f s", self.poll_s)
            self._stop_event.wait(self.poll_s)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the thread after its current iteration (running jobs are left running; the spare ends)."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
            spare.wait()

    @property
    def running(self) -> dict[str, int]:
        """job id → pid of the jobs this worker started and has not yet seen end."""
        with self._lock:
            return {job_id: proc.pid for job_id, (proc, _) in self._children.items()}

    def run_once(self) -> list[str]:
        """Collect ended children, reap lost jobs, start what can start; returns the started job ids."""
        with self._lock:
            self._collect()
            self.queue.reap(exclude=list(self._children))
            started: list[str] = []
            while True:
                busy = {device for _, device in self._children.values()}
                job = self.queue.next_runnable(busy, devices=self.devices)
                if job is None:
                    if not self._children and not self._stop_event.is_set():
                        self._ready_spare()  # only while idle: its imports would slow a starting job
                    return started
                self._launch(job)
                started.append(job.job_id)

    def _collect(self) -> None:
        for job_id, (proc, _) in list(self._children.items()):
            returncode = proc.poll()
            if returncode is None:
                continue
            del self._children[job_id]
            job = self.queue.get(job_id)
            if job.status != Status.RUNNING:
                continue
            if returncode == 0 and not job.cancel_requested:
                self.queue.mark_ended(job_id, Status.DONE)
            else:
                status, error = self.queue.outcome(job, f"{describe_exit(returncode)}; see the run's log")
                self.queue.mark_ended(job_id, status, error)

    def _launch(self, job: Job) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PSS_JOB_ID": job.job_id, "PSS_RUN_ID": job.run_id,
               "PSS_DEVICE": job.device}
        try:
            run = self.store.open_run(job.run_id)
            run.log(f"job {job.job_id}: starting on {job.device}: {shlex.join(job.command)}")
            proc = self._hand_to_spare(job.command, env, run.dir / "log.txt")
            if proc is None:
                with open(run.dir / "log.txt", "ab") as log_file:
                    proc = subprocess.Popen(job.command, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except Exception as exc:  # any failure to start is this job's failure, not the worker's
            log.exception("job %s: could not start", job.job_id)
            self.queue.mark_ended(job.job_id, Status.FAILED, f"could not start the job: {exc}")
            return
        self._children[job.job_id] = (proc, job.device)
        try:
            job = self.queue.mark_running(job.job_id, proc.pid)
        except RunStoreError as exc:
            log.warning("%s", exc)
            signal_group(proc.pid, signal.SIGKILL)
            return
        if job.cancel_requested:  # Cancel was pressed between the claim and the start
            self.queue.cancel(job.job_id)

    # -- the pre-started job process ----------------------------------------------------------------------
    def _ready_spare(self) -> None:
        if not self.warm or (self._spare is not None and self._spare.poll() is None):
            return
        self._spare = subprocess.Popen([sys.executable, "-m", "pss.runs.warm"], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)

    def _hand_to_spare(self, command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen | None:
        """Give ``command`` to the ready spare; None when there is none or it cannot take this command."""
        if self._spare is None or not is_module_command(command):
            return None
        spare, self._spare = self._spare, None
        if spare.poll() is not None:
            return None
        try:
            if spare.stdin is None:  # not expected: _ready_spare opens it with stdin=PIPE; start the job cold
                raise OSError("the spare job process has no stdin pipe")
            spare.stdin.write(order_line(command, env, os.getcwd(), str(log_path)))
            spare.stdin.close()
        except OSError:  # it died meanwhile (or has no pipe): start the job cold
            spare.kill()
            spare.wait()
            return None
        return spare
