"""SQLite index of the run store (``WS/runs/index.sqlite``): one row per run, one row per job.

The run directories are the source of truth; this index exists so the app and the CLI can list,
filter and poll runs without opening every directory, and so jobs can be claimed atomically.
It can always be rebuilt with ``RunStore.reindex()``.

Concurrency: the app is multi-threaded and training runs in other processes, so no connection is
shared: each thread of each process has its own (``Index.connect``; reopened after a fork or when
the index file was deleted), in WAL mode (readers never block the writer) with a busy timeout
(writers wait for each other instead of failing).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pss.errors import RunStoreError
from pss.status import ACTIVE, Status

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 15_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, user TEXT, method TEXT NOT NULL, status TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, device TEXT,
    steps INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0,
    fiou REAL, miou REAL, duration_s REAL, config_json TEXT NOT NULL DEFAULT '{}', dir TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE INDEX IF NOT EXISTS runs_user ON runs (user, method, status);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, status TEXT NOT NULL, device TEXT NOT NULL,
    pid INTEGER, proc_start INTEGER, command_json TEXT NOT NULL, created TEXT NOT NULL,
    started TEXT, ended TEXT, error TEXT, resumable INTEGER NOT NULL DEFAULT 0, cancel_requested TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, device, created);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs (run_id);
"""


@dataclass
class RunRecord:
    """One row of the ``runs`` table. ``dir`` is the run directory (stored relative to the runs root).

    ``fiou``/``miou`` are the final evaluation scores (None until evaluated); ``steps`` is the
    highest step logged so far; times are ISO 8601 UTC strings.
    """

    run_id: str
    user: str | None
    method: str
    status: str  # a pss.status.Status value, as stored
    created: str
    updated: str
    device: str | None
    steps: int
    total_steps: int
    fiou: float | None
    miou: float | None
    duration_s: float | None
    config_json: str
    dir: Path

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config as a dict (parsed from ``config_json``)."""
        return json.loads(self.config_json)

    @property
    def progress(self) -> float:
        """Fraction of ``total_steps`` done, in [0, 1] (0 when total_steps is 0)."""
        return min(1.0, self.steps / self.total_steps) if self.total_steps > 0 else 0.0


_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must keep but never use


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def status_in(statuses: Iterable[Status], column: str = "status") -> str:
    """SQL condition ``<column> IN ('a', 'b')`` for a fixed set of statuses (constants, never user input), e.g.
    ``status_in(ACTIVE, "jobs.status")``; built from ``pss.status`` so the queries and the enum cannot drift apart."""
    return f"{column} IN ({', '.join(repr(Status(s).value) for s in statuses)})"


#: "the job or run may still change" (queued or running), for the queries of store.py and jobs.py
ACTIVE_SQL = status_in(ACTIVE)

RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))
JOB_COLUMNS = ("job_id", "run_id", "status", "device", "pid", "proc_start", "command_json", "created",
               "started", "ended", "error", "resumable", "cancel_requested")


class Index:
    """Connections and schema of ``index.sqlite``; the runs-table queries live here too.

    ``fresh`` is True when this object created the tables (a new or out-of-date index), in which
    case the store fills it from the run directories.
    """

    def __init__(self, path: Path, on_fresh: Callable[[], object] | None = None) -> None:
        self.path = path
        self.root = path.parent
        self.fresh = False
        self._on_fresh = on_fresh
        self._local = threading.local()
        self._initializing = False
        self._init_schema()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, (re)opened when missing, inherited across fork, or when the
        index file was deleted or replaced (then the schema is recreated and ``on_fresh`` called)."""
        inode = _inode(self.path)
        cached = getattr(self._local, "cached", None)
        if cached is not None:
            pid, cached_inode, conn = cached
            if pid == os.getpid() and cached_inode == inode:
                return conn
            self._discard()
        if inode is None and not self._initializing:
            self._init_schema()  # deleted while in use: recreate it, refilled by on_fresh
            if self.fresh and self._on_fresh is not None:
                self._on_fresh()
            return self._connection()
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise RunStoreError(f"cannot open the run index {self.path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL; the dirs are the truth
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) or RunStoreError(f"cannot open the run index {self.path}: {exc}") from exc
        self._local.cached = (os.getpid(), _inode(self.path), conn)
        return conn

    def _discard(self) -> None:
        pid, _, conn = self._local.cached
        self._local.cached = None
        if pid == os.getpid():
            conn.close()
        else:  # never close (or use) a connection inherited across fork: SQLite forbids it
            _INHERITED.append(conn)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        if getattr(self._local, "cached", None) is not None:
            self._discard()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's autocommit connection, for one operation.

        Connections are kept per thread, not per operation: closing the last connection to a WAL
        database checkpoints it (tens of ms), which would be paid on every logged event.
        """
        conn = self._connection()
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc

    def _error(self, exc: sqlite3.Error) -> RunStoreError | None:
        """The RunStoreError (with advice) for a lock timeout or a corrupt file; None for others."""
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return RunStoreError(
                f"the run index {self.path} stayed locked for {BUSY_TIMEOUT_MS / 1000:.0f} s ({exc}): another "
                "process holds a long write; retry, and check for a stuck process using the workspace")
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in str(exc) or "malformed" in str(exc)):
            self.close()
            return RunStoreError(
                f"the run index {self.path} is corrupt ({exc}); delete it (and its -wal/-shm files): "
                "RunStore rebuilds it from the run directories")
        if isinstance(exc, sqlite3.OperationalError) and any(
                word in str(exc) for word in ("readonly", "read-only", "disk I/O", "unable to open", "full")):
            return RunStoreError(
                f"cannot write the run index {self.path} ({exc}): the index, its -wal/-shm files or the runs folder "
                "is read-only (permissions, chattr +i, a read-only mount) or the disk is full; make them writable "
                "(or free space) and retry — nothing was started")
        return None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: takes the write lock up front, so a read-then-write
        (claiming a job) cannot interleave with another writer's."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._initializing = True
        try:
            self._create_tables()
        finally:
            self._initializing = False

    def _create_tables(self) -> None:
        self.fresh = False
        with self.connect() as conn:
            # journal_mode is persistent and cannot change inside a transaction
            conn.execute("PRAGMA journal_mode = WAL")
        with self.transaction() as conn:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
            row = conn.execute("SELECT version FROM schema_version").fetchone() if has_table else None
            if row is not None and row[0] > SCHEMA_VERSION:
                raise RunStoreError(
                    f"the run index {self.path} has schema version {row[0]}, newer than this pss "
                    f"(version {SCHEMA_VERSION}); upgrade pss, or delete the index to rebuild it from the "
                    "run directories"
                )
            if row is not None and row[0] == SCHEMA_VERSION:
                return
            # new index, or an older schema: the index is derived data, so rebuild it
            for table in ("runs", "jobs", "schema_version"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            self.fresh = True

    # ---- runs table -------------------------------------------------------------------------

    def _record(self, row: sqlite3.Row) -> RunRecord:
        values = {name: row[name] for name in RUN_COLUMNS}
        values["dir"] = self.root / row["dir"]
        return RunRecord(**values)

    def upsert_run(self, record: RunRecord, conn: sqlite3.Connection | None = None) -> None:
        """Insert or replace the row of ``record.run_id``."""
        values = [getattr(record, name) for name in RUN_COLUMNS]
        values[RUN_COLUMNS.index("dir")] = Path(record.dir).name
        sql = f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(values))})"
        if conn is not None:
            conn.execute(sql, values)
            return
        with self.connect() as own:
            own.execute(sql, values)

    def update_run(self, run_id: str, **columns: Any) -> bool:
        """Set ``columns`` of one row; False when the row does not exist."""
        unknown = set(columns) - set(RUN_COLUMNS)
        if unknown:
            raise RunStoreError(f"unknown runs column(s) {sorted(unknown)}; known: {', '.join(RUN_COLUMNS)}")
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self.connect() as conn:
            cur = conn.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*columns.values(), run_id])
            return cur.rowcount > 0

    def bump_steps(self, run_id: str, step: int, updated: str) -> None:
        """Record progress; MAX() so events from several writers arrive in any order."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE runs SET steps = MAX(steps, ?), updated = MAX(updated, ?) WHERE run_id = ?",
                (step, updated, run_id),
            )

    def get_run(self, run_id: str) -> RunRecord | None:
        """The row of ``run_id``, or None."""
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else self._record(row)

    def query_runs(self, user: str | None = None, method: str | None = None,
                   status: str | None = None, search: str | None = None) -> list[RunRecord]:
        """Rows matching every given filter, newest first. ``search`` is a case-insensitive
        substring of the run id, user, method, status, device or config."""
        where, args = [], []
        for name, value in (("user", user), ("method", method), ("status", status)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(run_id || ' ' || IFNULL(user, '') || ' ' || method || ' ' || status || ' ' || "
                         "IFNULL(device, '') || ' ' || config_json) LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        with self.connect() as conn:
            rows = conn.execute(sql + " ORDER BY created DESC, run_id DESC", args).fetchall()
        return [self._record(row) for row in rows]

    def delete_run(self, run_id: str) -> None:
        """Remove the run's row and its jobs' rows."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
