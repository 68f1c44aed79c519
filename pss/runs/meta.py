"""What ``run.json`` holds and how its format is versioned (pattern P6: config + code version +
timestamp + status; loading across versions fails with advice)."""
from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from pss.errors import RunStoreError
from pss.runs.files import json_safe
from pss.status import Status

#: Version of the run-directory format. Bump it when run.json / metrics.jsonl change meaning, and
#: add a function to MIGRATIONS that upgrades a run.json of the previous version in place.
FORMAT_VERSION = 1
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

#: run.json keys every reader relies on
REQUIRED_KEYS = ("format_version", "run_id", "created", "method", "status")

_SUMMARY_MAX_ITEMS = 64


def check_format(meta: Any, path: Path) -> dict[str, Any]:
    """Validate a parsed run.json (format version and required keys) and return it.

    Raises:
        RunStoreError: naming ``path``, with advice (re-run, migrate or upgrade).
    """
    if not isinstance(meta, dict):
        raise RunStoreError(f"run record {path} is corrupt (expected a JSON object); restore it or delete the run")
    version = meta.get("format_version")
    while isinstance(version, int) and version in MIGRATIONS:  # upgrade in memory; the next write persists it
        meta = MIGRATIONS[version](meta)
        version = meta.get("format_version")
    written_by = (meta.get("code_version") or {}).get("pss", "an unknown version")
    if not isinstance(version, int) or version < FORMAT_VERSION:
        raise RunStoreError(
            f"run {path.parent.name} ({path}) was written in run format {version!r} by pss {written_by}; "
            f"this pss reads format {FORMAT_VERSION}. Re-run the experiment (its config is in "
            f"{path.parent / 'config.yaml'}), or open it with pss {written_by}; no automatic migration "
            f"exists for format {version!r}"
        )
    if version > FORMAT_VERSION:
        raise RunStoreError(
            f"run {path.parent.name} ({path}) uses run format {version}, newer than this pss "
            f"(format {FORMAT_VERSION}, written by pss {written_by}); upgrade pss to read it"
        )
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise RunStoreError(f"run record {path} lacks {', '.join(missing)}; restore it or delete the run")
    if meta["status"] not in tuple(Status):  # a tuple: a corrupt (unhashable) value must not raise TypeError
        raise RunStoreError(f"run record {path} has unknown status {meta['status']!r}; "
                            f"expected one of {', '.join(Status)}")
    return meta


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → ``{"train.lr": 0.01, ...}`` of its leaves (lists kept as leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The config's scalar leaves as dotted keys (at most 64), for a glance at run.json."""
    flat = flatten(json_safe(config, "config"))
    scalars = {k: v for k, v in flat.items() if v is None or isinstance(v, (bool, int, float, str))}
    return dict(list(scalars.items())[:_SUMMARY_MAX_ITEMS])


def find_seed(config: dict[str, Any]) -> int | None:
    """The config's seed: top-level ``seed`` first, else the first ``<section>.seed`` found."""
    candidates = [v for k, v in flatten(config).items() if k == "seed" or k.endswith(".seed")]
    top = config.get("seed")
    value = top if top is not None else (candidates[0] if candidates else None)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"pss": <version>, "git_sha": <sha or None>, "git_dirty": <bool or None>}`` of the running code."""
    import pss

    version = getattr(pss, "__version__", None)
    if version is None:
        try:
            version = metadata.version("pss")
        except metadata.PackageNotFoundError:
            version = "unknown"
    sha, dirty = _git_state(Path(pss.__file__).resolve().parent.parent)
    return {"pss": version, "git_sha": sha, "git_dirty": dirty}


def _git_state(repo: Path) -> tuple[str | None, bool | None]:
    if not (repo / ".git").exists():  # an installed package: no repository to ask
        return None, None
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return sha or None, bool(status.strip())
