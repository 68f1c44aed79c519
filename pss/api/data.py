"""The engine facade for data: workspaces, users, records, thumbnails, groupings and statistics.

The app (``pss_app``), the CLI and notebooks use these functions instead of reaching into ``pss.data``,
``pss.grouping`` and ``pss.stats``. Every function takes a ``Workspace`` and plain values and returns
plain values (paths, numpy arrays, dataclasses, DataFrames); nothing here imports gradio.

A workspace is one folder::

    WS/data/      a data root (VOC2012/ + personal/id<N>/), e.g. written by ``generate_demo``
    WS/runs/      the run store
    WS/cache/     features, groupings, thumbnails, rendered views

Heavy modules (torch through ``pss.grouping``, pandas through ``pss.stats``) are imported inside the
functions that need them, so opening a workspace and paging thumbnails stays light.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pss.data import pss_layout
from pss.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, VOC_PALETTE, colorize, read_label_png
from pss.data.pss_layout import UserCollection
from pss.data.records import ImageRecord
from pss.api.users import read_user
from pss.errors import DatasetError
from pss.fileio import atomic_path
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from pss.data.demo import DemoConfig, DemoSummary
    from pss.grouping import GroupingResult

Progress = Callable[[float, str], None]

DEFAULT_WORKSPACE = Path("pss-workspace")
THUMB_SIZE = 160
_THUMB_VERSION = "t1"  # part of the thumbnail key: bump when the thumbnail recipe changes

__all__ = [
    "CLASS_NAMES", "DEFAULT_WORKSPACE", "IGNORE_INDEX", "NUM_CLASSES", "THUMB_SIZE", "VOC_PALETTE", "DatasetStatistics",
    "ImageRecord", "UserCollection", "Workspace", "colorize", "compute_grouping", "create_demo_workspace",
    "dataset_statistics", "file_key", "list_users", "load_image", "load_label", "open_workspace",
    "cached_grouping", "thumbnail",
]  # read_user: pss.api.users (imported here for compute_grouping and the statistics)


def open_workspace(root: str | Path) -> Workspace:
    """Open an existing workspace; DatasetError (saying what to do) if it has no ``data/personal`` folder."""
    ws = Workspace(Path(root).expanduser().resolve())
    if not ws.personal.is_dir():
        raise DatasetError(
            f"{ws.root} is not a pss workspace: {ws.personal} is missing. Put a data root (VOC2012/ and "
            f"personal/id<N>/) at {ws.data}, or start the app on an empty folder to generate the demo there."
        )
    ws.cache.mkdir(parents=True, exist_ok=True)
    ws.runs.mkdir(parents=True, exist_ok=True)
    return ws


def create_demo_workspace(root: str | Path, seed: int = 0, config: DemoConfig | None = None,
                          progress: Progress | None = None) -> tuple[Workspace, DemoSummary | None]:
    """Create ``root`` and generate the embedded demo into ``root/data`` unless a data root is already there.

    Returns the workspace and the demo summary (``None`` when the data already existed).
    """
    from pss.data.demo import generate_demo

    ws = Workspace(Path(root).expanduser().resolve())
    summary = None
    if not ws.personal.is_dir():
        if ws.data.exists() and any(ws.data.iterdir()):
            raise DatasetError(f"{ws.data} exists but has no personal/ folder; move it away or point "
                               f"--workspace at another folder")
        ws.data.mkdir(parents=True, exist_ok=True)
        summary = generate_demo(ws.data, seed=seed, config=config, progress=progress)
    return open_workspace(ws.root), summary


def list_users(ws: Workspace) -> list[str]:
    """User folder names (``id1``, ``id2``, ... in natural order)."""
    return pss_layout.list_users(ws.personal)


def file_key(path: Path, *extra: object) -> str:
    """A short hex key of a file's resolved path, mtime and size (plus ``extra``): changes when the file does.

    DatasetError if the file is missing (e.g. its folder was removed while the app runs).
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc.strerror}); was it moved or deleted?") from exc
    text = "|".join([str(Path(path).resolve()), str(stat.st_mtime_ns), str(stat.st_size), *map(str, extra)])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def thumbnail(ws: Workspace, image_path: Path, size: int = THUMB_SIZE) -> Path:
    """Path of a JPEG thumbnail (long side ``size``, EXIF orientation applied) cached under ``WS/cache/thumbs``.

    The cache key is the image's path, mtime and byte size, so an edited photo gets a new thumbnail and a
    warm call is a ``stat`` and an ``exists``. Raises DatasetError for a missing or undecodable image.
    """
    key = file_key(image_path, size, _THUMB_VERSION)
    out = ws.thumbs / key[:2] / f"{key}.jpg"
    if out.exists():
        return out
    try:
        with Image.open(image_path) as opened:
            opened.draft("RGB", (size, size))  # JPEG: decode at 1/2..1/8 scale directly, much faster
            image = ImageOps.exif_transpose(opened).convert("RGB")
            image.thumbnail((size, size), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DatasetError(f"{image_path}: cannot decode the image ({exc}); re-export or remove it") from exc
    with atomic_path(out) as tmp:  # a concurrent page request never sees half a thumbnail
        image.save(tmp, format="JPEG", quality=85)
    return out


def load_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB with EXIF orientation applied; DatasetError for a bad file."""
    from pss.data.image_io import load_rgb  # imports torch (torchvision's decoder): only when an image is opened

    return load_rgb(path)


def load_label(path: Path) -> np.ndarray:
    """(H, W) uint8 class indices (0..20, 255 ignore) from a palette or L PNG; DatasetError for a bad file."""
    return read_label_png(path)


def compute_grouping(ws: Workspace, user: str, k: int, seed: int = 0, device: str | None = "auto",
                     progress: Progress | None = None) -> GroupingResult:
    """Group ``user``'s photos into (at most) ``k`` k-means groups with a 2-D UMAP embedding (paper §3.3).

    Cached under ``WS/cache``: a second call on unchanged photos reads the result back.
    """
    from pss.engine.device import resolve_device
    from pss.grouping import group_records

    records = read_user(ws, user).records
    return group_records(user, records, k=k, cache_dir=ws.cache, device=resolve_device(device or "auto"), seed=seed,
                         progress=progress)


def cached_grouping(ws: Workspace, user: str, k: int, seed: int = 0) -> GroupingResult | None:
    """The last grouping computed for ``user`` with this ``k``/``seed``, or ``None`` (no feature extraction)."""
    from pss.grouping import load_grouping

    read_user(ws, user)  # the one user-name rule (cached: the gallery has read the user already)
    return load_grouping(ws.cache, user, k, seed)


@dataclass
class DatasetStatistics:
    """The paper's Fig. 2 statistics for a set of users (DataFrames from ``pss.stats``)."""

    users: list[str]
    class_proportion: pd.DataFrame
    cooccurrence: pd.DataFrame
    object_size: pd.DataFrame
    instances: pd.DataFrame
    broken_users: dict[str, str] = field(default_factory=dict)  # user -> why it could not be read


def dataset_statistics(ws: Workspace, users: Sequence[str] | None = None) -> DatasetStatistics:
    """Class proportion per user, class co-occurrence, mean object size and instances per class.

    ``users`` defaults to every user. Only labelled images contribute pixel statistics. A user folder that
    cannot be read (no ``JPEGImages/``, unreadable list) is left out and named in ``broken_users``, so one broken
    user never hides the others; DatasetError only when no chosen user can be read.
    """
    from pss import stats

    chosen = list(users) if users else list_users(ws)
    collections: dict[str, list] = {}
    broken: dict[str, str] = {}
    for user in chosen:
        try:
            collections[user] = read_user(ws, user).records
        except (DatasetError, OSError) as exc:
            broken[user] = str(exc)
    if chosen and not collections:
        raise DatasetError("no user could be read: " + "; ".join(f"{u}: {why}" for u, why in broken.items()))
    readable = [user for user in chosen if user in collections]
    records = [record for user in readable for record in collections[user]]
    return DatasetStatistics(
        users=readable,
        class_proportion=stats.class_proportion_per_user(collections),
        cooccurrence=stats.class_cooccurrence(records),
        object_size=stats.mean_object_size(records),
        instances=stats.instances_per_class(records),
        broken_users=broken,
    )
