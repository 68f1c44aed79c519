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
