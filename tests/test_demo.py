"""Tests of the embedded demo generator (pss.data.demo): determinism, layout, masks, EXIF, styles, scenes."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pss.data.demo import DemoConfig, generate_demo, make_contact_sheet, render_user_image
from pss.data.demo_painter import Painter
from pss.data.demo_plan import plan_user
from pss.data.demo_shapes import DRAWERS
from pss.data.labels import CLASS_NAMES, read_label_png
from pss.errors import ConfigError, DatasetError

SMALL = DemoConfig(num_source=24, num_users=2, images_per_user=20)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    generate_demo(root, seed=0, config=SMALL)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tag_lines(user_dir: Path) -> dict[str, list[str]]:
    tags = {}
    for line in (user_dir / "imgLabelList.txt").read_text(encoding="utf-8").splitlines():
        name, tag_text = line.split(":")
        tags[name] = tag_text.split(",")
    return tags


def _mask_classes(mask: np.ndarray) -> set[str]:
    return {CLASS_NAMES[v] for v in np.unique(mask) if 0 < v < len(CLASS_NAMES)}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(demo_root: Path, tmp_path: Path) -> None:
    again = generate_demo(tmp_path / "again", seed=0, config=SMALL)
    other = generate_demo(tmp_path / "other", seed=1, config=SMALL)
    first, second, third = _files(demo_root), _files(again.root), _files(other.root)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    shared_sources = [k for k in first if k.startswith("VOC2012/JPEGImages/") and k in third]
    assert len(shared_sources) == 24  # same ids, different pictures
    assert all(first[k] != third[k] for k in shared_sources)
    assert not {k for k in first if k.startswith("personal/id1/JPEGImages/")} & set(third)  # new random names


def test_source_layout_and_held_out_split(demo_root: Path) -> None:
    voc = demo_root / "VOC2012"
    ids = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    assert len(ids) == 24 and all(re.fullmatch(r"20(0[7-9]|1[0-2])_\d{6}", i) for i in ids)
    assert sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png")) == ids
    train = []
    for line in (voc / "list" / "train_aug.txt").read_text(encoding="utf-8").splitlines():
        image, mask = line.split(" ")
        stem = re.fullmatch(r"/JPEGImages/(\w+)\.jpg", image).group(1)  # type: ignore[union-attr]
        assert mask == f"/SegmentationClassAug/{stem}.png"
        train.append(stem)
    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text(encoding="utf-8").split()
    assert len(val) == round(0.15 * 24) == 4
    assert not set(val) & set(train) and sorted(train + val) == ids


def test_user_layout_names_tags_and_val_list(demo_root: Path) -> None:
    users = sorted(p.name for p in (demo_root / "personal").iterdir())
    assert users == ["id1", "id2"]
    for user in users:
        folder = demo_root / "personal" / user
        names = sorted(p.stem for p in (folder / "JPEGImages").glob("*.jpg"))
        assert len(names) == 20 and all(re.fullmatch(r"[a-z]{10}", n) for n in names)
        tags = _tag_lines(folder)
        assert sorted(Path(n).stem for n in tags) == names  # every image tagged, once
        assert all(t and set(t) <= set(CLASS_NAMES[1:]) for t in tags.values())  # VOC names, never empty
        masks = sorted(p.stem for p in (folder / "SegmentationClass").glob("*.png"))
        assert len(masks) == round(0.3 * 20) == 6 and set(masks) <= set(names)
        val_lines = (folder / "val_all.txt").read_text(encoding="utf-8").splitlines()
        assert val_lines == sorted(f"/JPEGImages/{n}.jpg /SegmentationClass/{n}.png 0" for n in masks)


def test_tags_are_the_classes_of_the_mask(demo_root: Path) -> None:
    for folder in (demo_root / "personal").iterdir():
        tags = _tag_lines(folder)
        for mask_path in (folder / "SegmentationClass").glob("*.png"):
            assert set(tags[f"{mask_path.stem}.jpg"]) == _mask_classes(read_label_png(mask_path))


def test_masks_are_palette_pngs_in_label_space_with_ignore_band(demo_root: Path) -> None:
    pairs = [(p, demo_root / "VOC2012" / "JPEGImages" / f"{p.stem}.jpg")
             for p in (demo_root / "VOC2012" / "SegmentationClassAug").glob("*.png")]
    pairs += [(p, p.parent.parent / "JPEGImages" / f"{p.stem}.jpg")
              for p in (demo_root / "personal").glob("id*/SegmentationClass/*.png")]
    assert len(pairs) == 24 + 2 * 6
    for mask_path, image_path in pairs:
        with Image.open(mask_path) as mask_image:
            assert mask_image.mode == "P"
        mask = read_label_png(mask_path)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(21)) | {255} and 255 in values and 0 in values
        assert _mask_classes(mask)  # at least one visible object
        with Image.open(image_path) as image:
            assert ImageOps.exif_transpose(image).size == (mask.shape[1], mask.shape[0])


def test_exif_rotated_images_display_like_their_masks(demo_root: Path) -> None:
    plan = plan_user(0, 1, SMALL.images_per_user, SMALL.labelled_fraction)
    rotated = [i for i, o in enumerate(plan.orientation) if o != 1]
    assert len(rotated) == 1 and rotated[0] in plan.labelled  # 5 % of 20, and labelled
    index = rotated[0]
    name = plan.names[index]
    folder = demo_root / "personal" / "id1"
    with Image.open(folder / "JPEGImages" / f"{name}.jpg") as image:
        orientation = image.getexif().get(0x0112)
        assert orientation == plan.orientation[index] and orientation in (3, 6, 8)
        displayed = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.float32)
        stored_size = image.size
    mask = read_label_png(folder / "SegmentationClass" / f"{name}.png")
    assert displayed.shape[:2] == mask.shape
    if orientation in (6, 8):  # a phone held upright: landscape pixels, portrait display
        assert stored_size == (mask.shape[0], mask.shape[1]) and mask.shape[0] > mask.shape[1]
    expected, label = render_user_image(0, 1, index, SMALL, plan)
    assert np.array_equal(label, mask)
    assert np.abs(displayed - expected.astype(np.float32)).mean() < 6.0  # JPEG error only
    assert np.abs(displayed - np.rot90(expected, 2).astype(np.float32)).mean() > 15.0


def _mean_rgb(paths: list[Path]) -> np.ndarray:
    return np.mean([np.asarray(Image.open(p).convert("RGB"), np.float32).reshape(-1, 3).mean(0) for p in paths], 0)


def test_users_look_different_from_source(demo_root: Path) -> None:
    source = _mean_rgb(sorted((demo_root / "VOC2012" / "JPEGImages").glob("*.jpg")))
    warm = _mean_rgb(sorted((demo_root / "personal" / "id1" / "JPEGImages").glob("*.jpg")))
    hazy = _mean_rgb(sorted((demo_root / "personal" / "id2" / "JPEGImages").glob("*.jpg")))
    # id1 (warm tungsten light): red over blue clearly above the neutral source's ratio
    assert warm[0] / warm[2] > 1.25 * (source[0] / source[2])
    # id2 (hazy, over-exposed): brighter than the source on average
    assert hazy.mean() > source.mean() + 15.0


def test_source_covers_the_classes_and_users_follow_their_priors(demo_root: Path) -> None:
    seen: set[str] = set()
    for mask_path in (demo_root / "VOC2012" / "SegmentationClassAug").glob("*.png"):
        seen |= _mask_classes(read_label_png(mask_path))
    assert len(seen) >= 18  # primaries cycle through all 20 classes
    pets = [t for tags in _tag_lines(demo_root / "personal" / "id1").values() for t in tags]
    prior = {"cat", "dog", "sofa", "person", "pottedplant", "chair", "tvmonitor"}  # id1, the pet owner
    assert sum(t in prior for t in pets) >= 0.9 * len(pets)


def test_images_of_one_recurring_scene_are_alike(demo_root: Path) -> None:
    plan = plan_user(0, 1, SMALL.images_per_user, SMALL.labelled_fraction)
    folder = demo_root / "personal" / "id1" / "JPEGImages"
    small = {}
    for name in plan.names:
        with Image.open(folder / f"{name}.jpg") as image:
            small[name] = np.asarray(ImageOps.exif_transpose(image).convert("RGB").resize((8, 8)), np.float32)
    same, different = [], []
    for (i, a), (j, b) in itertools.combinations(enumerate(plan.names), 2):
        if plan.scene_of[i] < 0 or plan.scene_of[j] < 0:
            continue
        (same if plan.scene_of[i] == plan.scene_of[j] else different).append(np.abs(small[a] - small[b]).mean())
    assert same and different and np.mean(same) < 0.75 * np.mean(different)


def test_every_class_has_its_own_silhouette() -> None:
    silhouettes = {}
    for name, draw in DRAWERS.items():
        painter = Painter(200, 400, origin=(200, 150), unit=100)
        draw(painter, np.random.default_rng(0), np.array([0.5, 0.5, 0.5], np.float32))
        ys, xs = np.nonzero(painter.mask)
        assert ys.size > 500, name
        crop = painter.mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        side = max(crop.shape)  # pad to a square, centred: the aspect ratio is part of the shape
        square = np.zeros((side, side), np.uint8)
        y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        square[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop * 255
        silhouettes[name] = np.asarray(Image.fromarray(square).resize((32, 32))) > 127
    assert sorted(silhouettes) == sorted(CLASS_NAMES[1:])
    for a, b in itertools.combinations(silhouettes, 2):
        iou = (silhouettes[a] & silhouettes[b]).sum() / (silhouettes[a] | silhouettes[b]).sum()
        assert iou < 0.85, (a, b, iou)


def test_output_folder_rules_and_progress(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DatasetError, match="choose an empty"):
        generate_demo(foreign, config=SMALL)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "mine"
    tiny = DemoConfig(num_source=3, num_users=1, images_per_user=4)
    root = tmp_path / "demo"
    generate_demo(root, config=tiny)
    stale = root / "personal" / "id1" / "train_cluster4.txt"
    stale.write_text("stale", encoding="utf-8")
    calls: list[tuple[float, str]] = []
    summary = generate_demo(root, seed=3, config=tiny, progress=lambda f, m: calls.append((f, m)))
    assert not stale.exists() and "seed: 3" in (root / "README.txt").read_text(encoding="utf-8")
    assert summary.source_images == 3 and summary.users == ["id1"] and summary.images_per_user == {"id1": 4}
    assert len(calls) == 7 and calls[-1][0] == 1.0
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))
    with pytest.raises(ConfigError, match="labelled_fraction"):
        generate_demo(tmp_path / "bad", config=DemoConfig(labelled_fraction=0.0))


def test_contact_sheet_has_a_row_per_collection(demo_root: Path, tmp_path: Path) -> None:
    out = make_contact_sheet(demo_root, tmp_path / "sheet.png", per_user=3)
    with Image.open(out) as sheet:
        width, height = sheet.size
    assert height >= 3 * 104 and width > 3 * 104  # source + 2 users, thumbnails 104 px high
    with pytest.raises(DatasetError, match="no VOC2012"):
        make_contact_sheet(tmp_path / "empty", tmp_path / "x.png")
