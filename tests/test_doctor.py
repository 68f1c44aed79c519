"""The dataset doctor: silent on a clean demo, and finds every problem planted in a damaged copy."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pss.data.demo import DemoConfig, generate_demo
from pss.data.labels import read_label_png, write_label_png
from pss.data.pss_layout import read_user
from pss.data.problems import Problem
from pss.data.validate import check_root, format_problems
from pss.data.voc_layout import read_voc


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    generate_demo(root, seed=0, config=DemoConfig(num_source=12, num_users=2, images_per_user=12))
    return root


def found(problems: list[Problem], root: Path) -> set[tuple[str, str, int | None]]:
    return {(p.kind, p.path.relative_to(root).as_posix(), p.line) for p in problems}


def test_clean_demo_has_no_problem(demo_root: Path) -> None:
    steps: list[float] = []
    assert check_root(demo_root, progress=lambda fraction, message: steps.append(fraction)) == []
    assert steps and steps[-1] == pytest.approx(1.0)
    assert format_problems([]) == "No problems found."


def damage(root: Path) -> set[tuple[str, str, int | None]]:
    """Plant one problem of each kind; return the (kind, path, line) the doctor must report."""
    id1 = read_user(root / "personal", "id1")
    unlabelled, labelled = id1.unlabelled, id1.labelled
    expected: set[tuple[str, str, int | None]] = set()

    truncated = unlabelled[0].image_path
    truncated.write_bytes(truncated.read_bytes()[:-300])
    expected.add(("corrupt_image", f"personal/id1/JPEGImages/{truncated.name}", None))

    small = labelled[0].mask_path
    write_label_png(small, read_label_png(small)[:-3])
    expected.add(("mask_size_mismatch", f"personal/id1/SegmentationClass/{small.name}", None))

    tag_file = root / "personal/id1/imgLabelList.txt"
    lines = tag_file.read_text().splitlines()
    untagged = unlabelled[1].image_path.name
    lines = [line for line in lines if not line.startswith(untagged + ":")]
    lines[0] = lines[0].split(":")[0] + ":cat,unicorn"
    lines.append("this line has no colon")
    tag_file.write_text("\n".join(lines) + "\n")
    expected |= {("untagged_image", f"personal/id1/JPEGImages/{untagged}", None),
                 ("unknown_class", "personal/id1/imgLabelList.txt", 1),
                 ("bad_tag_line", "personal/id1/imgLabelList.txt", len(lines))}

    shutil.rmtree(root / "personal/id2/SegmentationClass")
    (root / "personal/id2/val_all.txt").unlink()
    expected.add(("missing_folder", "personal/id2/SegmentationClass", None))

    source = read_voc(root / "VOC2012")
    label = read_label_png(source[0].mask_path)
    label[:2, :2] = 37
    write_label_png(source[0].mask_path, label)
    expected.add(("bad_label_values", f"VOC2012/SegmentationClassAug/{source[0].mask_path.name}", None))

    rotated = next(r.mask_path for r in source[1:] if len(set(read_label_png(r.mask_path).shape)) == 2)
    write_label_png(rotated, read_label_png(rotated).T)  # as if drawn on an unrotated (EXIF) photo
    expected.add(("mask_orientation_mismatch", f"VOC2012/SegmentationClassAug/{rotated.name}", None))

    train_list = root / "VOC2012/list/train_aug.txt"
    count = len(train_list.read_text().splitlines())
    with train_list.open("a") as handle:
        handle.write("/JPEGImages/2099_000001.jpg /SegmentationClassAug/2099_000001.png\nnot/a list line at all x\n")
    expected |= {("missing_file", "VOC2012/list/train_aug.txt", count + 1),
                 ("bad_list_line", "VOC2012/list/train_aug.txt", count + 2)}
    return expected


def test_every_planted_problem_is_found(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "damaged"
    shutil.copytree(demo_root, root)
    expected = damage(root)
    problems = check_root(root)
    assert found(problems, root) == expected  # each planted problem, and nothing else
    assert len(problems) == len(expected)
    assert all(p.message for p in problems)
    report = format_problems(problems)
    assert report.startswith(f"{len(expected)} problem(s):")
    assert "bad_label_values (1)" in report and "37" in report

    # The same problems are found from each narrower entry point.
    assert found(check_root(root / "VOC2012"), root) == {e for e in expected if e[1].startswith("VOC2012/")}
    assert found(check_root(root / "personal"), root) == {e for e in expected if e[1].startswith("personal/")}
    assert found(check_root(root / "personal/id1"), root) == {e for e in expected if e[1].startswith("personal/id1")}


def test_missing_user_images_folder_and_unknown_layouts(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    shutil.rmtree(root / "personal/id2/JPEGImages")
    shutil.rmtree(root / "VOC2012")
    assert found(check_root(root), root) == {("missing_folder", "VOC2012", None),
                                             ("missing_folder", "personal/id2/JPEGImages", None)}
    (tmp_path / "empty").mkdir()
    assert [p.kind for p in check_root(tmp_path / "empty")] == ["unknown_layout"]
    assert [p.kind for p in check_root(tmp_path / "nowhere")] == ["missing_folder"]
