"""pss.fileio: the one atomic write."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pss.fileio import atomic_path, write_bytes_atomic, write_text_atomic
from pss.status import ACTIVE, Status


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "one")
    write_bytes_atomic(target, b"two", fsync=True)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            assert tmp.parent == target.parent and tmp.name.startswith(".a.bin.") and tmp.name.endswith(".tmp")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_status_is_stored_as_its_string(tmp_path: Path) -> None:
    assert Status.RUNNING == "running" and Status("done") is Status.DONE and "queued" in ACTIVE
    assert json.dumps({"s": Status.FAILED}) == '{"s": "failed"}'
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    conn.execute("CREATE TABLE t (s TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (Status.CANCELLED,))
    assert conn.execute("SELECT s FROM t").fetchone() == ("cancelled",)


def test_new_files_get_the_umask_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text_atomic(tmp_path / "atomic.txt", "x")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_mkdir_false_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_text_atomic(tmp_path / "gone" / "run.json", "{}", mkdir=False)
    assert not (tmp_path / "gone").exists()
    assert write_text_atomic(tmp_path / "made" / "a.txt", "x").read_text() == "x"  # the default creates it


def test_failed_checkpoint_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from pss.engine import checkpoint

    path = tmp_path / "checkpoints" / "step_00000010.pt"
    checkpoint.save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    before = path.read_bytes()

    def full_disk(obj: object, f: object) -> None:
        Path(f).write_bytes(b"half")  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert torch.equal(checkpoint.load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_run_store_write_into_a_deleted_run_fails_and_does_not_recreate_it(tmp_path: Path) -> None:
    from pss.runs.files import write_json_atomic

    with pytest.raises(FileNotFoundError):
        write_json_atomic(tmp_path / "deleted-run" / "waiting.json", {"a": 1})
    assert not (tmp_path / "deleted-run").exists()
