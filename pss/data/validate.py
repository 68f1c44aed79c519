"""The dataset doctor: find every problem in a data root, a VOC root, a personal root or one user folder.

``check_root`` never stops at the first problem: it decodes every image and mask once (in a thread pool:
the decoders release the GIL), checks sizes, orientations and label values, and parses every list and
tag file. Each ``Problem`` names the file (and line) and says what to do.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pss.data.image_io import IMAGE_SUFFIXES, ensure_strict_pillow, load_mask, load_rgb_tensor
from pss.data.labels import label_value_problem, read_label_png
from pss.data.problems import KINDS, Problem
from pss.data.pss_layout import list_users, read_user
from pss.data.saliency import SALIENCY_FOLDER, check_saliency
from pss.data.voc_layout import DEFAULT_LISTS, MASK_FOLDERS, read_list_file
from pss.errors import DatasetError

Progress = Callable[[float, str], None]

_USER_RE = re.compile(r"^id\d+$")


def check_files(pairs: Iterable[tuple[Path, list[Path]]], progress: Progress | None = None,
                workers: int | None = None) -> list[Problem]:
    """Decode each image and its masks once; report corrupt files, size/orientation mismatches, bad label values."""
    ensure_strict_pillow()
    pairs = list(pairs)
    problems: list[Problem] = []
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, found in enumerate(pool.map(_check_pair, pairs), start=1):
            problems.extend(found)
            if progress is not None and (done % 50 == 0 or done == len(pairs)):
                progress(done / len(pairs), f"checked {done}/{len(pairs)} images")
    return problems


def _reason(exc: DatasetError, path: Path) -> str:
    """The error's message without its leading "<path>: " (the Problem already names the file)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _check_pair(pair: tuple[Path, list[Path]]) -> list[Problem]:
    image_path, mask_paths = pair
    try:
        height, width = load_rgb_tensor(image_path).shape[1:]
    except DatasetError as exc:
        return [Problem(image_path, "corrupt_image", _reason(exc, image_path))]
    return [p for mask_path in mask_paths if (p := _check_mask(mask_path, (height, width))) is not None]


def _check_mask(path: Path, image_hw: tuple[int, int]) -> Problem | None:
    try:
        mask = read_label_png(path)
    except DatasetError as exc:
        return Problem(path, "corrupt_mask", _reason(exc, path))
    if mask.shape != image_hw:
        kind = "mask_orientation_mismatch" if mask.shape == image_hw[::-1] else "mask_size_mismatch"
        try:
            load_mask(path, image_hw)  # decodes again, only for broken masks: its message says what to do
        except DatasetError as exc:
            return Problem(path, kind, _reason(exc, path))
    values = label_value_problem(mask)
    return None if values is None else Problem(path, "bad_label_values", values)


def check_voc(voc_root: Path, progress: Progress | None = None) -> list[Problem]:
    """Check a VOC root: folders, every list file under ``list/`` and ``ImageSets/Segmentation/``, every image/mask."""
    problems: list[Problem] = []
    image_dir = voc_root / "JPEGImages"
    if not image_dir.is_dir():
        problems.append(Problem(image_dir, "missing_folder", "no JPEGImages/ folder; the VOC root must hold the "
                                "VOC2012 JPEG images (VOCdevkit/VOC2012)"))
    mask_dirs = [voc_root / f for f in MASK_FOLDERS if (voc_root / f).is_dir()]
    if not mask_dirs:
        problems.append(Problem(voc_root / MASK_FOLDERS[0], "missing_folder", "no SegmentationClassAug/ or "
                                "SegmentationClass/ folder; add the SBD-augmented masks (SegmentationClassAug)"))
    lists = sorted(p for d in ("list", "ImageSets/Segmentation") for p in (voc_root / d).glob("*.txt"))
    if not any((voc_root / relative).is_file() for relative in DEFAULT_LISTS):
        problems.append(Problem(voc_root / DEFAULT_LISTS[0], "missing_file", "no training list (train_aug.txt); "
                                "add one in either list format, or pass the list path explicitly"))
    for list_file in lists:
        for number, entry in read_list_file(list_file, problems):
            image = voc_root / entry.image if entry.image else image_dir / f"{entry.name}.jpg"
            missing = [image] if image_dir.is_dir() and not image.is_file() else []
            if entry.mask is not None and mask_dirs and not (voc_root / entry.mask).is_file():
                missing.append(voc_root / entry.mask)
            if missing:  # one problem per line, naming every missing file of it
                problems.append(Problem(list_file, "missing_file", f"{' and '.join(map(str, missing))} not found; "
                                        "restore the file(s) or delete the line", line=number))
    images = _image_files(image_dir)
    masks = {d: {p.stem: p for p in d.glob("*.png")} for d in mask_dirs}
    for by_stem in masks.values():
        for stem in sorted(by_stem.keys() - images.keys()) if image_dir.is_dir() else []:
            problems.append(Problem(by_stem[stem], "orphan_mask", "mask without an image in JPEGImages; restore "
                                    "the image or delete the mask"))
    pairs = [(path, [m[stem] for m in masks.values() if stem in m]) for stem, path in sorted(images.items())]
    return problems + check_files(pairs, progress)


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def check_user(personal_root: Path, user: str, progress: Progress | None = None) -> list[Problem]:
    """Check one user folder: the reader's problems (tags, lists, groups) plus every image and mask decoded, and,
    when the user has a ``SALImages/`` folder, every image's saliency map (missing, unreadable, size, range)."""
    try:
        collection = read_user(personal_root, user)
    except DatasetError as exc:
        folder = Path(personal_root) / user / "JPEGImages"
        return [Problem(folder, "missing_folder", _reason(exc, folder))]
    pairs = [(r.image_path, [r.mask_path] if r.mask_path is not None else []) for r in collection.records]
    problems = collection.problems + check_files(pairs, progress)
    if (collection.root / SALIENCY_FOLDER).is_dir():  # the user's own saliency maps (the tags pipelines use them)
        problems += check_saliency(collection.records)
    return problems


def _scaled(progress: Progress | None, start: float, span: float, label: str) -> Progress | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + span * fraction, f"{label}: {message}")


def check_root(root: Path, progress: Progress | None = None) -> list[Problem]:
    """Find every problem under ``root``: a data root (``VOC2012/`` and/or ``personal/``), a VOC root, a
    personal root (``id<N>/`` folders) or a single user folder. Never raises for dataset content."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(root, "missing_folder", "folder not found; pass a data root (with VOC2012/ and personal/), "
                        "a VOC root, a personal root or a user folder")]
    problems: list[Problem] = []
    voc_roots: list[Path] = []
    users: list[tuple[Path, str]] = []
    if (root / "VOC2012").is_dir() or (root / "personal").is_dir():
        for name, what in (("VOC2012", "the labelled source set"), ("personal", "the users' photo folders")):
            if not (root / name).is_dir():
                problems.append(Problem(root / name, "missing_folder", f"no {name}/ folder ({what}); add it, or "
                                        "run `pss demo` for an example data root"))
        voc_roots = [root / "VOC2012"] if (root / "VOC2012").is_dir() else []
        personal = root / "personal"
        users = [(personal, u) for u in list_users(personal)] if personal.is_dir() else []
    elif any(_USER_RE.match(p.name) for p in root.iterdir() if p.is_dir()):
        users = [(root, u) for u in list_users(root)]
    elif _is_voc_root(root):
        voc_roots = [root]
    elif (root / "JPEGImages").is_dir():
        users = [(root.parent, root.name)]
    else:
        return [Problem(root, "unknown_layout", "no VOC2012/, personal/, id<N>/, JPEGImages/ or list file here; "
                        "pass a data root, a VOC root, a personal root or a user folder (see `pss demo` output)")]
    parts = len(voc_roots) + len(users)
    for i, voc_root in enumerate(voc_roots):
        problems += check_voc(voc_root, _scaled(progress, i / parts, 1 / parts, voc_root.name))
    for i, (personal_root, user) in enumerate(users, start=len(voc_roots)):
        problems += check_user(personal_root, user, _scaled(progress, i / parts, 1 / parts, user))
    return problems


def _is_voc_root(root: Path) -> bool:
    if (root / "imgLabelList.txt").is_file() or _USER_RE.match(root.name):
        return False
    return any((root / d).is_dir() for d in ("SegmentationClassAug", "list", "ImageSets"))


def format_problems(problems: list[Problem], limit_per_kind: int = 20) -> str:
    """Human-readable report: a summary line, then the problems grouped by kind (at most ``limit_per_kind`` each)."""
    if not problems:
        return "No problems found."
    counts = Counter(p.kind for p in problems)
    lines = [f"{len(problems)} problem(s): " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))]
    for kind in sorted(counts):
        lines.append("")
        lines.append(f"{kind} ({counts[kind]}): {KINDS.get(kind, '')}")
        listed = sorted((p for p in problems if p.kind == kind), key=lambda p: (str(p.path), p.line or 0))
        lines += [f"  {p.path}{'' if p.line is None else f':{p.line}'}: {p.message}" for p in listed[:limit_per_kind]]
        if counts[kind] > limit_per_kind:
            lines.append(f"  ... and {counts[kind] - limit_per_kind} more")
    return "\n".join(lines)
