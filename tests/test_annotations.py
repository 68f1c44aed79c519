"""The annotated training list and the "annotate next" order (pss.data.annotations), against hand-worked cases."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pss.data.annotations import ANNOTATED_LIST, rank_queue, read_annotated, write_annotated
from pss.data.pss_layout import read_user
from pss.errors import DatasetError


def _user(root: Path, names: list[str], masked: list[str], val_all: list[str] | None) -> Path:
    user = root / "id1"
    (user / "JPEGImages").mkdir(parents=True)
    (user / "SegmentationClass").mkdir()
    for n in names:
        Image.new("RGB", (8, 6)).save(user / "JPEGImages" / f"{n}.jpg")
        (user / "imgLabelList.txt").open("a").write(f"{n}.jpg:dog\n")
    for n in masked:
        Image.fromarray(np.zeros((6, 8), np.uint8), mode="L").save(user / "SegmentationClass" / f"{n}.png")
    if val_all is not None:
        (user / "val_all.txt").write_text("".join(f"/JPEGImages/{n}.jpg /SegmentationClass/{n}.png\n"
                                                  for n in val_all))
    return user


def test_splits_keep_evaluation_images_out_of_training(tmp_path: Path) -> None:
    user = _user(tmp_path, ["a", "b", "c", "d"], masked=["a", "b", "c"], val_all=["a"])
    write_annotated(user, ["c", "b", "b"])
    assert (user / ANNOTATED_LIST).read_text() == ("/JPEGImages/b.jpg /SegmentationClass/b.png\n"
                                                   "/JPEGImages/c.jpg /SegmentationClass/c.png\n")
    collection = read_user(tmp_path, "id1")
    assert collection.annotated == {"b", "c"}
    assert [r.name for r in collection.eval_set] == ["a"]
    assert [r.name for r in collection.annotated_train] == ["b", "c"]
    with pytest.raises(DatasetError, match="evaluation set"):
        write_annotated(user, ["a", "d"], eval_names=collection.eval_names)
    assert read_annotated(user) == {"b", "c"}  # the refused write changed nothing


def test_without_val_all_every_unlisted_mask_is_evaluation(tmp_path: Path) -> None:
    user = _user(tmp_path, ["a", "b", "c"], masked=["a", "b"], val_all=None)
    write_annotated(user, ["b"])
    collection = read_user(tmp_path, "id1")
    assert [r.name for r in collection.eval_set] == ["a"]
    assert [r.name for r in collection.annotated_train] == ["b"]


def test_a_dangling_annotated_line_is_a_problem(tmp_path: Path) -> None:
    user = _user(tmp_path, ["a"], masked=[], val_all=None)
    (user / ANNOTATED_LIST).write_text("/JPEGImages/zz.jpg /SegmentationClass/zz.png\n")
    collection = read_user(tmp_path, "id1")
    assert collection.annotated == set()
    assert [(p.kind, p.line) for p in collection.problems] == [("missing_file", 1)]


def test_uncertainty_order_spreads_groups_and_puts_tag_mismatch_first() -> None:
    entropy = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.2, "e": 0.5}
    groups = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2}
    # by hand: round 1 = best of each group: a (0.9), c (0.7), e (0.5) -> a, c, e; round 2: b (0.8), d (0.2)
    order = rank_queue(list(entropy), entropy=entropy, groups=groups)
    assert [q.name for q in order] == ["a", "c", "e", "b", "d"]
    assert order[0].reason == "mean entropy 0.900 (rank 1 of 5); group 0: its most uncertain image"
    assert order[3].reason == "mean entropy 0.800 (rank 2 of 5); group 0: #2 of it"
    # d's prediction misses a tag: it leads its group, and its group's round-1 pick leads the queue
    order = rank_queue(list(entropy), entropy=entropy, groups=groups, tag_mismatch={"d": "tag dog not predicted"})
    assert [q.name for q in order] == ["d", "a", "e", "b", "c"]
    assert order[0].reason.startswith("tag dog not predicted; mean entropy 0.200")


def test_random_order_is_a_seeded_permutation() -> None:
    names = [f"n{i}" for i in range(20)]
    first = [q.name for q in rank_queue(names, "random", seed=3)]
    assert sorted(first) == sorted(names) and first != names
    assert first == [q.name for q in rank_queue(names, "random", seed=3)]
    assert first != [q.name for q in rank_queue(names, "random", seed=4)]
    assert all(math.isnan(q.score) for q in rank_queue(names, "random"))


def test_uncertainty_order_needs_entropies_of_every_candidate() -> None:
    with pytest.raises(DatasetError, match="finished run"):
        rank_queue(["a"])
    with pytest.raises(DatasetError, match="no entropy for b"):
        rank_queue(["a", "b"], entropy={"a": 0.1})
