"""Annotating a user's images: tags, masks, server-side drafts with undo/redo, submit, history, review states.

Everything here takes and returns plain values (numpy label maps, names, dataclasses); the app's Annotate tab and
its tests call it. Files (all under the workspace, every write atomic through ``pss.fileio``)::

    data/personal/<user>/imgLabelList.txt            tags: one line rewritten, every other line kept as it was
    data/personal/<user>/SegmentationClass/<n>.png   the submitted mask (VOC palette PNG, class ids, 255 = unlabelled)
    data/personal/<user>/annotated.txt               the annotated TRAINING list (``pss.data.annotations``)
    annotations/<user>/drafts/<n>/stack.json         the draft: a stack of mask versions, the position of undo/redo
    annotations/<user>/drafts/<n>/<k>.png            one version of the draft (a palette PNG like the mask)
    annotations/<user>/history.jsonl                 append-only log of submits / reverts / reviews
    annotations/<user>/history/<n>/<v>.png           every submitted version of a mask (v0 = the mask found on disk
                                                     before the first submit, so nothing is ever overwritten for good)

Why a draft is a stack of PNGs rather than the browser's undo: a browser's history is lost on reload and would have
to be reset whenever the server sends a new mask (a pre-label, a click refinement); a stack on the server survives
all of that, and a killed server loses at most the stroke in flight (the editor sends each stroke on mouse-up,
``Stroke`` / ``paint_stroke``).

An evaluation image (``val_all.txt``) can be re-annotated: its mask is rewritten (the previous one kept as history
v0) but it is never listed in ``annotated.txt`` (``write_annotated`` refuses it): it stays held out.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pss.api.users import check_user_name, find_record, forget_users, read_user
from pss.data.annotations import write_annotated
from pss.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, VOC_PALETTE, class_index, read_label_png
from pss.data.pss_layout import TAG_FILES
from pss.data.records import ImageRecord
from pss.errors import DatasetError
from pss.fileio import write_bytes_atomic, write_text_atomic
from pss.workspace import Workspace

DEFAULT_ANNOTATOR = "local"
MAX_DRAFT_VERSIONS = 60  # undo depth kept per image; older versions are dropped (the submitted history is not)
STATES = ("unlabelled", "ground truth", "pre-labelled", "draft", "submitted", "reviewed")

WRITE_LOCK = threading.RLock()  # one writer per process: a stroke save and a button click may race


# ---- brush strokes -> masks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stroke:
    """One brush or eraser stroke of the Annotate editor, in continuous image coordinates (pixel ``(row i, col j)``
    covers ``[j, j + 1) x [i, i + 1)``; its centre is ``(j + 0.5, i + 0.5)``).

    ``class_id``: 0..20 or 255 (the "unlabelled" swatch); ``None`` = the eraser, which puts back the mask the editor
    was loaded with under the stroke. ``size``: the brush diameter in image pixels."""

    points: tuple[tuple[float, float], ...]
    size: float
    class_id: int | None

    @classmethod
    def parse(cls, data: Any) -> Stroke:
        """A stroke from the editor's JSON (``{"points": [[x, y], ...], "size": d, "class_id": c | null}``); a clear
        error for anything else (nothing is painted)."""
        if not isinstance(data, dict):
            raise DatasetError(f"a stroke must be an object with points, size and class_id, got {type(data).__name__}")
        try:
            points = tuple((float(x), float(y)) for x, y in data.get("points") or [])
            size = float(data.get("size", 0))
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"a stroke's points must be [x, y] pairs and its size a number ({exc})") from None
        raw = data.get("class_id")
        class_id = None if raw is None else int(raw)
        if not points:
            raise DatasetError("a stroke needs at least one point")
        if not 0.5 <= size <= 512 or not np.isfinite(np.asarray(points)).all():
            raise DatasetError(f"a stroke's size must be 0.5..512 image pixels and its points finite, got {size}")
        if class_id is not None and class_id != IGNORE_INDEX and not 0 <= class_id < NUM_CLASSES:
            raise DatasetError(f"a stroke's class must be 0..{NUM_CLASSES - 1} or {IGNORE_INDEX}, got {class_id}")
        return cls(points, size, class_id)


def stroke_footprint(shape: tuple[int, int], stroke: Stroke) -> np.ndarray:
    """The pixels a stroke covers: those whose centre lies within ``size / 2`` of the polyline through its points
    (a round brush dragged along the path, round caps; no antialiasing, so every pixel gets one class).

    Shape:
        returns (H, W) bool.
    """
    height, width = shape
    out = np.zeros(shape, dtype=bool)
    radius = stroke.size / 2
    pts = np.asarray(stroke.points, dtype=np.float64)
    segments = zip(pts, pts[1:], strict=False) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        # only the segment's bounding box (grown by the radius) can be covered
        x0, x1 = (int(max(0, np.floor(min(a[0], b[0]) - radius))), int(min(width, np.ceil(max(a[0], b[0]) + radius))))
        y0, y1 = (int(max(0, np.floor(min(a[1], b[1]) - radius))), int(min(height, np.ceil(max(a[1], b[1]) + radius))))
        if x0 >= x1 or y0 >= y1:
            continue
        cx, cy = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        d = b - a
        length2 = float(d @ d)
        # distance from each pixel centre to the segment: project, clamp to [0, 1], measure
        t = np.zeros_like(cx) if length2 == 0 else np.clip(((cx - a[0]) * d[0] + (cy - a[1]) * d[1]) / length2, 0, 1)
        dist2 = (cx - a[0] - t * d[0]) ** 2 + (cy - a[1] - t * d[1]) ** 2
        out[y0:y1, x0:x1] |= dist2 <= radius * radius
    return out


def paint_stroke(current: np.ndarray, base: np.ndarray, stroke: Stroke) -> np.ndarray:
    """``current`` with the stroke applied: its class on the footprint, or for the eraser the ``base`` mask (the
    one the editor was loaded with) put back there.

    Shape:
        current, base: (H, W) uint8 class ids; returns (H, W) uint8 (a new array).
    """
    current = np.asarray(current, dtype=np.uint8)
    if np.shape(base) != current.shape:
        raise DatasetError(f"the stroke's base mask is {np.shape(base)} but the mask is {current.shape}")
    covered = stroke_footprint(current.shape, stroke)
    out = current.copy()
    out[covered] = np.asarray(base, dtype=np.uint8)[covered] if stroke.class_id is None else stroke.class_id
    return out


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """A (H, W) label map as VOC palette PNG bytes (pixel value = class id), like ``pss.data.labels``'s masks."""
    array = np.asarray(mask, dtype=np.uint8)
    if array.ndim != 2:
        raise DatasetError(f"a mask must be 2-D (H, W), got shape {array.shape}")
    image = Image.fromarray(array, mode="P")
    image.putpalette(VOC_PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)  # masks compress well even at level 1
    return buffer.getvalue()


def write_mask(path: Path, mask: np.ndarray) -> Path:
    """Write ``mask`` as a palette PNG atomically (a reader never sees half a file)."""
    return write_bytes_atomic(Path(path), mask_png_bytes(mask))


def class_counts(mask: np.ndarray) -> dict[str, int]:
    """Pixels per class name (and ``unlabelled`` for 255), classes present only."""
    values, counts = np.unique(np.asarray(mask), return_counts=True)
    return {(CLASS_NAMES[v] if v < NUM_CLASSES else "unlabelled"): int(c) for v, c in zip(values, counts, strict=True)}


# ---- paths ----------------------------------------------------------------------------------------------------

def annotations_dir(ws: Workspace, user: str) -> Path:
    """``WS/annotations/<user>``; the user name is checked first (the one rule of ``pss.api.users``), so a bad value
    from an API client gets a message, never a path outside the workspace."""
    return Path(ws.root) / "annotations" / check_user_name(ws, user)


def _draft_dir(ws: Workspace, user: str, name: str) -> Path:
    if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
        raise DatasetError(f"image name {name!r}: pick an image of user {user} (a file stem, no folders)")
    return annotations_dir(ws, user) / "drafts" / name


def _history_file(ws: Workspace, user: str) -> Path:
    return annotations_dir(ws, user) / "history.jsonl"


@dataclass(frozen=True)
class Target:
    """One image being annotated: the user's record, its size and whether it is an evaluation image."""

    ws: Workspace
    user: str
    record: ImageRecord
    height: int
    width: int
    evaluation: bool

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def mask_path(self) -> Path:
        return Path(self.record.image_path).parent.parent / "SegmentationClass" / f"{self.name}.png"


def target(ws: Workspace, user: str, name: str) -> Target:
    """The image ``name`` of ``user`` (DatasetError for an unknown user or image: both names come from a client)."""
    if not name:
        raise DatasetError("choose an image first (or press 'Next from queue')")
    collection = read_user(ws, user)
    record = find_record(collection.records, name, user)
    from pss.data.image_io import image_size

    width, height = image_size(record.image_path)  # (W, H) after EXIF orientation: the geometry masks use
    evaluation = name in {r.name for r in collection.eval_set}
    return Target(ws, user, record, int(height), int(width), evaluation)


def saved_mask(t: Target) -> np.ndarray | None:
    """The mask on disk (``SegmentationClass/<n>.png``), or None for an unlabelled image."""
    if not t.mask_path.is_file():
        return None
    mask = read_label_png(t.mask_path)
    if mask.shape != (t.height, t.width):
        raise DatasetError(f"{t.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                           f"{t.width}x{t.height}; fix it with `pss doctor`'s advice before annotating")
    return mask


def blank_mask(t: Target) -> np.ndarray:
    return np.full((t.height, t.width), IGNORE_INDEX, dtype=np.uint8)


def check_mask(t: Target, mask: np.ndarray) -> np.ndarray:
    """``mask`` as (H, W) uint8 of the image's size with values in the label space, else DatasetError."""
    mask = np.asarray(mask)
    if mask.shape != (t.height, t.width):
        raise DatasetError(f"the mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]} but {t.name} is "
                           f"{t.width}x{t.height}; reload the image (the editor lost its geometry)")
    bad = ~((mask < NUM_CLASSES) | (mask == IGNORE_INDEX))
    if bad.any():
        raise DatasetError(f"the mask holds values outside 0..20 and 255 ({sorted(np.unique(mask[bad]))[:5]})")
    return mask.astype(np.uint8)


# ---- tags -----------------------------------------------------------------------------------------------------

def write_tags(ws: Workspace, user: str, name: str, tags: Iterable[str]) -> tuple[str, ...]:
    """Rewrite the tag line of image ``name`` in the user's tag file (``name.jpg:cls,cls``, ``UNKNOWN`` for none),
    atomically, keeping every other line byte for byte; a missing line is appended. Returns the tags written.

    DatasetError for an unknown class name (background is not a tag: every image has some)."""
    t = target(ws, user, name)
    indices = sorted({class_index(tag) for tag in tags if tag})
    if 0 in indices:
        raise DatasetError("'background' is not an image tag; tag the objects the image shows")
    names = tuple(CLASS_NAMES[i] for i in indices)
    user_dir = Path(t.record.image_path).parent.parent
    path = next((user_dir / f for f in TAG_FILES if (user_dir / f).is_file()), user_dir / TAG_FILES[0])
    with WRITE_LOCK:
        text = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
        file_name = Path(t.record.image_path).name
        new_line = f"{file_name}:{','.join(names) or 'UNKNOWN'}"
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            head = line.split(":", 1)[0].strip()
            if head == file_name:
                ending = line[len(line.rstrip("\r\n")):] or "\n"
                lines[i] = new_line + ending
                break
        else:
            if lines and not lines[-1].endswith(("\n", "\r")):
                lines[-1] += "\n"
            lines.append(new_line + "\n")
        write_text_atomic(path, "".join(lines))
    forget_users(ws, user)
    return names


# ---- the draft store: a stack of versions per image -------------------------------------------------------------

@dataclass
class Draft:
    """The draft of one image: ``versions`` (file names, oldest first), ``position`` (the one shown; undo/redo move
    it), ``sources`` (what made each version: ``base``, ``manual``, ``prelabel:<run>``, ``clicks``, ``superpixels``,
    ``restore``), ``updated`` (unix time of the last change)."""

    versions: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    position: int = -1
    updated: float = 0.0
    counter: int = 0

    @property
    def can_undo(self) -> bool:
        return self.position > 0

    @property
    def can_redo(self) -> bool:
        return self.position < len(self.versions) - 1

    @property
    def edited(self) -> bool:
        """Whether anything beyond the starting mask was done (the stack holds more than its base)."""
        return len(self.versions) > 1

    def provenance(self) -> list[str]:
        """The distinct sources of the versions up to the one shown (the base excluded), in order."""
        return list(dict.fromkeys(s for s in self.sources[1:self.position + 1]))


def read_draft(ws: Workspace, user: str, name: str) -> Draft | None:
    """The image's draft, or None (never drafted, discarded, or submitted). A damaged stack file reads as none."""
    path = _draft_dir(ws, user, name) / "stack.json"
    try:
        data = json.loads(path.read_text())
        draft = Draft(list(data["versions"]), list(data["sources"]), int(data["position"]), float(data["updated"]),
                      int(data.get("counter", len(data["versions"]))))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not draft.versions or not 0 <= draft.position < len(draft.versions):
        return None
    return draft


def _write_stack(ws: Workspace, user: str, name: str, draft: Draft) -> None:
    data = {"versions": draft.versions, "sources": draft.sources, "position": draft.position,
            "updated": draft.updated, "counter": draft.counter}
    write_text_atomic(_draft_dir(ws, user, name) / "stack.json", json.dumps(data))


def draft_mask(ws: Workspace, user: str, name: str, draft: Draft | None = None) -> np.ndarray | None:
    """The mask at the draft's position, or None without a draft."""
    draft = draft or read_draft(ws, user, name)
    if draft is None:
        return None
    try:
        return read_label_png(_draft_dir(ws, user, name) / draft.versions[draft.position])
    except DatasetError:
        return None


def current_mask(t: Target) -> np.ndarray:
    """What the editor shows: the draft, else the saved mask, else all unlabelled (255)."""
    mask = draft_mask(t.ws, t.user, t.name)
    if mask is not None and mask.shape == (t.height, t.width):
        return mask
    saved = saved_mask(t)
    return saved if saved is not None else blank_mask(t)


def push_version(t: Target, mask: np.ndarray, source: str = "manual") -> Draft:
    """Save ``mask`` as the draft's newest version (what was redo-able is dropped, as in every editor).

    A mask equal to the one shown is not pushed (a retried stroke, a click that changes nothing). The first version
    of a new draft is the mask the image had (``base``), so undo can always go back to it."""
    mask = check_mask(t, mask)
    folder = _draft_dir(t.ws, t.user, t.name)
    with WRITE_LOCK:
        draft = read_draft(t.ws, t.user, t.name)
        if draft is None:
            saved = saved_mask(t)
            base = saved if saved is not None else blank_mask(t)
            draft = Draft()
            if np.array_equal(base, mask):
                return draft  # nothing to save: the mask is the saved one
            _append(folder, draft, base, "base")
        else:
            shown = draft_mask(t.ws, t.user, t.name, draft)
            if shown is not None and np.array_equal(shown, mask):
                return draft
        for dropped in draft.versions[draft.position + 1:]:
            (folder / dropped).unlink(missing_ok=True)
        del draft.versions[draft.position + 1:]
        del draft.sources[draft.position + 1:]
        _append(folder, draft, mask, source)
        while len(draft.versions) > MAX_DRAFT_VERSIONS:
            (folder / draft.versions.pop(1)).unlink(missing_ok=True)  # keep the base
            draft.sources.pop(1)
            draft.position -= 1
        _write_stack(t.ws, t.user, t.name, draft)
        return draft


def _append(folder: Path, draft: Draft, mask: np.ndarray, source: str) -> None:
    draft.counter += 1
    file_name = f"{draft.counter:05d}.png"
    write_mask(folder / file_name, mask)  # the version first, then the stack that names it
    draft.versions.append(file_name)
    draft.sources.append(source)
    draft.position = len(draft.versions) - 1
    draft.updated = time.time()


def step_draft(t: Target, delta: int) -> tuple[np.ndarray, Draft | None]:
    """Undo (``delta=-1``) or redo (``+1``): move the draft's position; returns the mask now shown and the draft.

    Nothing to undo/redo leaves it where it is (DatasetError says so)."""
    with WRITE_LOCK:
        draft = read_draft(t.ws, t.user, t.name)
        if draft is None or not 0 <= draft.position + delta < len(draft.versions):
            raise DatasetError("nothing to undo" if delta < 0 else "nothing to redo")
        draft.position += delta
        draft.updated = time.time()
        _write_stack(t.ws, t.user, t.name, draft)
    mask = draft_mask(t.ws, t.user, t.name, draft)
    return (mask if mask is not None else current_mask(t)), draft


def discard_draft(ws: Workspace, user: str, name: str) -> None:
    """Delete the image's draft (its versions too); the saved mask is untouched."""
    import shutil

    with WRITE_LOCK:
        folder = _draft_dir(ws, user, name)
        if folder.is_dir():
            # rename first: a half-deleted folder is never read as a draft
            trash = folder.with_name(f".{name}.discarded-{os.getpid()}-{time.time_ns()}")
            folder.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)


def drafts(ws: Workspace, user: str) -> dict[str, Draft]:
    """Every draft of the user, by image name."""
    folder = annotations_dir(ws, user) / "drafts"
    out: dict[str, Draft] = {}
    if folder.is_dir():
        for sub in folder.iterdir():
            if sub.is_dir() and not sub.name.startswith("."):
                draft = read_draft(ws, user, sub.name)
                if draft is not None:
                    out[sub.name] = draft
    return out


# ---- history: append-only ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryEntry:
    """One line of ``history.jsonl``: ``action`` submit / revert / review / original; ``version`` of the image's
    mask it made (or reviewed); ``source``: what the mask came from (``manual``, ``prelabel:<run>``, ``clicks``,
    ...); ``changed``: pixels that differ from the previous version; ``counts``: pixels per class."""

    image: str
    version: int
    action: str
    annotator: str
    time: float
    source: str
    changed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    evaluation: bool = False
    png: str = ""

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))


def read_history(ws: Workspace, user: str, name: str | None = None) -> list[HistoryEntry]:
    """History entries (of image ``name``), oldest first. A line cut short by a crash is skipped."""
    path = _history_file(ws, user)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            entry = HistoryEntry(**data)
        except (ValueError, TypeError):
            continue
        if name is None or entry.image == name:
            out.append(entry)
    return out


def _append_history(ws: Workspace, user: str, entry: HistoryEntry) -> None:
    """Append one line (one ``write`` of a complete line, flushed to disk: an append-only log is never rewritten,
    so a crash can at worst cut the last line, which ``read_history`` skips)."""
    path = _history_file(ws, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry.__dict__, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def history_mask(ws: Workspace, user: str, name: str, version: int) -> np.ndarray:
    """The mask of submitted version ``version`` of image ``name``."""
    for entry in read_history(ws, user, name):
        if entry.version == version and entry.png:
            return read_label_png(annotations_dir(ws, user) / entry.png)
    raise DatasetError(f"{name} has no version {version} in its history")


@dataclass(frozen=True)
class Submitted:
    """What a submit (or revert) did: the history entry, and whether the image went into ``annotated.txt``."""

    entry: HistoryEntry
    mask_path: Path
    listed_for_training: bool

    @property
    def message(self) -> str:
        e = self.entry
        where = ("listed in annotated.txt for training" if self.listed_for_training else
                 "an EVALUATION image (val_all.txt): its mask is updated, it is NOT listed for training")
        return f"{e.image} v{e.version} saved ({e.changed} pixels changed): {where}"


def submit(ws: Workspace, user: str, name: str, mask: np.ndarray | None = None, annotator: str = DEFAULT_ANNOTATOR,
           source: str | None = None, action: str = "submit") -> Submitted:
    """Write the mask (``mask``, else the draft's shown version) to ``SegmentationClass/<n>.png``, record it in the
    history and, unless it is an evaluation image, list it in ``annotated.txt``; the draft is then dropped.

    Order of the writes, so that a crash between any two leaves nothing inconsistent: the history PNG, the list
    (before the mask: a masked image not yet listed would, without val_all.txt, count as an evaluation image), the
    mask, the history line, then the draft is deleted (a left-over draft only offers itself again)."""
    t = target(ws, user, name)
    with WRITE_LOCK:
        draft = read_draft(ws, user, name)
        if mask is None:
            mask = draft_mask(ws, user, name, draft)
            if mask is None:
                raise DatasetError(f"{name} has no draft to submit; paint or pre-label it first")
        mask = check_mask(t, mask)
        if source is None:
            source = "+".join(draft.provenance()) if draft is not None and draft.provenance() else "manual"
        entries = read_history(ws, user, name)
        previous = saved_mask(t)
        folder = annotations_dir(ws, user)
        if not entries and previous is not None:
            # the mask found on disk (the dataset's ground truth, or one written outside the app) is version 0
            write_mask(folder / "history" / name / "v0.png", previous)
            entries = [HistoryEntry(name, 0, "original", "dataset", time.time(), "on disk before the first submit",
                                    0, class_counts(previous), t.evaluation, f"history/{name}/v0.png")]
            _append_history(ws, user, entries[0])
        version = max((e.version for e in entries), default=0) + 1
        png = f"history/{name}/v{version}.png"
        write_mask(folder / png, mask)
        collection = read_user(ws, user)
        listed = not t.evaluation
        if listed:
            user_dir = collection.root
            names = set(collection.annotated) | {name}
            evaluation = {r.name for r in collection.eval_set}
            suffixes = {r.name: Path(r.image_path).suffix for r in collection.records}
            write_annotated(user_dir, names, evaluation, suffixes)
        write_mask(t.mask_path, mask)
        changed = int((previous != mask).sum()) if previous is not None else int((mask != IGNORE_INDEX).sum())
        entry = HistoryEntry(name, version, action, annotator or DEFAULT_ANNOTATOR, time.time(), source, changed,
                             class_counts(mask), t.evaluation, png)
        _append_history(ws, user, entry)
        discard_draft(ws, user, name)
    forget_users(ws, user)
    return Submitted(entry, t.mask_path, listed)


def revert(ws: Workspace, user: str, name: str, version: int, annotator: str = DEFAULT_ANNOTATOR) -> Submitted:
    """Make submitted version ``version`` the current mask again, as a new version (history is never rewritten)."""
    mask = history_mask(ws, user, name, int(version))
    return submit(ws, user, name, mask, annotator, source=f"revert to v{int(version)}", action="revert")


def mark_reviewed(ws: Workspace, user: str, name: str, annotator: str = DEFAULT_ANNOTATOR) -> HistoryEntry:
    """Record that the current submitted version was reviewed (DatasetError when nothing was submitted)."""
    t = target(ws, user, name)
    entries = [e for e in read_history(ws, user, name) if e.action in ("submit", "revert")]
    if not entries:
        raise DatasetError(f"{name} has no submitted version to review; submit it first")
    last = entries[-1]
    entry = HistoryEntry(name, last.version, "review", annotator or DEFAULT_ANNOTATOR, time.time(), last.source, 0,
                         last.counts, t.evaluation, last.png)
    with WRITE_LOCK:
        _append_history(ws, user, entry)
    return entry


@dataclass(frozen=True)
class VersionDiff:
    """A version against the one before it: pixels changed and the per-class pixel change."""

    version: int
    previous: int | None
    changed: int
    delta: dict[str, int]


def diff_versions(ws: Workspace, user: str, name: str, version: int) -> VersionDiff:
    """``version`` of image ``name`` against the previous submitted version (or nothing, for the first)."""
    versions = sorted({e.version for e in read_history(ws, user, name) if e.png})
    if version not in versions:
        raise DatasetError(f"{name} has no version {version}; versions: {versions}")
    new = history_mask(ws, user, name, version)
    index = versions.index(version)
    if index == 0:
        counts = class_counts(new)
        return VersionDiff(version, None, int((new != IGNORE_INDEX).sum()), counts)
    prev_version = versions[index - 1]
    old = history_mask(ws, user, name, prev_version)
    before, after = class_counts(old), class_counts(new)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))}
    return VersionDiff(version, prev_version, int((old != new).sum()), {k: v for k, v in delta.items() if v})


# ---- per-image state ----------------------------------------------------------------------------------------------

def image_states(ws: Workspace, user: str) -> dict[str, str]:
    """The state of each of the user's images (one of ``STATES``): a draft wins (it is the newest work), then the
    last history action (review -> reviewed, submit/revert -> submitted), then a mask on disk (ground truth), else
    unlabelled. A draft whose only edit is a pre-label is ``pre-labelled``."""
    collection = read_user(ws, user)
    last: dict[str, str] = {}
    for entry in read_history(ws, user):
        if entry.action != "original":
            last[entry.image] = entry.action
    pending = drafts(ws, user)
    out = {}
    for record in collection.records:
        draft = pending.get(record.name)
        if draft is not None and draft.edited:
            provenance = draft.provenance()
            out[record.name] = ("pre-labelled" if provenance and all(p.startswith("prelabel") for p in provenance)
                                else "draft")
        elif last.get(record.name) == "review":
            out[record.name] = "reviewed"
        elif record.name in last:
            out[record.name] = "submitted"
        elif record.mask_path is not None:
            out[record.name] = "ground truth"
        else:
            out[record.name] = "unlabelled"
    return out


def image_state(ws: Workspace, user: str, name: str) -> str:
    return image_states(ws, user).get(name, "unlabelled")


__all__ = ["DEFAULT_ANNOTATOR", "STATES", "WRITE_LOCK", "Draft", "HistoryEntry", "Stroke", "Submitted", "Target",
           "VersionDiff", "annotations_dir", "blank_mask", "check_mask", "class_counts", "current_mask",
           "diff_versions", "discard_draft", "draft_mask", "drafts", "history_mask", "image_state", "image_states",
           "mark_reviewed", "mask_png_bytes", "paint_stroke", "push_version", "read_draft", "read_history", "revert",
           "saved_mask", "step_draft", "stroke_footprint", "submit", "target", "write_mask", "write_tags"]
