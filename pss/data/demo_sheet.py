"""Contact sheet of a data root: one labelled row for the source set and one per user.

Each row shows two labelled images next to their masks (VOC palette, white = ignore) and a few more
images, each captioned with its classes. It reads the plain VOC/PSS layouts with PIL (EXIF orientation
applied), so it works on real data roots as well as on the demo.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from pss.data.labels import CLASS_NAMES, colorize, read_label_png
from pss.errors import DatasetError

THUMB_H = 104
LABEL_W = 200
CAPTION_H = 15
GAP = 4


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _thumb(rgb: np.ndarray, nearest: bool = False) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, int(round(w * THUMB_H / h))), THUMB_H)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.36, bold: bool = False) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 2 if bold else 1, cv2.LINE_AA)


def _collection(data_root: Path, user: str | None) -> list[tuple[Path, Path | None, list[str]]]:
    """(image, mask or None, tags) for the source set (``user=None``) or one user folder."""
    if user is None:
        voc = data_root / "VOC2012"
        items = []
        for jpg in sorted((voc / "JPEGImages").glob("*.jpg")):
            mask = voc / "SegmentationClassAug" / f"{jpg.stem}.png"
            tags = [CLASS_NAMES[v] for v in np.unique(read_label_png(mask)) if 0 < v < len(CLASS_NAMES)] \
                if mask.is_file() else []
            items.append((jpg, mask if mask.is_file() else None, tags))
        return items
    folder = data_root / "personal" / user
    tags_of: dict[str, list[str]] = {}
    tag_file = folder / "imgLabelList.txt"
    if tag_file.is_file():
        for line in tag_file.read_text(encoding="utf-8").splitlines():
            name, _, tag_text = line.partition(":")
            tags_of[Path(name.strip()).stem] = [t for t in tag_text.strip().split(",") if t and t != "UNKNOWN"]
    items = []
    for jpg in sorted((folder / "JPEGImages").glob("*.jpg")):
        mask = folder / "SegmentationClass" / f"{jpg.stem}.png"
        items.append((jpg, mask if mask.is_file() else None, tags_of.get(jpg.stem, [])))
    return items


def _descriptions(data_root: Path) -> dict[str, str]:
    """User style lines ("  id1: pet owner: ...") from a demo's README.txt; empty for real data."""
    readme = data_root / "README.txt"
    if not readme.is_file():
        return {}
    found = re.findall(r"^  (id\d+): (.+)$", readme.read_text(encoding="utf-8", errors="replace"), re.M)
    return dict(found)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.replace(":", ":,").replace(",", ", ").split():
        if lines and len(lines[-1]) + len(word) + 1 <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return [line.replace(":,", ":").rstrip(",") for line in lines]


def _row(label: str, note: str, items: list[tuple[Path, Path | None, list[str]]], per_user: int,
         rng: np.random.Generator) -> np.ndarray:
    labelled = [i for i in items if i[1] is not None]
    others = [i for i in items if i[1] is None] or items
    # show masks of the busiest of a few random labelled images: more classes say more
    pool = [labelled[int(k)] for k in rng.permutation(len(labelled))[:8]]
    chosen = sorted(pool, key=lambda item: -len(item[2]))[:2]
    chosen += [others[int(k)] for k in rng.permutation(len(others))[: max(0, per_user - len(chosen))]]
    cells: list[np.ndarray] = []
    for jpg, mask, tags in chosen:
        tiles = [_thumb(_load(jpg))]
        if mask is not None and len(cells) < 2:
            tiles.append(_thumb(colorize(read_label_png(mask)), nearest=True))
        block = np.full((THUMB_H + CAPTION_H, sum(t.shape[1] for t in tiles) + GAP * (len(tiles) - 1), 3), 255,
                        np.uint8)
        x = 0
        for tile in tiles:
            block[:THUMB_H, x:x + tile.shape[1]] = tile
            x += tile.shape[1] + GAP
        _text(block, ",".join(tags)[: block.shape[1] // 6], 2, THUMB_H + 11, 0.33)
        cells.append(block)
    width = LABEL_W + sum(c.shape[1] + GAP for c in cells)
    row = np.full((THUMB_H + CAPTION_H, width, 3), 255, np.uint8)
    _text(row, label, 6, 22, 0.6, bold=True)
    common = Counter(t for _, _, tags in items for t in tags).most_common(4)
    lines = _wrap(note, 30)[:3] + _wrap("top: " + ", ".join(name for name, _ in common), 30)[:3]
    for k, line in enumerate(lines):
        _text(row, line, 6, 40 + 13 * k, 0.36)
    x = LABEL_W
    for cell in cells:
        row[:, x:x + cell.shape[1]] = cell
        x += cell.shape[1] + GAP
    return row


def make_contact_sheet(data_root: Path, out_png: Path, per_user: int = 6, seed: int = 0) -> Path:
    """Write a PNG contact sheet of ``data_root``: source row + one row per user, ``per_user`` images each.

    Each row label names the collection and its most frequent classes; the first two labelled images of
    a row are shown next to their masks. Returns ``out_png``.
    """
    data_root, out_png = Path(data_root), Path(out_png)
    users = sorted((p.name for p in (data_root / "personal").glob("id*") if p.is_dir()),
                   key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    rng = np.random.default_rng(seed)
    notes = _descriptions(data_root)
    rows = []
    for label, user in [("source (VOC)", None)] + [(u, u) for u in users]:
        items = _collection(data_root, user)
        if items:
            rows.append(_row(label, notes.get(user or "", ""), items, per_user, rng))
    if not rows:
        raise DatasetError(f"{data_root}: no VOC2012/JPEGImages or personal/id*/JPEGImages images found; "
                           "point make_contact_sheet at a data root (e.g. the folder written by `pss demo`)")
    width = max(r.shape[1] for r in rows)
    sheet = np.full((sum(r.shape[0] + GAP for r in rows), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        sheet[y:y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + GAP
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out_png, format="PNG", optimize=True)
    return out_png
