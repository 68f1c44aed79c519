"""The user cache (pss.api.users.read_user) notices a list file edited in place, not only a changed folder.

An edit in place (an editor saving over the file, ``>>`` in a shell) leaves the user folder's entries, and so its
mtime, unchanged; the folder mtimes are put back explicitly below so that only the list file's own (mtime_ns, size)
can tell the cache.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pss.api.users import forget_users, read_user
from pss.workspace import Workspace

NAMES = ("a", "b", "c")


def _user(tmp_path: Path) -> tuple[Workspace, Path]:
    """Workspace with user id1: three images, masks for all three, tags, val_all.txt = {a}, annotated.txt = {b}."""
    ws = Workspace(tmp_path / "ws")
    user_dir = ws.personal / "id1"
    (user_dir / "JPEGImages").mkdir(parents=True)
    (user_dir / "SegmentationClass").mkdir()
    for name in NAMES:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(user_dir / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(user_dir / "SegmentationClass" / f"{name}.png")
    (user_dir / "imgLabelList.txt").write_text("a.jpg:dog\nb.jpg:cat\nc.jpg:UNKNOWN\n")
    (user_dir / "val_all.txt").write_text("/JPEGImages/a.jpg /SegmentationClass/a.png\n")
    (user_dir / "annotated.txt").write_text("/JPEGImages/b.jpg /SegmentationClass/b.png\n")
    (user_dir / "train_cluster2.txt").write_text("".join(
        f"/JPEGImages/{n}.jpg /SegmentationClass/{n}.png 0\n" for n in NAMES))
    forget_users(ws)
    return ws, user_dir


def _folder_times(user_dir: Path) -> dict[Path, tuple[int, int]]:
    return {d: (os.stat(d).st_atime_ns, os.stat(d).st_mtime_ns)
            for d in (user_dir, user_dir / "JPEGImages", user_dir / "SegmentationClass")}


def _edit_in_place(path: Path, text: str, folder_times: dict[Path, tuple[int, int]]) -> None:
    """Overwrite ``path``'s content through the same inode, then put the folders' mtimes back as they were."""
    with open(path, "r+", encoding="utf-8") as handle:
        handle.seek(0)
        handle.write(text)
        handle.truncate()
    for folder, times in folder_times.items():
        os.utime(folder, ns=times)


def test_a_tag_list_edited_in_place_is_seen(tmp_path: Path) -> None:
    ws, user_dir = _user(tmp_path)
    assert read_user(ws, "id1").record("c").tags == ()
    times = _folder_times(user_dir)
    _edit_in_place(user_dir / "imgLabelList.txt", "a.jpg:dog\nb.jpg:cat\nc.jpg:person,car\n", times)
    assert _folder_times(user_dir) == times  # the folder itself looks unchanged
    assert read_user(ws, "id1").record("c").tags == (7, 15)  # car = 7, person = 15


def test_val_all_edited_in_place_changes_the_evaluation_set(tmp_path: Path) -> None:
    ws, user_dir = _user(tmp_path)
    first = read_user(ws, "id1")
    assert first.eval_names == {"a"} and [r.name for r in first.records if r.scored] == ["a"]
    _edit_in_place(user_dir / "val_all.txt", "/JPEGImages/a.jpg /SegmentationClass/a.png\n"
                   "/JPEGImages/c.jpg /SegmentationClass/c.png\n", _folder_times(user_dir))
    second = read_user(ws, "id1")
    assert second.eval_names == {"a", "c"} and [r.name for r in second.records if r.scored] == ["a", "c"]


def test_annotated_list_edited_in_place_changes_the_training_set(tmp_path: Path) -> None:
    ws, user_dir = _user(tmp_path)
    assert [r.name for r in read_user(ws, "id1").annotated_train] == ["b"]
    _edit_in_place(user_dir / "annotated.txt", "/JPEGImages/b.jpg /SegmentationClass/b.png\n"
                   "/JPEGImages/c.jpg /SegmentationClass/c.png\n", _folder_times(user_dir))
    assert [r.name for r in read_user(ws, "id1").annotated_train] == ["b", "c"]


def test_a_grouping_edited_in_place_is_seen(tmp_path: Path) -> None:
    ws, user_dir = _user(tmp_path)
    assert read_user(ws, "id1").groups == {"a": 0, "b": 0, "c": 0}
    _edit_in_place(user_dir / "train_cluster2.txt", "".join(
        f"/JPEGImages/{n}.jpg /SegmentationClass/{n}.png {i % 2}\n" for i, n in enumerate(NAMES)),
        _folder_times(user_dir))
    assert read_user(ws, "id1").groups == {"a": 0, "b": 1, "c": 0}


def test_a_size_change_is_seen_even_with_the_old_mtime(tmp_path: Path) -> None:
    """The key is (mtime_ns, size): a rewrite that restores the file's mtime (a copy with ``cp -p``, a sync tool)
    still changes its size here, and the cache sees it."""
    ws, user_dir = _user(tmp_path)
    tag_file = user_dir / "imgLabelList.txt"
    read_user(ws, "id1")
    stat = os.stat(tag_file)
    _edit_in_place(tag_file, "a.jpg:dog\nb.jpg:cat\nc.jpg:UNKNOWN\nc.jpg:bus\n", _folder_times(user_dir))
    os.utime(tag_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, bigger file
    problems = read_user(ws, "id1").problems
    assert any(p.kind == "duplicate_tag_line" for p in problems)


def test_the_unchanged_user_is_served_from_the_cache(tmp_path: Path) -> None:
    ws, _ = _user(tmp_path)
    assert read_user(ws, "id1") is read_user(ws, "id1")


@pytest.fixture(autouse=True)
def _clean_cache() -> None:
    forget_users()
