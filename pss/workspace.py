"""A workspace folder: the unit the CLI and the app work on.

    WS/data/      a data root (VOC2012/ + personal/id<N>/), e.g. written by ``pss demo``
    WS/runs/      the run store (run directories + index.sqlite)
    WS/cache/     features, groupings, thumbnails, rendered views
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pss.runs import RunStore


@dataclass(frozen=True)
class Workspace:
    """A workspace folder (see the module docstring). ``root`` is absolute and symlink-free."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def personal(self) -> Path:
        return self.data / "personal"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def thumbs(self) -> Path:
        return self.cache / "thumbs"

    def store(self) -> RunStore:
        self.runs.mkdir(parents=True, exist_ok=True)
        return RunStore(self.runs)
