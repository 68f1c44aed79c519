"""On-disk caches of the grouping step: per-image features keyed by content hash, and grouping results.

Layout under a workspace's ``cache/`` folder::

    features/<model_tag>-p<PREP_VERSION>/<sha1[:2]>/<sha1>.npy   # one float32 (d,) vector per image content
    groups/<user>_k<K>_s<seed>.json                             # a GroupingResult + the key it was computed for

Features are keyed by the SHA-1 of the image *file bytes*, so renaming or moving a photo reuses its
features and editing it re-extracts only that photo. One small file per image (rather than one archive per
user) makes every write independent and atomic (``pss.fileio``), so two processes (app and
CLI) can fill the same cache at the same time without locks: the worst case is both computing the same
vector and one replacing the other with identical bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pss.errors import DatasetError
from pss.fileio import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def file_sha1(path: Path) -> str:
    """Hex SHA-1 of a file's bytes (the content key of every cached feature).

    Raises:
        DatasetError: the file cannot be read.
    """
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetError(f"cannot read image file {path}: {exc}; check that it exists and is readable") from exc
    return digest.hexdigest()


def combined_key(parts: Iterable[str]) -> str:
    """SHA-1 over an ordered sequence of strings (one per line): the key of a whole feature set."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` as indented UTF-8 JSON (read back by :func:`read_json`)."""
    write_text_atomic(path, json.dumps(payload, indent=1))


class FeatureCache:
    """Per-image feature vectors stored as ``.npy`` files named by content hash.

    Args:
        root: the workspace cache folder (``WS/cache``); features go under ``root/features/<namespace>``.
        namespace: identifies the feature model *and* preprocessing, e.g. ``"lite0-p1"``; vectors from
            different models or preprocessing versions never mix.
    """

    def __init__(self, root: Path, namespace: str) -> None:
        self.folder = Path(root) / "features" / namespace

    def _path(self, sha1: str) -> Path:
        return self.folder / sha1[:2] / f"{sha1}.npy"

    def get(self, sha1: str) -> np.ndarray | None:
        """The cached (d,) float32 vector, or ``None`` when absent or unreadable (then it is recomputed)."""
        path = self._path(sha1)
        if not path.is_file():
            return None
        try:
            vector = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable feature cache file %s (%s); it will be recomputed", path, exc)
            return None
        if vector.ndim != 1 or vector.dtype != np.float32:
            log.warning("ignoring feature cache file %s with shape %s dtype %s", path, vector.shape, vector.dtype)
            return None
        return vector

    def put(self, sha1: str, vector: np.ndarray) -> None:
        """Store one (d,) vector atomically."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(vector, dtype=np.float32), allow_pickle=False)
        write_bytes_atomic(self._path(sha1), buffer.getvalue())


def grouping_path(cache_dir: Path, user: str, k: int, seed: int) -> Path:
    """Where the grouping of ``user`` for the requested ``k`` and ``seed`` is cached."""
    return Path(cache_dir) / "groups" / f"{user}_k{k}_s{seed}.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` (with a log line) when it is missing or corrupt."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring corrupt cache file %s (%s); it will be recomputed", path, exc)
        return None
    if not isinstance(payload, dict):
        log.warning("ignoring cache file %s: expected a JSON object", path)
        return None
    return payload
