"""Dataset statistics on tiny hand-made masks and tag lists whose answers are known."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from pss.data.labels import class_index, write_label_png
from pss.data.records import ImageRecord
from pss.stats import (_cached_summary, class_cooccurrence, class_proportion_per_user, clear_mask_cache,
                       instances_per_class, mask_summary, mean_object_size, summarize_mask)

CAT, PERSON, DOG = class_index("cat"), class_index("person"), class_index("dog")   # 8, 15, 12


def record(name: str, tags: tuple[int, ...] = (), mask: Path | None = None) -> ImageRecord:
    return ImageRecord(name=name, image_path=Path(f"/nowhere/{name}.jpg"), mask_path=mask, tags=tags, user="id1")


def two_cats() -> np.ndarray:
    """10 x 10: two separate 3x3 cats (18 px), one 1-pixel person sliver, a 255 row."""
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0:3, 0:3] = CAT
    mask[5:8, 5:8] = CAT
    mask[9, 0] = PERSON
    mask[9, 5:] = 255
    return mask


def test_summarize_mask_counts_components_and_areas():
    summary = summarize_mask(two_cats(), min_pixels=4)
    assert (summary.height, summary.width) == (10, 10)
    assert summary.areas[CAT] == 18 and summary.areas[PERSON] == 1 and summary.areas[0] == 100 - 18 - 1 - 5
    assert summary.instances[CAT] == 2
    assert summary.instances[PERSON] == 0           # sliver below min_pixels
    assert summary.instances[0] == 0                # background is not an object
    assert summarize_mask(two_cats(), min_pixels=1).instances[PERSON] == 1


def test_diagonal_touch_is_one_component_with_8_connectivity():
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[0:3, 0:3] = CAT
    mask[3:6, 3:6] = CAT                             # touches the first block only at a corner
    assert summarize_mask(mask, min_pixels=1).instances[CAT] == 1


def test_mask_summary_is_cached_and_invalidated_on_rewrite(tmp_path):
    clear_mask_cache()
    path = tmp_path / "m.png"
    write_label_png(path, two_cats())
    first = mask_summary(path, min_pixels=4)
    hits = _cached_summary.cache_info().hits
    assert mask_summary(path, min_pixels=4) is first
    assert _cached_summary.cache_info().hits == hits + 1
    write_label_png(path, np.full((4, 4), DOG, dtype=np.uint8))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # make the rewrite visible on coarse clocks
    again = mask_summary(path, min_pixels=4)
    assert again.areas[DOG] == 16 and again.instances[DOG] == 1


@pytest.fixture()
def labelled(tmp_path) -> list[ImageRecord]:
    a = np.zeros((4, 4), dtype=np.uint8)
    a[0:2, 0:2] = CAT                                # 4 / 16 = 0.25
    a[3, 2:] = 255
    b = np.zeros((2, 5), dtype=np.uint8)
    b[0, :] = CAT                                    # 5 / 10 = 0.5
    b[1, 0:2] = PERSON                               # 2 / 10 = 0.2
    write_label_png(tmp_path / "a.png", a)
    write_label_png(tmp_path / "b.png", b)
    write_label_png(tmp_path / "c.png", two_cats())
    return [record("a", (CAT,), tmp_path / "a.png"), record("b", (CAT, PERSON), tmp_path / "b.png"),
            record("c", (CAT, PERSON), tmp_path / "c.png"), record("u", (DOG,))]


def test_mean_object_size(labelled):
    frame = mean_object_size(labelled[:2]).set_index("class_name")
    assert len(frame) == 20 and "background" not in frame.index
    assert frame.loc["cat", "mean_fraction"] == pytest.approx((0.25 + 0.5) / 2)
    assert frame.loc["cat", "images"] == 2
    assert frame.loc["person", "mean_fraction"] == pytest.approx(0.2)
    assert frame.loc["dog", "images"] == 0 and math.isnan(frame.loc["dog", "mean_fraction"])
    assert frame.attrs["problems"] == []


def test_instances_per_class(labelled):
    frame = instances_per_class(labelled, min_pixels=2).set_index("class_name")
    # cat: a -> 1, b -> 1, c -> 2; person: b -> 1 (2 px), c -> sliver of 1 px not counted
    assert frame.loc["cat", "instances"] == 4 and frame.loc["cat", "images"] == 3
    assert frame.loc["person", "instances"] == 1 and frame.loc["person", "images"] == 1
    assert frame.loc["dog", "instances"] == 0


def test_missing_mask_is_reported_not_raised(labelled, tmp_path):
    broken = labelled + [record("gone", (CAT,), tmp_path / "gone.png")]
    frame = instances_per_class(broken, min_pixels=2)
    assert frame.set_index("class_name").loc["cat", "instances"] == 4
    assert len(frame.attrs["problems"]) == 1 and "gone.png" in frame.attrs["problems"][0]


def test_class_proportion_per_user():
    collections = {
        "id1": [record("a", (CAT,)), record("b", (CAT, PERSON)), record("c"), record("d", (PERSON, PERSON))],
        "id2": [],
    }
    frame = class_proportion_per_user(collections)
    assert len(frame) == 2 * 20
    id1 = frame[frame.user == "id1"].set_index("class_name")
    assert id1.loc["cat", "proportion"] == pytest.approx(0.5)          # 2 of 4 images
    assert id1.loc["person", "proportion"] == pytest.approx(0.5)       # duplicate tag counted once
    assert id1.loc["dog", "proportion"] == 0.0 and id1.loc["cat", "total_images"] == 4
    assert (frame[frame.user == "id2"].proportion == 0.0).all()
    bad = class_proportion_per_user({"id3": [record("x", (0, 21, CAT))]})
    assert len(bad.attrs["problems"]) == 2
    assert bad.set_index("class_name").loc["cat", "proportion"] == 1.0


def test_class_cooccurrence_counts_and_normalised():
    records = [record("a", (CAT, PERSON)), record("b", (CAT,)), record("c", (PERSON, DOG)), record("d", (CAT, PERSON))]
    counts = class_cooccurrence(records)
    assert counts.shape == (20, 20)
    assert counts.loc["cat", "cat"] == 3 and counts.loc["person", "person"] == 3 and counts.loc["dog", "dog"] == 1
    assert counts.loc["cat", "person"] == 2 == counts.loc["person", "cat"]
    assert counts.loc["person", "dog"] == 1 and counts.loc["cat", "dog"] == 0
    assert int(counts.values.sum()) == 3 + 3 + 1 + 2 * 2 + 2 * 1
    norm = class_cooccurrence(records, normalize=True)
    assert norm.loc["cat", "person"] == pytest.approx(2 / 3)          # P(person | cat)
    assert norm.loc["dog", "person"] == pytest.approx(1.0)            # P(person | dog)
    assert norm.loc["person", "dog"] == pytest.approx(1 / 3)
    assert norm.loc["cat", "cat"] == 1.0 and (norm.loc["aeroplane"] == 0.0).all()
