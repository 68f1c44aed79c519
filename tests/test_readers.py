"""Image IO, PSS-layout and VOC-layout readers on tiny hand-made folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pss.data.image_io import image_size, load_mask, load_rgb
from pss.data.labels import write_label_png
from pss.data.pss_layout import list_users, read_user, write_cluster_list
from pss.data.voc_layout import ListEntry, parse_list_line, read_voc
from pss.errors import DatasetError

RED, BLUE = (230, 20, 20), (20, 20, 230)


def save_image(path: Path, rgb: np.ndarray, orientation: int = 1) -> Path:
    """Save an RGB array (JPEG or PNG by suffix), optionally with an EXIF orientation tag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    options = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(rgb).save(path, exif=exif, **options)
    return path


def halves(height: int, width: int) -> np.ndarray:
    """Left half red, right half blue."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:, : width // 2], rgb[:, width // 2:] = RED, BLUE
    return rgb


def save_mask(path: Path, label: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(path, label)
    return path


# ---------------------------------------------------------------- image_io
def test_load_rgb_applies_exif_rotation(tmp_path: Path) -> None:
    # Stored 16 wide x 8 tall; orientation 6 = display rotated 90 degrees clockwise: 8 wide x 16 tall,
    # the stored left (red) half ends up on top.
    path = save_image(tmp_path / "r.jpg", halves(8, 16), orientation=6)
    rgb = load_rgb(path)
    assert rgb.shape == (16, 8, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    assert image_size(path) == (8, 16)
    assert np.abs(rgb[:6].astype(int) - RED).max() < 12
    assert np.abs(rgb[10:].astype(int) - BLUE).max() < 12


def test_load_rgb_exact_pixels_for_each_orientation(tmp_path: Path) -> None:
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10  # lossless PNG: exact comparison
    expected = {1: stored, 2: stored[:, ::-1], 3: stored[::-1, ::-1], 4: stored[::-1],
                5: stored.transpose(1, 0, 2), 6: np.rot90(stored, -1), 7: stored[::-1, ::-1].transpose(1, 0, 2),
                8: np.rot90(stored, 1)}
    for orientation, want in expected.items():
        path = save_image(tmp_path / f"o{orientation}.png", stored, orientation)
        np.testing.assert_array_equal(load_rgb(path), want, err_msg=f"orientation {orientation}")
        assert image_size(path) == (want.shape[1], want.shape[0])


def test_load_rgb_grey_and_alpha(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 4), 77, np.uint8), "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "g.png"), np.full((3, 4, 3), 77, np.uint8))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png")[..., 0], np.full((2, 2), 200))


def test_truncated_missing_and_garbage_files_raise(tmp_path: Path) -> None:
    data = save_image(tmp_path / "ok.jpg", halves(32, 32)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name in ("cut.jpg", "junk.jpg", "missing.jpg"):
        with pytest.raises(DatasetError, match=name):
            load_rgb(tmp_path / name)


def test_truncated_file_rejected_even_if_pillow_was_made_lenient(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # BMP goes through the Pillow fallback; another library may have switched truncation tolerance on.
    Image.fromarray(halves(16, 16)).save(tmp_path / "full.bmp")
    data = (tmp_path / "full.bmp").read_bytes()
    (tmp_path / "cut.bmp").write_bytes(data[: len(data) - 100])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert load_rgb(tmp_path / "full.bmp").shape == (16, 16, 3)
    with pytest.raises(DatasetError, match="cut.bmp"):
        load_rgb(tmp_path / "cut.bmp")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_mask_of_rotated_image(tmp_path: Path) -> None:
    image = save_image(tmp_path / "p.jpg", halves(8, 16), orientation=6)  # displayed 8 wide x 16 tall
    width, height = image_size(image)
    good = save_mask(tmp_path / "good.png", np.full((16, 8), 15, np.uint8))
    assert load_mask(good, (height, width)).shape == (16, 8)
    stored_orientation = save_mask(tmp_path / "raw.png", np.zeros((8, 16), np.uint8))
    with pytest.raises(DatasetError, match="raw.png.*orientation"):
        load_mask(stored_orientation, (height, width))
    wrong = save_mask(tmp_path / "small.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="small.png.*re-export"):
        load_mask(wrong, (height, width))


# ---------------------------------------------------------------- PSS layout
def test_tag_lines_as_read(tmp_path: Path) -> None:
    """The tag syntax through the reader: spaces, case and repeats; UNKNOWN, background or nothing = no tag."""
    for name in "abcdef":
        save_image(tmp_path / "id1" / "JPEGImages" / f"{name}.jpg", halves(6, 8))
    (tmp_path / "id1" / "imgLabelList.txt").write_text(
        "a.jpg:dog,cat\n e.jpg: Cat , dog ,cat\r\nb.jpg:UNKNOWN\nc.jpg:\nd.jpg:background,person\n"
        "no colon here\nx.jpg:cat:dog\n:cat\nx.txt:cat\nf.jpg:cat,unicorn\n", newline="")
    user = read_user(tmp_path, "id1")
    assert {r.name: r.tags for r in user.records} == {"a": (8, 12), "b": (), "c": (), "d": (15,), "e": (8, 12),
                                                      "f": (8,)}
    tag_problems = [p for p in user.problems if p.kind in ("bad_tag_line", "unknown_class")]
    assert [(p.kind, p.line) for p in tag_problems] == [("bad_tag_line", 6), ("bad_tag_line", 7),
                                                        ("bad_tag_line", 8), ("bad_tag_line", 9),
                                                        ("unknown_class", 10)]
    assert all("expected '<name>.jpg:<class>,<class>'" in p.message for p in tag_problems[:4])
    assert "unicorn" in tag_problems[4].message


def make_user(root: Path) -> Path:
    user = root / "id1"
    for name in ("a.jpg", "b.jpg", "c.png", "d.jpg"):
        save_image(user / "JPEGImages" / name, halves(6, 8))
    save_mask(user / "SegmentationClass" / "a.png", np.zeros((6, 8), np.uint8))
    save_mask(user / "SegmentationClass" / "c.png", np.zeros((6, 8), np.uint8))
    (user / "imgLabelList.txt").write_text("a.jpg:cat\nb.jpg:UNKNOWN\nthis line is broken\n\nc.png:dog,unicorn\n")
    return user


def test_read_user_tolerant(tmp_path: Path) -> None:
    user_dir = make_user(tmp_path)
    users = read_user(tmp_path, "id1")
    assert users.names == ["a", "b", "c", "d"]
    assert [r.tags for r in users.records] == [(8,), (), (12,), ()]
    assert [r.name for r in users.labelled] == ["a", "c"]
    assert users.records[2].mask_path == user_dir / "SegmentationClass" / "c.png"
    assert users.groups is None and users.eval_names is None
    found = {(p.kind, p.path.name, p.line) for p in users.problems}
    assert found == {("bad_tag_line", "imgLabelList.txt", 3), ("unknown_class", "imgLabelList.txt", 5),
                     ("untagged_image", "d.jpg", None)}
    with pytest.raises(DatasetError, match="imgLabelList.txt:3"):
        read_user(tmp_path, "id1", strict=True)


def test_missing_user_or_images_folder(tmp_path: Path) -> None:
    (tmp_path / "id2").mkdir()
    with pytest.raises(DatasetError, match="JPEGImages"):
        read_user(tmp_path, "id2")
    with pytest.raises(DatasetError, match="id9"):
        read_user(tmp_path, "id9")


def test_cluster_list_round_trip(tmp_path: Path) -> None:
    user_dir = make_user(tmp_path)
    path = write_cluster_list(user_dir, {"b": 1, "a": 0, "c": 2, "d": 1}, k=3)
    assert path == user_dir / "train_cluster3.txt"
    assert path.read_text().splitlines() == [
        "/JPEGImages/a.jpg /SegmentationClass/a.png 0", "/JPEGImages/b.jpg /SegmentationClass/b.png 1",
        "/JPEGImages/c.png /SegmentationClass/c.png 2", "/JPEGImages/d.jpg /SegmentationClass/d.png 1"]
    users = read_user(tmp_path, "id1")
    assert users.groups == {"a": 0, "b": 1, "c": 2, "d": 1} and users.group_k == 3
    assert read_user(tmp_path, "id1", k=3).groups == users.groups
    with pytest.raises(DatasetError, match="K=5"):
        read_user(tmp_path, "id1", k=5)
    with pytest.raises(DatasetError, match="0..2"):
        write_cluster_list(user_dir, {"a": 3}, k=3)


def test_list_users_natural_order(tmp_path: Path) -> None:
    for name in ("id10", "id2", "id1", "notes"):
        (tmp_path / "personal" / name).mkdir(parents=True)
    (tmp_path / "personal" / "id3").write_text("a file, not a user")
    assert list_users(tmp_path / "personal") == ["id1", "id2", "id10"]
    assert list_users(tmp_path) == ["id1", "id2", "id10"]  # a data root holding personal/


# ---------------------------------------------------------------- VOC layout
def test_parse_list_line() -> None:
    assert parse_list_line("2007_000032") == ListEntry("2007_000032", None, None, None)
    assert parse_list_line("/JPEGImages/x.jpg /SegmentationClassAug/x.png") == ListEntry(
        "x", "JPEGImages/x.jpg", "SegmentationClassAug/x.png", None)
    assert parse_list_line("/JPEGImages/x.jpg /SegmentationClass/x.png 7\n").group == 7
    assert parse_list_line("   ") is None
    for line in ("/JPEGImages/x.jpg /SegmentationClass/x.png seven", "a b c d", "/JPEGImages/x.jpg 3",
                 "/JPEGImages/x.jpg /SegmentationClass/x.png -1"):
        with pytest.raises(DatasetError, match="malformed list line"):
            parse_list_line(line)


def make_voc(root: Path) -> Path:
    for name in ("a", "b", "c"):
        save_image(root / "JPEGImages" / f"{name}.jpg", halves(6, 8))
    save_mask(root / "SegmentationClassAug" / "a.png", np.zeros((6, 8), np.uint8))
    save_mask(root / "SegmentationClassAug" / "b.png", np.zeros((6, 8), np.uint8))
    save_mask(root / "SegmentationClass" / "c.png", np.zeros((6, 8), np.uint8))
    (root / "list").mkdir()
    (root / "list" / "train_aug.txt").write_text(
        "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n/JPEGImages/b.jpg /SegmentationClassAug/b.png\n")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c\nb\n")
    return root


def test_read_voc_both_list_formats(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    pairs = read_voc(root)
    assert [(r.name, r.image_path, r.mask_path) for r in pairs] == [
        ("a", root / "JPEGImages/a.jpg", root / "SegmentationClassAug/a.png"),
        ("b", root / "JPEGImages/b.jpg", root / "SegmentationClassAug/b.png")]
    bare = read_voc(root, Path("ImageSets/Segmentation/val.txt"))
    assert [(r.name, r.mask_path) for r in bare] == [("c", root / "SegmentationClass/c.png"),
                                                     ("b", root / "SegmentationClassAug/b.png")]


def test_read_voc_problems(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    (root / "list" / "train_aug.txt").write_text(
        "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n/JPEGImages/gone.jpg /SegmentationClassAug/gone.png\n"
        "one two three four\n/JPEGImages/c.jpg /SegmentationClassAug/c.png\n")
    problems: list = []
    records = read_voc(root, problems=problems)
    assert [(r.name, r.mask_path) for r in records] == [("a", root / "SegmentationClassAug/a.png"), ("c", None)]
    assert [(p.kind, p.line) for p in problems] == [("bad_list_line", 3), ("missing_file", 2), ("missing_file", 4)]
    with pytest.raises(DatasetError, match="train_aug.txt:3: malformed"):
        read_voc(root, strict=True)


def test_read_voc_without_list_says_where_it_looked(tmp_path: Path) -> None:
    save_image(tmp_path / "JPEGImages" / "a.jpg", halves(6, 8))
    with pytest.raises(DatasetError, match=r"list/train_aug.txt.*ImageSets/Segmentation/train.txt.*list_file"):
        read_voc(tmp_path)
