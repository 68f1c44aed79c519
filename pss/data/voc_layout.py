"""Reader for PASCAL VOC 2012 (+ SBD ``SegmentationClassAug``) and for the list files both layouts share.

List files come in two formats and both are accepted everywhere:

* bare ids, one per line: ``2007_000032``
* path pairs relative to the dataset root, optionally with a group column:
  ``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png [<group>]``
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pss.data.image_io import IMAGE_SUFFIXES
from pss.data.problems import Problem
from pss.data.records import ImageRecord
from pss.errors import DatasetError

logger = logging.getLogger(__name__)

DEFAULT_LISTS: tuple[str, ...] = (
    "list/train_aug.txt", "ImageSets/Segmentation/train_aug.txt", "ImageSets/Segmentation/train.txt",
)
MASK_FOLDERS: tuple[str, ...] = ("SegmentationClassAug", "SegmentationClass")
LIST_FORMATS = ("'<id>' or '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png' with an optional integer "
                "group as a third column")


@dataclass(frozen=True)
class ListEntry:
    """One parsed list line. ``image``/``mask`` are paths relative to the dataset root (None for a bare id)."""

    name: str
    image: str | None
    mask: str | None
    group: int | None


def parse_list_line(line: str) -> ListEntry | None:
    """Parse one list line in either format; ``None`` for a blank line. Raises ``DatasetError`` if malformed."""
    tokens = line.split()
    if not tokens:
        return None
    bad = DatasetError(f"malformed list line {line.strip()!r}: expected {LIST_FORMATS}")
    if len(tokens) > 3:
        raise bad
    first = tokens[0]
    if len(tokens) == 1 and "/" not in first and Path(first).suffix.lower() not in IMAGE_SUFFIXES:
        return ListEntry(name=first, image=None, mask=None, group=None)
    if Path(first).suffix.lower() not in IMAGE_SUFFIXES:
        raise bad
    mask = tokens[1].lstrip("/") if len(tokens) >= 2 else None
    if mask is not None and Path(mask).suffix.lower() != ".png":
        raise bad
    group = None
    if len(tokens) == 3:
        try:
            group = int(tokens[2])
        except ValueError:
            raise bad from None
        if group < 0:
            raise bad
    return ListEntry(name=Path(first).stem, image=first.lstrip("/"), mask=mask, group=group)


def read_list_file(list_file: Path, problems: list[Problem] | None = None) -> list[tuple[int, ListEntry]]:
    """Parse a list file into (line number, entry) pairs. Malformed lines go to ``problems`` or raise if it is None."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{list_file}: list file not found; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{list_file}: cannot read list file ({exc}); it must be a UTF-8 text file") from exc
    entries: list[tuple[int, ListEntry]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            entry = parse_list_line(line)
        except DatasetError as exc:
            if problems is None:
                raise DatasetError(f"{list_file}:{number}: {exc}") from None
            problems.append(Problem(list_file, "bad_list_line", f"{exc}; fix or delete the line", line=number))
            continue
        if entry is not None:
            entries.append((number, entry))
    return entries


def find_list_file(voc_root: Path, list_file: Path | None = None) -> Path:
    """Resolve the list file: the given one (absolute, or relative to ``voc_root``) or the first default present."""
    if list_file is not None:
        candidates = [Path(list_file)] if Path(list_file).is_absolute() else [voc_root / list_file, Path(list_file)]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise DatasetError(f"list file {list_file} not found (looked at {', '.join(map(str, candidates))})")
    for relative in DEFAULT_LISTS:
        if (voc_root / relative).is_file():
            return voc_root / relative
    raise DatasetError(
        f"{voc_root}: no list file found; looked for {', '.join(str(voc_root / r) for r in DEFAULT_LISTS)}. "
        "Pass the list explicitly (read_voc(root, list_file=...), CLI --list) in either format: " + LIST_FORMATS)


def _resolve(voc_root: Path, entry: ListEntry) -> tuple[Path, Path | None, str | None]:
    """Image path, mask path (None if absent) and the listed mask that is missing (if any)."""
    if entry.image is not None:
        image = voc_root / entry.image
        if entry.mask is None:
            return image, None, None
        mask = voc_root / entry.mask
        return (image, mask, None) if mask.is_file() else (image, None, entry.mask)
    image = voc_root / "JPEGImages" / f"{entry.name}.jpg"
    for folder in MASK_FOLDERS:
        mask = voc_root / folder / f"{entry.name}.png"
        if mask.is_file():
            return image, mask, None
    return image, None, None


def read_voc(voc_root: Path, list_file: Path | None = None, *, strict: bool = False,
             problems: list[Problem] | None = None) -> list[ImageRecord]:
    """Read the VOC images named by a list file (either format) with their masks.

    Masks come from the listed path, or for bare ids from ``SegmentationClassAug`` else ``SegmentationClass``.
    Entries whose image is missing are dropped; a listed mask that is missing leaves the image unlabelled.
    Every such problem is appended to ``problems`` if given, logged as one warning otherwise, and raised as
    ``DatasetError`` when ``strict``. Raises ``DatasetError`` when no list or no image is found.
    """
    voc_root = Path(voc_root)
    path = find_list_file(voc_root, list_file)
    found: list[Problem] = []
    records: list[ImageRecord] = []
    for number, entry in read_list_file(path, None if strict else found):
        image, mask, missing_mask = _resolve(voc_root, entry)
        if not image.is_file():
            found.append(Problem(path, "missing_file", f"{image} not found; restore the image or delete the line",
                                 line=number))
            continue
        if missing_mask is not None:
            found.append(Problem(path, "missing_file", f"mask {voc_root / missing_mask} not found; the image is "
                                 "used unlabelled. Restore the mask or fix the line", line=number))
        records.append(ImageRecord(name=entry.name, image_path=image, mask_path=mask))
    if strict and found:
        raise DatasetError(f"{found[0].path}:{found[0].line}: {found[0].message}")
    if problems is not None:
        problems.extend(found)
    elif found:
        logger.warning("%s: %d problem(s), e.g. line %s: %s. Run `pss doctor %s` for the full list",
                       path, len(found), found[0].line, found[0].message, voc_root)
    if not records:
        raise DatasetError(f"{path}: no usable image in this list (under {voc_root}); check that the list matches "
                           "the JPEGImages folder, or pass another list (CLI --list)")
    return records
