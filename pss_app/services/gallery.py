"""Server-side paging of a user's images: filters, one page of cached thumbnails at a time.

``gr.Gallery`` has no paging and copies every file it is given (app_anchors §4.2), so the app never hands
it a whole collection: it asks ``gallery_page`` for 48 thumbnails, which are cached on disk under
``WS/cache/thumbs`` (see ``pss.api.thumbnail``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pss.api import CLASS_NAMES, ImageRecord, Workspace, cached_grouping, read_user, thumbnail
from pss.errors import DatasetError, PssError

PAGE_SIZE = 48
ALL = "all"
LABELLED_CHOICES = ("all", "labelled", "unlabelled")
# Thumbnails are decoded by PIL, which releases the GIL: a few threads fill a cold page ~2x faster.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pss-thumbs")


@dataclass(frozen=True)
class GalleryFilter:
    """Which images of a user to show.

    Attributes:
        tag: a class name (image-level tag) or ``"all"``.
        labelled: ``"all"``, ``"labelled"`` (has a GT mask) or ``"unlabelled"``.
        names: restrict to these image names (a group's members or a lasso selection), or ``None``.
    """

    tag: str = ALL
    labelled: str = ALL
    names: tuple[str, ...] | None = None


@dataclass
class GalleryPage:
    """One page of thumbnails. ``items`` are ``(thumbnail path, caption)`` pairs in display order."""

    items: list[tuple[str, str]]
    names: list[str]
    page: int
    num_pages: int
    total: int
    problems: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if not self.total:
            return "no images match"
        first = (self.page - 1) * PAGE_SIZE + 1
        return f"page {self.page} of {self.num_pages} · images {first}–{first + len(self.names) - 1} of {self.total}"


def tag_choices() -> list[str]:
    """Tag filter choices: ``"all"`` then the 20 object classes (background is never a tag)."""
    return [ALL, *CLASS_NAMES[1:]]


def filter_records(records: Sequence[ImageRecord], flt: GalleryFilter) -> list[ImageRecord]:
    """The records passing ``flt``, in collection order (or in ``flt.names`` order when given)."""
    if flt.labelled not in LABELLED_CHOICES:
        raise DatasetError(f"unknown labelled filter {flt.labelled!r}; use one of {', '.join(LABELLED_CHOICES)}")
    if flt.tag != ALL and flt.tag not in CLASS_NAMES[1:]:
        raise DatasetError(f"unknown tag {flt.tag!r}; use 'all' or a VOC class name")
    if flt.names is not None:
        by_name = {record.name: record for record in records}
        records = [by_name[name] for name in dict.fromkeys(flt.names) if name in by_name]
    tag_index = CLASS_NAMES.index(flt.tag) if flt.tag != ALL else None
    kept = []
    for record in records:
        if tag_index is not None and tag_index not in record.tags:
            continue
        if flt.labelled == "labelled" and not record.labelled:
            continue
        if flt.labelled == "unlabelled" and record.labelled:
            continue
        kept.append(record)
    return kept


def clamp_page(page: float | int | None, num_pages: int) -> int:
    """Page number (1-based) clamped to [1, num_pages]; garbage from a client becomes 1."""
    try:
        value = int(page) if page is not None and not math.isnan(float(page)) else 1
    except (TypeError, ValueError):
        value = 1
    return min(max(value, 1), max(num_pages, 1))


def broken_thumbnail(ws: Workspace) -> Path:
    """A placeholder PNG (grey with a red cross) shown for images that cannot be decoded."""
    out = ws.cache / "static" / "broken-thumb.png"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (160, 120), (90, 90, 90))
        draw = ImageDraw.Draw(image)
        draw.line((20, 10, 140, 110), fill=(220, 40, 40), width=8)
        draw.line((140, 10, 20, 110), fill=(220, 40, 40), width=8)
        image.save(out, format="PNG")
    return out


def _thumb_or_problem(ws: Workspace, record: ImageRecord) -> tuple[Path | None, str | None]:
    try:
        return thumbnail(ws, record.image_path), None
    except PssError as exc:
        return None, str(exc)


def page_of(records: Sequence[ImageRecord], ws: Workspace, page: float | int | None,
            page_size: int = PAGE_SIZE) -> GalleryPage:
    """Thumbnails of one page of ``records``; undecodable images get a placeholder and a problem line."""
    num_pages = max(1, math.ceil(len(records) / page_size))
    page = clamp_page(page, num_pages)
    chosen = list(records[(page - 1) * page_size: page * page_size])
    results = list(_POOL.map(lambda r: _thumb_or_problem(ws, r), chosen))
    items, problems = [], []
    for record, (thumb, problem) in zip(chosen, results, strict=True):  # results: one per chosen record
        if thumb is None:
            problems.append(problem or f"{record.name}: unreadable")
            items.append((str(broken_thumbnail(ws)), f"{record.name} (unreadable)"))
        else:
            items.append((str(thumb), record.name))
    return GalleryPage(items=items, names=[r.name for r in chosen], page=page, num_pages=num_pages,
                       total=len(records), problems=problems)


def gallery_page(ws: Workspace, user: str, page: float | int | None = 1, flt: GalleryFilter | None = None,
                 page_size: int = PAGE_SIZE) -> GalleryPage:
    """One page of ``user``'s images that pass ``flt`` (DatasetError for an unknown or vanished user)."""
    records = filter_records(read_user(ws, user).records, flt or GalleryFilter())
    return page_of(records, ws, page, page_size)


def group_names(groups: Mapping[str, int] | None, group: int | None) -> tuple[str, ...] | None:
    """Names of the images in ``group`` (``None`` = no group filter) from a name -> group mapping."""
    if group is None:
        return None
    if groups is None:
        raise DatasetError("no grouping for this user and K yet; compute groups in the Groups tab first")
    return tuple(name for name, g in groups.items() if g == group)


def parse_group(value: str | int | None) -> int | None:
    """A group dropdown value -> group id, ``None`` for "all"/empty; DatasetError for anything else."""
    if value is None or value == "" or value == ALL:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"group {value!r} is not a group number") from exc


def make_filter(ws: Workspace, user: str, k: float | int, tag: str | None, group: str | int | None,
                labelled: str | None) -> GalleryFilter:
    """The filter for the Images tab's widgets; a group filter uses the cached grouping of ``user`` at ``k``."""
    group_id = parse_group(group)
    names = None
    if group_id is not None:
        grouping = cached_grouping(ws, user, int(k))
        names = group_names(grouping.as_mapping() if grouping else None, group_id)
    return GalleryFilter(tag=tag or ALL, labelled=labelled or ALL, names=names)


def class_histogram(records: Sequence[ImageRecord]) -> np.ndarray:
    """(21,) fraction of ``records`` tagged with each class (index 0, background, stays 0)."""
    counts = np.zeros(len(CLASS_NAMES), dtype=np.float64)
    for record in records:
        for tag in set(record.tags):
            if 0 < tag < len(CLASS_NAMES):
                counts[tag] += 1
    return counts / max(len(records), 1)
