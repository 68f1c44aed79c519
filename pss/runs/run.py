"""One run directory: its record, config, events, status, report, checkpoints and log.

Obtain a ``Run`` from ``RunStore.create_run`` or ``RunStore.open_run``; it holds no open file or
connection, so it may be used from any thread, and several processes may write to the same run
(events are line-atomic appends; run.json updates are serialised by a lock file).
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pss.errors import RunStoreError
from pss.runs.files import (append_line, iso_to_epoch, json_safe, locked, now_iso, read_json, read_jsonl,
                            read_yaml, tail_lines, write_json_atomic)
from pss.runs.index import RunRecord
from pss.runs.meta import check_format
from pss.status import FINISHED, Status

if TYPE_CHECKING:
    from pss.runs.store import RunStore

log = logging.getLogger(__name__)

_CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")
#: fields ``set_status`` accepts besides the status (stored in run.json and the index row)
STATUS_FIELDS = ("fiou", "miou", "duration_s", "error", "steps")


class Run:
    """A run directory, with the operations the engine, the CLI and the app perform on it."""

    def __init__(self, store: RunStore, path: Path) -> None:
        self.store = store
        self.dir = Path(path)
        self.run_id = self.dir.name
        self._config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Run({self.run_id!r})"

    # ---- identity and records ---------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        """run.json as a dict, read fresh (validated: RunStoreError if corrupt or of another format)."""
        path = self.dir / "run.json"
        return check_format(read_json(path, "run record"), path)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config saved in config.yaml (read once; it never changes)."""
        if self._config is None:
            self._config = read_yaml(self.dir / "config.yaml", "run config") or {}
        return self._config

    @property
    def record(self) -> RunRecord:
        """The run's index row (re-indexed from the directory if the row is missing)."""
        record = self.store.index.get_run(self.run_id)
        if record is None:
            self.store.index.upsert_run(self.store.record_from_dir(self.dir))
            record = self.store.index.get_run(self.run_id)
        if record is None:  # pragma: no cover - only if another process deletes the run meanwhile
            raise RunStoreError(f"run {self.run_id} disappeared from {self.store.root} while being read")
        return record

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def predictions_dir(self) -> Path:
        return self.dir / "predictions"

    @property
    def maps_dir(self) -> Path:
        return self.dir / "maps"

    # ---- events -----------------------------------------------------------------------------

    def log_event(self, kind: str, step: int, **values: Any) -> None:
        """Append ``{"step", "time", "kind", **values}`` to metrics.jsonl and bump the index row.

        Values must be JSON-able (numbers, strings, lists, dicts; tensors/arrays are converted);
        NaN and inf are stored as null. The index update is best effort: the event line is the
        record, and ``reindex`` recovers the row from it.
        """
        if "time" in values:
            raise RunStoreError("log_event: 'time' is set by the run store; rename that value")
        event = {"step": int(step), "time": time.time(), "kind": str(kind),
                 **json_safe(values, f"event {kind!r} of run {self.run_id}")}
        append_line(self.dir / "metrics.jsonl", json.dumps(event, allow_nan=False))
        try:
            self.store.index.bump_steps(self.run_id, int(step), now_iso())
        except (sqlite3.Error, RunStoreError) as exc:
            log.warning("run %s: index not updated for step %s (%s); run RunStore.reindex()", self.run_id, step, exc)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All events in file order (only those of ``kind`` if given); a truncated last line is ignored."""
        return [e for e in read_jsonl(self.dir / "metrics.jsonl") if kind is None or e.get("kind") == kind]

    # ---- status -----------------------------------------------------------------------------

    def set_status(self, status: Status | str, **fields: Any) -> None:
        """Set the run's status and optional ``fiou``, ``miou``, ``duration_s``, ``error``, ``steps``.

        ``running`` stamps ``timings.started``; a terminal status (done/failed/cancelled) stamps
        ``timings.ended`` and, unless ``duration_s`` is given, the duration since the last start.
        """
        if status not in tuple(Status):
            raise RunStoreError(f"unknown run status {status!r}; expected one of {', '.join(Status)}")
        status = Status(status).value  # stored as the plain string (run.json, index), whatever the caller passed
        unknown = set(fields) - set(STATUS_FIELDS)
        if unknown:
            raise RunStoreError(f"set_status: unknown field(s) {sorted(unknown)}; accepted: {', '.join(STATUS_FIELDS)}")
        fields = json_safe(fields, "set_status fields")
        now = now_iso()
        with locked(self.dir / ".lock"):
            meta = self.meta
            timings = meta.setdefault("timings", {})
            if status == Status.RUNNING:
                timings.update(started=now, ended=None, duration_s=None)
                meta["error"] = None
            elif status in FINISHED:
                timings["ended"] = now
                started = iso_to_epoch(timings.get("started"))
                if "duration_s" in fields:
                    timings["duration_s"] = fields["duration_s"]
                elif started is not None:
                    timings["duration_s"] = round(iso_to_epoch(now) - started, 3)
            meta.update(status=status, updated=now,
                        **{k: v for k, v in fields.items() if k in ("fiou", "miou", "error")})
            write_json_atomic(self.dir / "run.json", meta)
        columns: dict[str, Any] = {"status": status, "updated": now, "duration_s": timings.get("duration_s")}
        columns.update({k: v for k, v in fields.items() if k in ("fiou", "miou", "steps")})
        if not self.store.index.update_run(self.run_id, **columns):
            self.store.index.upsert_run(self.store.record_from_dir(self.dir))

    # ---- report, checkpoints, log -----------------------------------------------------------

    def write_report(self, report: dict[str, Any]) -> None:
        """Save the final evaluation as report.json (atomically; NaN → null)."""
        write_json_atomic(self.dir / "report.json", report)

    def read_report(self) -> dict[str, Any] | None:
        """The saved report.json, or None before the run was evaluated."""
        path = self.dir / "report.json"
        return read_json(path, "run report") if path.exists() else None

    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint of ``step`` goes: ``checkpoints/step_<step, 8 digits>.pt``."""
        if int(step) < 0:
            raise RunStoreError(f"checkpoint step must be >= 0, got {step}")
        return self.checkpoints_dir / f"step_{int(step):08d}.pt"

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None (temporary files are ignored)."""
        if not self.checkpoints_dir.is_dir():
            return None
        found = [(int(m.group(1)), p) for p in self.checkpoints_dir.iterdir()
                 if (m := _CHECKPOINT_RE.match(p.name)) and p.is_file()]
        return max(found)[1] if found else None

    def log(self, msg: str) -> None:
        """Append a timestamped line to log.txt."""
        for line in str(msg).splitlines() or [""]:
            append_line(self.dir / "log.txt", f"{now_iso()} {line}")

    def tail_log(self, n: int = 50) -> list[str]:
        """The last ``n`` lines of log.txt (including the job process's output)."""
        return tail_lines(self.dir / "log.txt", n)

    # ---- job records (written by pss.runs.jobs) ---------------------------------------------

    def save_job(self, job: dict[str, Any]) -> None:
        """Store one job record in jobs.json (keyed by job_id), so ``reindex`` can restore it."""
        with locked(self.dir / ".lock"):
            path = self.dir / "jobs.json"
            jobs = read_json(path, "job records") if path.exists() else {}
            jobs[job["job_id"]] = job
            write_json_atomic(path, jobs)
