"""Runs that start after another run finishes: the job service's "start after run X" (``JobService.launch(after=)``).

The job queue runs queued jobs in order, one per device; it has no notion of one job needing another's result.
A second stage (OURS-S2 from OURS-S1) or an adaptation run from a No-DA model (``train.init_from``) can only start
once that run is done and has its final checkpoint. Such a launch creates its run (status ``queued``, config saved)
at once, and writes ``WS/runs/RUN/waiting.json`` (the run it waits for, the job's command and device) instead of
queueing a job. ``release`` — called by the service's worker before each of its iterations — turns it into an
ordinary queued job when the awaited run is ``done``, or cancels the run (with the reason as its error) when the
awaited run ended ``failed`` / ``cancelled`` or was deleted; runs waiting for that one then follow on the next pass.

The waiting state lives in the run directory, so it survives an app restart (the next service releases it) and goes
away with the run. Two services releasing at once are safe: the queue refuses a second job for a run.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pss.errors import RunStoreError
from pss.runs import JobQueue, RunStore, Worker
from pss.runs.files import now_iso, read_json, write_json_atomic
from pss.status import ACTIVE, Status

log = logging.getLogger(__name__)

WAITING_FILE = "waiting.json"
GIVE_UP_STATUSES = (Status.FAILED, Status.CANCELLED)  # the awaited run ended without its final checkpoint


def defer(store: RunStore, run_id: str, after: str, command: list[str], device: str) -> None:
    """Mark the queued run ``run_id`` as waiting for ``after``; its job (``command`` on ``device``) is queued later."""
    write_json_atomic(store.run_dir(run_id) / WAITING_FILE,
                      {"after": after, "command": list(command), "device": device, "since": now_iso()})


def waiting_for(store: RunStore, run_id: str) -> str | None:
    """The run id ``run_id`` waits for, or None when it does not wait (anymore)."""
    entry = _entry(store.run_dir(run_id))
    return entry["after"] if entry else None


def _entry(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / WAITING_FILE
    if not path.exists():
        return None
    try:
        entry = read_json(path, "waiting record")
    except RunStoreError as exc:
        log.warning("%s", exc)
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("after"), str) else None


def _done_waiting(run_dir: Path) -> None:
    (run_dir / WAITING_FILE).unlink(missing_ok=True)


def cancel_waiting(store: RunStore, run_id: str, reason: str = "cancelled by the user before it started") -> bool:
    """Cancel a waiting run (it never had a job); False when it is not waiting."""
    run_dir = store.run_dir(run_id)
    if _entry(run_dir) is None:
        return False
    _done_waiting(run_dir)
    store.open_run(run_id).set_status(Status.CANCELLED, error=reason)
    return True


def release(store: RunStore, queue: JobQueue) -> list[str]:
    """Queue the job of every waiting run whose awaited run is done; cancel those whose awaited run cannot finish.

    Returns the run ids that stopped waiting (queued or cancelled).
    """
    changed: list[str] = []
    for record in store.list_runs(status=Status.QUEUED):
        run_dir = store.run_dir(record.run_id)
        entry = _entry(run_dir)
        if entry is None:
            continue
        after = entry["after"]
        parent = store.index.get_run(after)
        status = parent.status if parent is not None else None
        if status in ACTIVE:
            continue
        try:
            if queue.latest_job(record.run_id) is not None:
                pass  # released before (e.g. by another app) but the file was left behind
            elif status == Status.DONE:
                queue.enqueue(record.run_id, entry["command"], entry["device"])
            else:
                why = f"ended {status}" if status in GIVE_UP_STATUSES else "was deleted"
                store.open_run(record.run_id).set_status(
                    Status.CANCELLED, error=f"not started: the run it starts from, {after}, {why}; "
                                       "resume or relaunch that run, then launch this one again")
        except RunStoreError as exc:  # another service released it meanwhile, or the run was deleted
            log.info("waiting run %s: %s", record.run_id, exc)
        _done_waiting(run_dir)
        changed.append(record.run_id)
    return changed


class ReleasingWorker(Worker):
    """The job worker, releasing waiting runs before each iteration (so a run queued by its parent's end starts in
    the same iteration that collects the parent's process)."""

    def run_once(self) -> list[str]:
        try:
            release(self.store, self.queue)
        except (RunStoreError, OSError):
            log.exception("releasing waiting runs failed; retrying at the next poll")
        return super().run_once()
