"""Run store: directories, atomic files, events, status, format versions, the SQLite index."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
from pathlib import Path

import pytest

from pss import fileio
from pss.errors import RunStoreError
from pss.runs import FORMAT_VERSION, JobQueue, RunStore
from pss.status import Status

CONFIG = {"seed": 7, "train": {"steps": 20, "lr": 0.01, "crop": [64, 64]}, "model": {"backbone": "tiny"}}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_create_open_list_delete_round_trip(store: RunStore) -> None:
    a = store.create_run("id1", "pss", CONFIG, device="cpu", total_steps=20)
    b = store.create_run(None, "source_only", {"train": {"seed": 3}}, device="cuda:0", total_steps=5)

    assert re.fullmatch(r"\d{8}-\d{6}-pss-id1-[0-9a-f]{4}", a.run_id)
    assert re.fullmatch(r"\d{8}-\d{6}-source_only-[0-9a-f]{4}", b.run_id)
    for name in ("run.json", "config.yaml", "metrics.jsonl", "log.txt"):
        assert (a.dir / name).is_file()
    for name in ("checkpoints", "predictions", "maps"):
        assert (a.dir / name).is_dir()

    opened = store.open_run(a.run_id)
    assert opened.config == CONFIG
    meta = opened.meta
    assert (meta["format_version"], meta["user"], meta["method"], meta["status"]) == (FORMAT_VERSION, "id1", "pss", "queued")
    assert (meta["seed"], meta["device"], meta["total_steps"]) == (7, "cpu", 20)
    assert meta["config_summary"]["train.lr"] == 0.01
    assert meta["code_version"]["pss"]
    assert store.open_run(b.run_id).meta["seed"] == 3  # found under train.seed

    assert {r.run_id for r in store.list_runs()} == {a.run_id, b.run_id}
    assert [r.run_id for r in store.list_runs(user="id1")] == [a.run_id]
    assert [r.run_id for r in store.list_runs(method="source_only")] == [b.run_id]
    assert [r.run_id for r in store.list_runs(search="CUDA:0")] == [b.run_id]  # case-insensitive, any column
    assert [r.run_id for r in store.list_runs(search="tiny")] == [a.run_id]  # inside the config
    assert store.list_runs(search="100%_") == []  # LIKE wildcards are literal
    record = a.record
    assert (record.user, record.method, record.status, record.total_steps, record.dir) == ("id1", "pss", "queued", 20, a.dir)
    assert record.config == CONFIG

    store.delete_run(a.run_id)
    assert not a.dir.exists()
    assert [r.run_id for r in store.list_runs()] == [b.run_id]
    with pytest.raises(RunStoreError, match="no run"):
        store.open_run(a.run_id)
    with pytest.raises(RunStoreError, match="already exists"):
        store.create_run(None, "x", {}, "cpu", 1, run_id=b.run_id)


def test_run_ids_are_validated(store: RunStore) -> None:
    with pytest.raises(RunStoreError, match="invalid run id"):
        store.open_run("../etc")
    with pytest.raises(RunStoreError, match="invalid run id"):
        store.create_run("id1", "pss", {}, "cpu", 1, run_id="a/b")
    run = store.create_run("id1", "pss", {}, "cpu", 1, run_id="my-run_1.0")
    assert run.dir == store.root / "my-run_1.0"


def test_events_json_safe_and_index_progress(store: RunStore) -> None:
    np = pytest.importorskip("numpy")
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    run.log_event("train", 1, loss=0.5, grad=float("nan"))
    run.log_event("train", 2, loss=float("inf"), lr=np.float32(0.25))
    run.log_event("eval", 2, miou=0.375, per_class=np.array([0.5, np.nan]))

    train = run.events("train")
    assert [(e["step"], e["loss"]) for e in train] == [(1, 0.5), (2, None)]
    assert train[0]["grad"] is None and train[1]["lr"] == 0.25
    assert run.events("eval")[0]["per_class"] == [0.5, None]
    assert [e["kind"] for e in run.events()] == ["train", "train", "eval"]
    lines = (run.dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("NaN" not in line and "Infinity" not in line for line in lines)
    assert run.record.steps == 2
    assert run.record.progress == pytest.approx(2 / 20)
    with pytest.raises(RunStoreError, match="cannot be stored as JSON"):
        run.log_event("train", 3, model=object())


def test_set_status_records_timings_and_scores(store: RunStore) -> None:
    run = store.create_run("id2", "advent", CONFIG, "cpu", 20)
    run.set_status("running")
    assert run.meta["timings"]["started"] is not None and run.record.status == "running"
    run.set_status("done", fiou=0.625, miou=0.5, duration_s=12.5)
    meta, record = run.meta, run.record
    assert (meta["status"], meta["fiou"], meta["miou"], meta["timings"]["duration_s"]) == ("done", 0.625, 0.5, 12.5)
    assert (record.status, record.fiou, record.miou, record.duration_s) == ("done", 0.625, 0.5, 12.5)
    assert [r.run_id for r in store.list_runs(status="done")] == [run.run_id]
    with pytest.raises(RunStoreError, match="unknown run status"):
        run.set_status("finished")
    with pytest.raises(RunStoreError, match="unknown field"):
        run.set_status("done", accuracy=1.0)


def test_statuses_are_stored_as_the_same_plain_strings(store: RunStore) -> None:
    """Status members and plain strings are accepted alike and stored as the strings workspaces always held."""
    run = store.create_run("id2", "advent", CONFIG, "cpu", 20)
    queue = JobQueue(store)
    job_id = queue.enqueue(run.run_id, ["true"], "cpu")
    queue.mark_ended(job_id, Status.CANCELLED, "stopped")
    run.set_status(Status.FAILED, error="boom")
    assert json.loads((run.dir / "run.json").read_text())["status"] == "failed"
    assert type(run.meta["status"]) is str and type(run.record.status) is str
    assert json.loads((run.dir / "jobs.json").read_text())[job_id]["status"] == "cancelled"
    with store.index.connect() as conn:
        assert conn.execute("SELECT status FROM runs").fetchone()[0] == "failed"
        assert conn.execute("SELECT status FROM jobs").fetchone()[0] == "cancelled"
    assert [r.run_id for r in store.list_runs(status=Status.FAILED)] == [run.run_id]


def test_report_checkpoints_and_log(store: RunStore) -> None:
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    assert run.read_report() is None
    run.write_report({"miou": 0.5, "per_class": [0.25, float("nan")]})
    assert run.read_report() == {"miou": 0.5, "per_class": [0.25, None]}

    assert run.latest_checkpoint() is None
    assert run.checkpoint_path(5).name == "step_00000005.pt"
    for step in (5, 100, 20):
        run.checkpoint_path(step).write_bytes(b"x")
    (run.checkpoints_dir / ".step_00000200.pt.abc.tmp").write_bytes(b"half")  # a crashed save
    assert run.latest_checkpoint() == run.checkpoint_path(100)

    for i in range(5):
        run.log(f"line {i}")
    tail = run.tail_log(2)
    assert [line.split(" ", 1)[1] for line in tail] == ["line 3", "line 4"]
    assert run.tail_log(0) == []


def test_crashed_atomic_write_leaves_old_file_and_ignored_temp(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    before = (run.dir / "run.json").read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(fileio.os, "replace", crash)  # the run store writes through pss.fileio
    with pytest.raises(OSError, match="simulated crash"):
        run.set_status("running")
    monkeypatch.undo()
    assert (run.dir / "run.json").read_text() == before  # the old file is whole

    # a temp file left by a process killed mid-write, and a half-created run directory
    (run.dir / ".run.json.k3j2.tmp").write_text('{"format_version": 1, "run_id": "tr')
    (store.root / ".creating-20260101-000000-pss-id9-0000-abc").mkdir()
    assert store.open_run(run.run_id).meta["status"] == "queued"
    result = store.reindex()
    assert (result.indexed, result.skipped) == (1, [])
    assert [r.run_id for r in store.list_runs()] == [run.run_id]


def test_truncated_last_metrics_line_is_tolerated(store: RunStore) -> None:
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    run.log_event("train", 1, loss=1.0)
    with (run.dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "time": 17.0, "kind": "tra')  # the writer died mid-line
    assert [e["step"] for e in run.events()] == [1]
    run.log_event("train", 3, loss=0.5)  # lands on a line of its own after the fragment
    assert [e["step"] for e in run.events()] == [1, 3]


def test_other_format_versions_fail_with_advice(store: RunStore) -> None:
    old = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    new = store.create_run("id2", "pss", CONFIG, "cpu", 20)
    for run, version in ((old, 0), (new, FORMAT_VERSION + 1)):
        meta = json.loads((run.dir / "run.json").read_text())
        meta["format_version"] = version
        (run.dir / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunStoreError, match=r"format 0.*Re-run the experiment") as info:
        store.open_run(old.run_id)
    assert str(old.dir / "config.yaml") in str(info.value)
    with pytest.raises(RunStoreError, match="upgrade pss"):
        store.open_run(new.run_id)
    skipped = store.reindex().skipped
    assert sorted(Path(p).name for p, _ in skipped) == sorted([old.run_id, new.run_id])
    assert store.list_runs() == []


def test_corrupt_run_json_names_the_file(store: RunStore) -> None:
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    (run.dir / "run.json").write_text('{"format_version": 1, "run_id": ')
    with pytest.raises(RunStoreError, match="corrupt") as info:
        store.open_run(run.run_id)
    assert str(run.dir / "run.json") in str(info.value)


def test_reindex_rebuilds_a_deleted_index(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    a = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    b = store.create_run("id2", "advent", CONFIG, "cpu", 10)
    for step in (1, 2, 3):
        a.log_event("train", step, loss=1.0 / step)
    a.set_status("done", fiou=0.5, miou=0.25)
    before = {r.run_id: r for r in store.list_runs()}

    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.index.path}{suffix}").unlink(missing_ok=True)
    rebuilt = RunStore(tmp_path / "runs")  # a fresh index is filled from the directories
    after = {r.run_id: r for r in rebuilt.list_runs()}
    assert set(after) == {a.run_id, b.run_id}
    for run_id, record in after.items():
        old = before[run_id]
        assert (record.status, record.steps, record.fiou, record.miou, record.config) == \
            (old.status, old.steps, old.fiou, old.miou, old.config)
    assert after[a.run_id].steps == 3

    # a directory removed behind the store's back loses its row on reindex
    os.rename(b.dir, tmp_path / "elsewhere")
    rebuilt.reindex()
    assert [r.run_id for r in rebuilt.list_runs()] == [a.run_id]


def test_index_deleted_while_in_use_is_rebuilt(store: RunStore) -> None:
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    run.log_event("train", 4, loss=0.5)
    assert [r.steps for r in store.list_runs()] == [4]  # this thread now holds a connection
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.index.path}{suffix}").unlink(missing_ok=True)
    assert [(r.run_id, r.steps) for r in store.list_runs()] == [(run.run_id, 4)]  # same object heals
    assert store.index.path.exists()


def _log_in_forked_child(run) -> None:  # uses the parent's store object (and its cached connection)
    run.log_event("train", 7, loss=0.5)


def test_forked_child_opens_its_own_connection(store: RunStore) -> None:
    run = store.create_run("id1", "pss", CONFIG, "cpu", 20)
    run.log_event("train", 1, loss=1.0)  # the parent caches a connection before forking
    child = multiprocessing.get_context("fork").Process(target=_log_in_forked_child, args=(run,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    run.log_event("train", 2, loss=0.75)  # the parent's connection still works
    assert [e["step"] for e in run.events()] == [1, 7, 2]
    assert run.record.steps == 7


def test_index_is_wal_with_schema_version(store: RunStore) -> None:
    with store.index.connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 15000
        assert [tuple(r) for r in conn.execute("SELECT version FROM schema_version")] == [(1,)]
    with store.index.connect() as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RunStoreError, match="newer than this pss"):
        RunStore(store.root)


def test_corrupt_index_gives_advice(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    (root / "index.sqlite").write_bytes(b"this is not an sqlite file" * 100)
    with pytest.raises(RunStoreError, match="delete it") as info:
        RunStore(root)
    assert "index.sqlite" in str(info.value)


def _writer(root: str, run_id: str, writer: int, n: int) -> None:
    store = RunStore(Path(root))
    run = store.open_run(run_id)
    own = store.create_run(f"id{writer}", "pss", {"writer": writer}, "cpu", n)
    for i in range(n):
        run.log_event("train", writer * 1000 + i, writer=writer, i=i, loss=0.5)
        own.log_event("train", i, loss=0.25)


def test_concurrent_writers_from_two_processes(store: RunStore) -> None:
    shared = store.create_run("id0", "pss", CONFIG, "cpu", 2000)
    n = 150
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(store.root), shared.run_id, w, n)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]

    events = shared.events()
    assert len(events) == 2 * n
    assert sorted((e["writer"], e["i"]) for e in events) == [(w, i) for w in (1, 2) for i in range(n)]
    assert len((shared.dir / "metrics.jsonl").read_text().splitlines()) == 2 * n  # no torn lines
    records = {r.user: r for r in store.list_runs()}
    assert set(records) == {"id0", "id1", "id2"}
    assert records["id0"].steps == 2000 + n - 1
    assert records["id1"].steps == records["id2"].steps == n - 1
    with sqlite3.connect(store.index.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
