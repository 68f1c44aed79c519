"""Faults of the run store: an index that cannot be written at launch, a job that ended without its run being told,
a run whose job was never queued. Launch fully happens or leaves nothing; the worker's reaping ends stuck runs."""
from __future__ import annotations

import contextlib
import sqlite3
import sys

import pytest

from pss.api import Workspace
from pss.api.jobs import JobService
from pss.api.launch_form import LaunchRequest
from pss.errors import RunStoreError
from pss.runs import JobQueue, RunStore
from pss.runs.index import Index

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@contextlib.contextmanager
def _readonly_transaction(self: Index):
    """What SQLite raises inside a write when the index file is immutable (``chattr +i``) or read-only."""
    with self.connect():
        raise sqlite3.OperationalError("attempt to write a readonly database")
        yield


def test_launch_on_an_unwritable_index_leaves_nothing_behind(fresh_ws: Workspace, monkeypatch) -> None:
    svc = JobService(fresh_ws)  # not started: the launch alone is under test
    before = sorted(p.name for p in fresh_ws.runs.iterdir())
    # create_run gets through (its index row is written), then queueing the job and undoing the row both fail:
    # as with `chattr +i runs/index.sqlite` half-way through a launch
    monkeypatch.setattr(Index, "transaction", _readonly_transaction)
    with pytest.raises(RunStoreError, match=r"cannot write the run index .* read-only .* nothing was started"):
        svc.launch(LaunchRequest(user="id1", method="source_only", preset="tiny", steps=2))
    monkeypatch.undo()
    assert sorted(p.name for p in fresh_ws.runs.iterdir()) == before  # no run directory left
    stale = [r.run_id for r in svc.store.list_runs()]
    assert len(stale) == 1  # the row the failing index could not drop ...
    svc.queue.reap()  # ... goes on the worker's next pass, once the index is writable again
    assert svc.store.list_runs() == []


def test_a_run_whose_job_ended_without_telling_it_is_ended_by_the_worker(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    queue = JobQueue(store)
    run = store.create_run("id1", "source_only", {"train": {"steps": 2}}, "cpu", 2)
    job_id = queue.enqueue(run.run_id, SLEEP, "cpu")
    run.set_status("running")  # the job process got this far ...
    with store.index.connect() as conn:  # ... then its end reached only the jobs table (a failed write)
        conn.execute("UPDATE jobs SET status = 'failed', error = 'process 4242 is gone' WHERE job_id = ?",
                     (job_id,))
    assert store.index.get_run(run.run_id).status == "running"  # what showed "running · starting" forever
    queue.reap()
    record = store.index.get_run(run.run_id)
    assert record.status == "failed"
    assert store.open_run(run.run_id).meta["error"] == "process 4242 is gone"


def test_a_run_that_never_got_a_job_is_failed_after_a_grace_period(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    queue = JobQueue(store)
    run = store.create_run("id1", "source_only", {}, "cpu", 2)
    assert queue.reconcile_runs() == []  # a launch in progress: left alone
    assert queue.reconcile_runs(orphan_after_s=0) == [run.run_id]
    meta = store.open_run(run.run_id).meta
    assert meta["status"] == "failed" and "launch it again" in meta["error"]


def test_a_run_waiting_for_another_is_not_an_orphan(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    queue = JobQueue(store)
    run = store.create_run("id1", "pss_s2", {}, "cpu", 2)
    (run.dir / "waiting.json").write_text("{}")  # pss.api.waiting: queued later, when its first stage is done
    assert queue.reconcile_runs(orphan_after_s=0) == []
    assert store.index.get_run(run.run_id).status == "queued"


def test_a_run_that_finished_is_never_marked_failed(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    queue = JobQueue(store)
    run = store.create_run("id1", "source_only", {}, "cpu", 2)
    job_id = queue.enqueue(run.run_id, SLEEP, "cpu")
    run.set_status("done", fiou=0.5, miou=0.4)
    with store.index.connect() as conn:  # the index still says running; the run directory says done
        conn.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (run.run_id,))
        conn.execute("UPDATE jobs SET status = 'done' WHERE job_id = ?", (job_id,))
    queue.reap()
    assert store.index.get_run(run.run_id).status == "done"
