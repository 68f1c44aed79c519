"""The run store: one directory per run under ``WS/runs/<run_id>/`` plus the SQLite index.

Layout of a run directory (the source of truth; the index is rebuilt from it by ``reindex``)::

    run.json         format version, identity, status, device, config summary, code version, seed, timings
    config.yaml      the resolved config, exactly as the caller gave it
    metrics.jsonl    one event per line: {"step", "time", "kind", <values>}
    log.txt          human log lines and the job process's stdout/stderr
    report.json      the final evaluation
    jobs.json        the job records of this run (so a deleted index loses no job)
    checkpoints/ predictions/ maps/

Example::

    store = RunStore(Path("WS/runs"))
    run = store.create_run("id1", "pss", config, device="cpu", total_steps=200)
    run.set_status("running")
    run.log_event("train", step=1, loss_seg=0.71)
    run.set_status("done", fiou=0.61, miou=0.48)
    [r.run_id for r in store.list_runs(user="id1")]
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pss.errors import RunStoreError
from pss.runs.files import (epoch_to_iso, now_iso, read_json, read_jsonl, read_yaml, write_json_atomic,
                            write_yaml_atomic)
from pss.runs.index import ACTIVE_SQL, JOB_COLUMNS, Index, RunRecord
from pss.runs.meta import FORMAT_VERSION, check_format, code_version, config_summary, find_seed
from pss.runs.run import Run
from pss.status import Status

__all__ = ["FORMAT_VERSION", "Run", "RunRecord", "RunStore", "ReindexResult"]

log = logging.getLogger(__name__)

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SUBDIRS = ("checkpoints", "predictions", "maps")
_STALE_S = 3600.0  # a hidden staging/trash dir older than this was left by a crash


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_.") or "x"


def new_run_id(method: str, user: str | None) -> str:
    """``<UTC yyyymmdd-HHMMSS>-<method>[-<user>]-<4 hex>``: sorts by creation time, reads at a glance."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parts = [stamp, _slug(method)] + ([_slug(user)] if user else []) + [secrets.token_hex(2)]
    return "-".join(parts)


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe folder name, else raise RunStoreError."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise RunStoreError(
            f"invalid run id {run_id!r}: use letters, digits, '_', '.', '-' (no path separators), "
            "starting with a letter or digit, at most 128 characters"
        )
    return run_id


@dataclass
class ReindexResult:
    """What ``reindex`` did: how many runs it indexed, and ``(directory, reason)`` for each it skipped."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class RunStore:
    """All runs of one workspace: ``RunStore(WS / "runs")``.

    Cheap to construct, holds no open connection, safe to use from several threads and processes.
    A missing or out-of-date ``index.sqlite`` is rebuilt from the run directories on construction.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.index = Index(self.root / "index.sqlite", on_fresh=self.reindex)
        if self.index.fresh:
            self.reindex()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def run_dir(self, run_id: str) -> Path:
        """Directory of ``run_id`` (validated; may not exist)."""
        return self.root / check_run_id(run_id)

    def create_run(self, user: str | None, method: str, config: dict, device: str, total_steps: int,
                   run_id: str | None = None) -> Run:
        """Create a run directory (status ``queued``) and its index row; returns the open Run.

        The directory is assembled under a hidden name and renamed into place, so a crash never
        leaves a half-created run that listing or reindexing would trip over.
        """
        if not isinstance(config, dict):
            raise RunStoreError(f"config must be a dict (the resolved config), got {type(config).__name__}")
        run_id = check_run_id(run_id) if run_id is not None else new_run_id(method, user)
        final = self.root / run_id
        if final.exists():
            raise RunStoreError(f"run {run_id} already exists in {self.root}; pick another run id")
        staging = self.root / f".creating-{run_id}-{secrets.token_hex(3)}"
        staging.mkdir()
        try:
            created = now_iso()
            meta = {
                "format_version": FORMAT_VERSION, "run_id": run_id, "created": created, "updated": created,
                "user": user, "method": method, "status": Status.QUEUED.value, "device": device,
                "total_steps": int(total_steps), "config_summary": config_summary(config),
                "code_version": code_version(), "seed": find_seed(config), "error": None,
                "fiou": None, "miou": None,
                "timings": {"created": created, "started": None, "ended": None, "duration_s": None},
            }
            write_yaml_atomic(staging / "config.yaml", config)
            write_json_atomic(staging / "run.json", meta)
            for name in _SUBDIRS:
                (staging / name).mkdir()
            (staging / "log.txt").touch()
            (staging / "metrics.jsonl").touch()
            os.rename(staging, final)  # fails if the id was taken meanwhile: never merges two runs
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            self.index.upsert_run(self.record_from_dir(final))
        except BaseException:
            # not in the index = not a run the app can see or cancel: leave nothing behind (a later reindex
            # would list it as queued forever)
            shutil.rmtree(final, ignore_errors=True)
            raise
        return Run(self, final)

    def open_run(self, run_id: str) -> Run:
        """Open an existing run; RunStoreError if it is missing, corrupt or of another format."""
        path = self.run_dir(run_id)
        if not (path / "run.json").exists():
            raise RunStoreError(f"no run {run_id!r} in {self.root}; list the runs with `pss runs`")
        run = Run(self, path)
        _ = run.meta  # read only to validate run.json (format version, JSON) now rather than on first use
        return run

    def list_runs(self, user: str | None = None, method: str | None = None, status: str | None = None,
                  search: str | None = None) -> list[RunRecord]:
        """Index rows matching all given filters, newest first (see ``Index.query_runs``)."""
        return self.index.query_runs(user=user, method=method, status=status, search=search)

    def delete_run(self, run_id: str) -> None:
        """Delete a run: its directory and its index rows (runs and jobs).

        Raises:
            RunStoreError: if a job of the run is queued or running (cancel it first).
        """
        path = self.run_dir(run_id)
        with self.index.connect() as conn:
            active = conn.execute(f"SELECT job_id, status FROM jobs WHERE run_id = ? AND {ACTIVE_SQL}",
                                  (run_id,)).fetchone()
        if active is not None:
            raise RunStoreError(f"run {run_id} has job {active['job_id']} {active['status']}; cancel it "
                                "before deleting the run")
        if not path.exists() and self.index.get_run(run_id) is None:
            raise RunStoreError(f"no run {run_id!r} in {self.root}")
        if path.exists():
            # rename first (atomic): from here on the run is gone for readers and reindex
            trash = self.root / f".deleting-{run_id}-{secrets.token_hex(3)}"
            os.rename(path, trash)
            self.index.delete_run(run_id)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.index.delete_run(run_id)

    def discard_run(self, run_id: str) -> None:
        """Undo ``create_run`` for a launch that failed after it: remove the directory, then the index rows if
        the index can still be written (if not, ``JobQueue.reconcile_runs`` drops the row once it can)."""
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        try:
            self.index.delete_run(run_id)
        except (RunStoreError, sqlite3.Error, OSError) as exc:
            log.warning("run %s: directory removed but its index row stays for now: %s", run_id, exc)

    def reindex(self) -> ReindexResult:
        """Rebuild the index from the run directories: rows for every readable run, rows of deleted
        runs removed, jobs restored from each run's ``jobs.json``. Unreadable runs are skipped and
        returned with the reason (logged as warnings)."""
        result = ReindexResult()
        records, jobs = [], []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                if path.name.startswith((".creating-", ".deleting-")) and path.is_dir() \
                        and time.time() - path.stat().st_mtime > _STALE_S:
                    shutil.rmtree(path, ignore_errors=True)  # left over by a crash (not one in progress)
                continue
            if not (path / "run.json").exists():
                continue
            try:
                records.append(self.record_from_dir(path))
                jobs.extend(_read_jobs_file(path))
            except RunStoreError as exc:
                log.warning("reindex: skipping %s: %s", path, exc)
                result.skipped.append((str(path), str(exc)))
        with self.index.transaction() as conn:
            keep = {r.run_id for r in records}
            for (run_id,) in conn.execute("SELECT run_id FROM runs").fetchall():
                if run_id not in keep:
                    conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            for record in records:
                self.index.upsert_run(record, conn)
            conn.execute(f"DELETE FROM jobs WHERE run_id NOT IN ({', '.join('?' * len(keep))})", list(keep))
            for job in jobs:  # OR IGNORE: an existing row is at least as fresh as jobs.json
                job = {k: v for k, v in job.items() if k in JOB_COLUMNS}  # names from a file never reach SQL
                conn.execute(f"INSERT OR IGNORE INTO jobs ({', '.join(job)}) VALUES ({', '.join('?' * len(job))})",
                             list(job.values()))
        result.indexed = len(records)
        return result

    def record_from_dir(self, path: Path) -> RunRecord:
        """Build the index row of a run from its directory (run.json, config.yaml, metrics.jsonl)."""
        meta = check_format(read_json(path / "run.json", "run record"), path / "run.json")
        config = read_yaml(path / "config.yaml", "run config") or {}
        steps, updated = 0, meta.get("updated") or meta["created"]
        metrics = path / "metrics.jsonl"
        if metrics.exists():
            steps = max((int(e["step"]) for e in read_jsonl(metrics) if isinstance(e.get("step"), int)),
                        default=0)
            updated = max(updated, epoch_to_iso(metrics.stat().st_mtime))
        timings = meta.get("timings") or {}
        return RunRecord(
            run_id=meta["run_id"], user=meta.get("user"), method=meta["method"], status=meta["status"],
            created=meta["created"], updated=updated, device=meta.get("device"), steps=steps,
            total_steps=int(meta.get("total_steps") or 0), fiou=meta.get("fiou"), miou=meta.get("miou"),
            duration_s=timings.get("duration_s"), config_json=json.dumps(config, sort_keys=True), dir=path,
        )


def _read_jobs_file(path: Path) -> list[dict[str, Any]]:
    jobs_file = path / "jobs.json"
    if not jobs_file.exists():
        return []
    data = read_json(jobs_file, "job records")
    return list(data.values()) if isinstance(data, dict) else []
