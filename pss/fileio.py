"""Atomic file writes: the one implementation every writer of the engine and the app uses.

A file is written to a temporary sibling ``.<name>.<random>.tmp`` and renamed over the target with ``os.replace``
(atomic on POSIX within one file system), so a reader sees either the old file or the complete new one, and a
killed process leaves at most a stray temporary file (dot-prefixed, ``.tmp``-suffixed: listings ignore it).
Concurrent writers of the same path each get their own temporary file; the last rename wins.
The new file gets the permissions a plain ``open(path, "w")`` would give (0666 less the umask), not
``tempfile.mkstemp``'s 0600, so moving a writer onto this module does not change who can read its files.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


def _create_temporary(path: Path) -> Path:
    """Create (exclusively) and return an empty ``.<name>.<random>.tmp`` sibling of ``path``."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            # mode 0o666: the umask applies as for any new file (mkstemp would force 0o600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another writer drew the same name: draw again
            continue
        os.close(fd)
        return tmp


@contextlib.contextmanager
def atomic_path(path: Path, *, fsync: bool = False, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error it replaces ``path``.

    For writers that want a path (``PIL.Image.save``, ``torch.save``, ``shutil.copyfile``). On any error
    (including Ctrl-C) the temporary file is removed and ``path`` is left as it was. ``fsync``: flush the data to
    disk before the rename (for files whose loss after a power cut matters, e.g. the run store's records).
    ``mkdir=False``: a missing parent folder raises ``FileNotFoundError`` instead of being created (the run store:
    a write into a run deleted meanwhile must fail, not bring its folder back).
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removed after a failure


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False, mkdir: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync=fsync, mkdir=mkdir) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str, *, fsync: bool = False, mkdir: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync, mkdir=mkdir)


__all__ = ["TMP_SUFFIX", "atomic_path", "write_bytes_atomic", "write_text_atomic"]
