"""File primitives of the run store: atomic replace-writes, line-atomic appends, tolerant readers.

Every JSON/YAML file is written with ``pss.fileio`` (a temporary sibling moved into place with ``os.replace``,
fsynced first), so a reader never sees half a file and a crash leaves at most a stray ``.<name>.*.tmp`` file
(``pss.fileio.TMP_SUFFIX``) that every reader ignores: they open files by their exact names, and listings skip
dot-names.

``metrics.jsonl`` and ``log.txt`` are appended with one ``os.write`` on an ``O_APPEND`` descriptor,
so lines from several processes interleave whole and are visible to other processes at once.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

import yaml

from pss.errors import RunStoreError
from pss.fileio import write_bytes_atomic

try:  # fcntl is POSIX-only; without it run.json read-modify-writes are unlocked (last writer wins)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds; fixed width, so strings sort like times."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@overload
def iso_to_epoch(value: str) -> float: ...
@overload
def iso_to_epoch(value: None) -> None: ...
@overload
def iso_to_epoch(value: str | None) -> float | None: ...
def iso_to_epoch(value: str | None) -> float | None:
    """Seconds since the epoch for a string from :func:`now_iso` (None stays None)."""
    return None if value is None else datetime.fromisoformat(value).timestamp()


def epoch_to_iso(seconds: float) -> str:
    """Inverse of :func:`iso_to_epoch`."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def json_safe(value: Any, where: str = "value") -> Any:
    """Convert ``value`` to plain JSON types: NaN/inf become None, tuples lists, arrays/tensors lists.

    Raises:
        RunStoreError: for a value with no JSON form (``where`` names it in the message).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    # numpy scalars/arrays and torch tensors, without importing either library
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return json_safe(getattr(value, method)(), where)
    raise RunStoreError(
        f"{where} has type {type(value).__name__}, which cannot be stored as JSON; "
        "pass a number, string, bool, list or dict (convert tensors with .item() or .tolist())"
    )


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN written as null).

    The data is fsynced before the rename shows it (these are the store's records), and a missing folder raises
    ``FileNotFoundError``: a write into a run deleted meanwhile must fail, not bring the run's folder back.
    """
    text = json.dumps(json_safe(obj, path.name), indent=2, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"), fsync=True, mkdir=False)


def write_yaml_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as block-style YAML to ``path`` atomically (as ``write_json_atomic``), keys in given order."""
    text = yaml.safe_dump(json_safe(obj, path.name), sort_keys=False, default_flow_style=False)
    write_bytes_atomic(path, text.encode("utf-8"), fsync=True, mkdir=False)


def read_json(path: Path, what: str) -> Any:
    """Parse the JSON file ``path``; a missing or corrupt file raises RunStoreError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunStoreError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise RunStoreError(f"cannot read {what} {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunStoreError(
            f"{what} {path} is corrupt (invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "restore the file from a backup, or delete the run directory if the run is not needed"
        ) from exc


def read_yaml(path: Path, what: str) -> Any:
    """Parse the YAML file ``path``; a missing or corrupt file raises RunStoreError naming it."""
    try:
        with path.open("r", encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise RunStoreError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise RunStoreError(f"{what} {path} is not valid YAML ({exc}); restore or delete the run") from exc


def append_line(path: Path, line: str) -> None:
    """Append ``line`` (a newline is added) to ``path`` with a single write on an O_APPEND descriptor.

    If the file ends in a partial line (a writer died mid-line), a newline is written first so the
    fragment stays on a line of its own and the new line remains parseable.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:  # a regular-file write is complete in practice; loop for the rare short write
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSON-lines file; unparseable lines (a truncated last line) are skipped."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                # a line still being written, or cut short by a crash: not an event (yet)
                return
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a fragment left by a crashed writer; the next lines are whole
            if isinstance(obj, dict):
                yield obj


def tail_lines(path: Path, n: int, block: int = 8192) -> list[str]:
    """Last ``n`` lines of a text file (without newlines), reading backwards from the end."""
    if n <= 0:
        return []
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Exclusive advisory lock (flock) held for the ``with`` block; serialises read-modify-writes."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
