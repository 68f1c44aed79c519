"""Reader and writer for the PSS personal-collection layout (one folder per user).

```
personal/id<N>/JPEGImages/<name>.jpg
personal/id<N>/SegmentationClass/<name>.png    # labelled images only
personal/id<N>/imgLabelList.txt                # "<name>.jpg:<cls>,<cls>"; "UNKNOWN" when no tag
personal/id<N>/val_all.txt                     # labelled (evaluated) images, list format
personal/id<N>/train_cluster<K>.txt            # optional groups: "/JPEGImages/<n>.jpg /SegmentationClass/<n>.png <g>"
personal/id<N>/annotated.txt                   # optional: images annotated for training (pss.data.annotations)
```
Reading is tolerant: problems are collected on ``UserCollection.problems`` (``strict=True`` raises the first).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pss.data.annotations import read_annotated
from pss.data.image_io import IMAGE_SUFFIXES
from pss.data.labels import NUM_CLASSES, class_index
from pss.data.problems import Problem
from pss.data.records import ImageRecord
from pss.data.voc_layout import read_list_file
from pss.errors import DatasetError
from pss.fileio import write_text_atomic

_USER_RE = re.compile(r"^id(\d+)$")
_CLUSTER_RE = re.compile(r"^train_cluster(\d+)\.txt$")
TAG_FILES: tuple[str, ...] = ("imgLabelList.txt", "imgLabelListnew.txt")  # the latter is written by rename_imgs()
_NO_TAG = {"", "unknown", "background"}
TAG_FORMAT = "'<name>.jpg:<class>,<class>' with VOC class names (or 'UNKNOWN' when the image has none)"


@dataclass
class UserCollection:
    """One user's photos.

    Attributes:
        user: folder name (``"id3"``).
        root: the user folder.
        records: every image, sorted by name; ``mask_path`` set for labelled ones.
        groups: group id per image name from ``train_cluster<K>.txt``, or ``None`` when no grouping is stored.
        group_k: the K of the grouping file read (``None`` without groups).
        eval_names: names listed in ``val_all.txt`` (``None`` if the file is absent).
        annotated: names listed in ``annotated.txt`` (images annotated in the app for training; may be empty).
        problems: everything odd found while reading (``pss.data.problems.Problem``).
    """

    user: str
    root: Path
    records: list[ImageRecord]
    groups: dict[str, int] | None = None
    group_k: int | None = None
    eval_names: set[str] | None = None
    annotated: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    @property
    def labelled(self) -> list[ImageRecord]:
        return [r for r in self.records if r.mask_path is not None]

    @property
    def unlabelled(self) -> list[ImageRecord]:
        return [r for r in self.records if r.mask_path is None]

    @property
    def eval_set(self) -> list[ImageRecord]:
        """The evaluation images, never trained on: ``val_all.txt``'s masked images, or (without that file) every
        masked image not in ``annotated.txt``. ``read_user`` marks exactly these records ``scored``."""
        if self.eval_names is not None:
            return [r for r in self.labelled if r.name in self.eval_names]
        return [r for r in self.labelled if r.name not in self.annotated]

    @property
    def annotated_train(self) -> list[ImageRecord]:
        """The annotated training images: masked, in ``annotated.txt``, and not evaluation images."""
        evaluation = {r.name for r in self.eval_set}
        return [r for r in self.labelled if r.name in self.annotated and r.name not in evaluation]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def record(self, name: str) -> ImageRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise DatasetError(f"{self.root}: no image named {name!r} in user {self.user}")


def list_users(root: Path) -> list[str]:
    """User folders (``id<N>``) under a personal root (or a data root holding ``personal/``), natural order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: personal data folder not found; pass the folder holding id1/, id2/, ...")
    if not any(_USER_RE.match(p.name) for p in root.iterdir()) and (root / "personal").is_dir():
        root = root / "personal"
    users = [p.name for p in root.iterdir() if p.is_dir() and _USER_RE.match(p.name)]
    return sorted(users, key=lambda name: int(name[2:]))


def _split_tag_line(line: str) -> tuple[str, list[str]]:
    """(image file name, raw class names) of a tag line; raises ``DatasetError`` if malformed."""
    text = line.strip()
    if text.count(":") != 1:
        raise DatasetError(f"malformed tag line {text!r}: expected {TAG_FORMAT}")
    name, _, tags = text.partition(":")
    name = name.strip()
    if not name or Path(name).suffix.lower() not in IMAGE_SUFFIXES or "," in name:
        raise DatasetError(f"malformed tag line {text!r}: expected {TAG_FORMAT}")
    return name, [t.strip() for t in tags.split(",") if t.strip().lower() not in _NO_TAG]


def _read_tags(user_dir: Path, stems: set[str], problems: list[Problem]) -> dict[str, tuple[int, ...]] | None:
    """Tags per image stem; ``None`` when there is no tag file (reported once, not once per image)."""
    tag_file = next((user_dir / f for f in TAG_FILES if (user_dir / f).is_file()), None)
    if tag_file is None:
        problems.append(Problem(user_dir / TAG_FILES[0], "missing_file", "no image-level tag file; create it with "
                                f"one line per image: {TAG_FORMAT}"))
        return None
    try:
        lines = tag_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(tag_file, "bad_tag_line", f"cannot read the tag file ({exc}); save it as UTF-8"))
        return None
    tags: dict[str, tuple[int, ...]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            file_name, raw = _split_tag_line(line)
        except DatasetError as exc:
            problems.append(Problem(tag_file, "bad_tag_line", f"{exc}; fix or delete the line", line=number))
            continue
        indices = set()
        for tag in raw:
            try:
                indices.add(class_index(tag))
            except DatasetError as exc:
                problems.append(Problem(tag_file, "unknown_class", f"{exc}; fix the tag for {file_name}",
                                        line=number))
        stem = Path(file_name).stem
        if stem not in stems:
            problems.append(Problem(tag_file, "tag_for_missing_image", f"{file_name} is not in JPEGImages; restore "
                                    "the image or delete the line", line=number))
        elif stem in tags:
            problems.append(Problem(tag_file, "duplicate_tag_line", f"{file_name} is tagged twice; the first line "
                                    "is used, delete the other", line=number))
        else:
            tags[stem] = tuple(sorted(i for i in indices if 0 < i < NUM_CLASSES))
    return tags


def _pick_cluster_file(user_dir: Path, k: int | None) -> tuple[Path, int] | None:
    if k is not None:
        path = user_dir / f"train_cluster{k}.txt"
        if not path.is_file():
            raise DatasetError(f"{path}: no grouping with K={k} for this user; run `pss group` with K={k}")
        return path, k
    found = [(p, int(m.group(1))) for p in user_dir.glob("train_cluster*.txt") if (m := _CLUSTER_RE.match(p.name))]
    if not found:
        return None
    # The newest grouping is the one the user made last; K breaks ties (files copied at the same moment).
    return max(found, key=lambda item: (item[0].stat().st_mtime, item[1]))


def _read_groups(user_dir: Path, stems: set[str], k: int | None, problems: list[Problem]
                 ) -> tuple[dict[str, int] | None, int | None]:
    picked = _pick_cluster_file(user_dir, k)
    if picked is None:
        return None, None
    path, k_found = picked
    groups: dict[str, int] = {}
    for number, entry in read_list_file(path, problems):
        if entry.group is None:
            problems.append(Problem(path, "bad_list_line", "line has no group column; expected "
                                    "'/JPEGImages/<n>.jpg /SegmentationClass/<n>.png <group>'", line=number))
        elif entry.name not in stems:
            problems.append(Problem(path, "missing_file", f"{entry.image or entry.name} is not in JPEGImages; "
                                    "restore the image or run `pss group` again", line=number))
        else:
            groups[entry.name] = entry.group
    for stem in sorted(stems - groups.keys()):
        problems.append(Problem(user_dir / "JPEGImages", "ungrouped_image", f"{stem} is not in {path.name}; run "
                                "`pss group` again to group every image"))
    return groups, k_found


def _read_eval_names(user_dir: Path, stems: set[str], problems: list[Problem]) -> set[str] | None:
    path = user_dir / "val_all.txt"
    if not path.is_file():
        return None
    names: set[str] = set()
    for number, entry in read_list_file(path, problems):
        if entry.name not in stems:
            problems.append(Problem(path, "missing_file", f"{entry.image or entry.name} is not in JPEGImages; "
                                    "restore the image or delete the line", line=number))
            continue
        if entry.mask is not None and not (user_dir / entry.mask).is_file():
            # val_all.txt lists the evaluated images: each needs its ground-truth mask.
            problems.append(Problem(path, "missing_file", f"mask {user_dir / entry.mask} not found; restore the "
                                    "mask or delete the line", line=number))
        names.add(entry.name)
    return names


def _list_images(user_dir: Path, problems: list[Problem]) -> dict[str, Path]:
    folder = user_dir / "JPEGImages"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; a user folder needs JPEGImages/ with the user's photos")
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            problems.append(Problem(path, "duplicate_name", f"{images[path.stem].name} has the same name; "
                                    "rename or delete one of them (names must be unique per user)"))
            continue
        images[path.stem] = path
    return images


def read_user(personal_root: Path, user: str, k: int | None = None, *, strict: bool = False) -> UserCollection:
    """Read one user's images, masks, tags, evaluation list and (newest, or ``train_cluster<k>.txt``) groups.

    Raises ``DatasetError`` if the user folder or its ``JPEGImages`` is missing, or, with ``strict``, on the
    first problem; otherwise problems are collected in ``UserCollection.problems``.
    """
    user_dir = Path(personal_root) / user
    if not user_dir.is_dir():
        raise DatasetError(f"{user_dir}: user folder not found; users here: {list_users(Path(personal_root))}")
    problems: list[Problem] = []
    images = _list_images(user_dir, problems)
    stems = set(images)
    mask_dir = user_dir / "SegmentationClass"
    masks = {p.stem: p for p in mask_dir.glob("*.png")} if mask_dir.is_dir() else {}
    if not mask_dir.is_dir():
        problems.append(Problem(mask_dir, "missing_folder", "no SegmentationClass/ folder: this user has no ground "
                                "truth, so results cannot be evaluated; add masks or ignore for adaptation only"))
    for stem in sorted(masks.keys() - stems):
        problems.append(Problem(masks[stem], "orphan_mask", "mask without an image in JPEGImages; restore the "
                                "image or delete the mask"))
    tags = _read_tags(user_dir, stems, problems)
    for stem in sorted(stems - tags.keys()) if tags is not None else []:
        problems.append(Problem(images[stem], "untagged_image", "image has no line in imgLabelList.txt; add "
                                f"'{images[stem].name}:<class>,...' (or ':UNKNOWN' if it shows no VOC class)"))
    groups, group_k = _read_groups(user_dir, stems, k, problems)
    eval_names = _read_eval_names(user_dir, stems, problems)
    annotated = read_annotated(user_dir, stems, problems)
    if strict and problems:
        first = problems[0]
        raise DatasetError(f"{first.path}{'' if first.line is None else f':{first.line}'}: {first.message}")
    tag_map = tags or {}
    # the evaluation set (UserCollection.eval_set): val_all.txt, or without it every mask not annotated for training
    evaluated = eval_names if eval_names is not None else set(masks) - annotated
    records = [ImageRecord(name=stem, image_path=images[stem], mask_path=masks.get(stem), tags=tag_map.get(stem, ()),
                           user=user, scored=stem in evaluated) for stem in sorted(images)]
    return UserCollection(user=user, root=user_dir, records=records, groups=groups, group_k=group_k,
                          eval_names=eval_names, annotated=annotated, problems=problems)


def write_cluster_list(user_dir: Path, groups: dict[str, int], k: int) -> Path:
    """Write ``train_cluster<k>.txt`` in the official format (one line per image, sorted by name), atomically.

    Image file names keep their real extension (looked up in ``JPEGImages``); masks are always ``.png``.
    """
    user_dir = Path(user_dir)
    if k < 1:
        raise DatasetError(f"number of groups must be >= 1, got K={k}")
    bad = {name: g for name, g in groups.items() if not 0 <= int(g) < k}
    if bad:
        raise DatasetError(f"group ids must be in 0..{k - 1}; got {dict(list(bad.items())[:3])}")
    images_dir = user_dir / "JPEGImages"
    suffixes = {p.stem: p.suffix for p in images_dir.iterdir()} if images_dir.is_dir() else {}
    lines = [f"/JPEGImages/{name}{suffixes.get(name, '.jpg')} /SegmentationClass/{name}.png {int(groups[name])}\n"
             for name in sorted(groups)]
    # atomic: readers never see a half-written grouping; mkdir=False: a missing user folder is an error, as before
    return write_text_atomic(user_dir / f"train_cluster{k}.txt", "".join(lines), mkdir=False)
