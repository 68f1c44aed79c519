"""Grouping: Lite0 features, k-means groups, UMAP view and the content-hash caches (pss.grouping).

Synthetic photos: 3 visually distinct families (sky gradients, green noise, red/yellow stripes) x 6 images.
UMAP's first call costs ~10 s per process, so the one full grouping run is a module-scoped fixture.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

import pss.grouping.user as grouping_user
from pss.data.pss_layout import read_user
from pss.data.records import ImageRecord
from pss.errors import ConfigError, DatasetError, ModelError
from pss.grouping import (GroupingResult, effective_k, export_cluster_list, extract_features, feature_namespace,
                          group_images, group_records, group_user, kmeans_groups, load_grouping, umap_embedding)
from pss.grouping.cache import grouping_path

FAMILIES = 3
PER_FAMILY = 6


def _family_image(family: int, rng: np.random.Generator, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if family == 0:  # sky: blue-to-white vertical gradient
        t = (yy / h)[..., None] * rng.uniform(0.8, 1.0)
        image = (1 - t) * np.array([40, 90, 220]) + t * np.array([235, 240, 250])
    elif family == 1:  # grass: green noise
        image = np.array([40, 140, 50]) + rng.normal(0, 40, (h, w, 3)) * np.array([0.5, 1.0, 0.5])
    else:  # stripes: red / yellow diagonals with a random phase and period
        period = rng.uniform(10, 14)
        on = (np.sin((xx + yy + rng.uniform(0, 20)) * 2 * np.pi / period) > 0)[..., None]
        image = np.where(on, np.array([220, 30, 30]), np.array([250, 220, 40]))
    image = image + rng.normal(0, 4, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def family_records(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ImageRecord], np.ndarray]:
    folder = tmp_path_factory.mktemp("user") / "JPEGImages"
    rng = np.random.default_rng(0)
    records, truth = [], []
    for i in range(FAMILIES * PER_FAMILY):
        family = i % FAMILIES  # interleaved so that file order says nothing about the family
        path = _write(folder / f"img{i:02d}.jpg", _family_image(family, rng))
        records.append(ImageRecord(name=path.stem, image_path=path, mask_path=None, user="id1"))
        truth.append(family)
    return records, np.array(truth)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def family_features(family_records: tuple[list[ImageRecord], np.ndarray], cache_root: Path) -> np.ndarray:
    records, _ = family_records
    fs = extract_features([r.image_path for r in records], device=torch.device("cpu"), cache_dir=cache_root)
    assert fs.skipped == [] and fs.computed == len(records)
    return fs.features


@pytest.fixture(scope="module")
def grouped(family_records, family_features, cache_root) -> tuple[GroupingResult, Path]:
    """The one full run (cached features -> k-means -> UMAP); later tests reuse its cache."""
    records, _ = family_records
    return group_records("id1", records, k=3, cache_dir=cache_root, seed=0), cache_root


def test_effective_k_caps_small_users() -> None:
    assert effective_k(700, 80) == 80  # the paper's users: uncapped
    assert effective_k(60, 80) == 15  # 60 // 4
    assert effective_k(18, 3) == 3
    assert effective_k(3, 80) == 1  # never below one group
    assert effective_k(0, 80) == 0
    assert effective_k(7, 80, min_group_size=1) == 7
    with pytest.raises(ConfigError):
        effective_k(10, 0)


def test_lite0_features_shape_and_similarity(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = _family_image(0, rng)
    near = np.clip(base.astype(np.int16) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    other = _family_image(2, rng)
    paths = [_write(tmp_path / f"{n}.png", a) for n, a in (("base", base), ("near", near), ("other", other))]
    features = extract_features(paths).features
    assert features.shape == (3, 1280) and features.dtype == np.float32
    assert np.linalg.norm(features[0] - features[1]) < 0.5 * np.linalg.norm(features[0] - features[2])


def test_kmeans_recovers_the_three_families(family_records, family_features) -> None:
    _, truth = family_records
    groups = kmeans_groups(family_features, 3, seed=0)
    assert adjusted_rand_score(truth, groups) == 1.0
    assert groups[0] == 0 and sorted(set(groups.tolist())) == [0, 1, 2]  # renumbered by first appearance
    np.testing.assert_array_equal(groups, kmeans_groups(family_features, 3, seed=0))  # deterministic


def test_kmeans_never_uses_more_groups_than_distinct_vectors() -> None:
    features = np.repeat(np.eye(2, 4, dtype=np.float32), 3, axis=0)  # 6 rows, 2 distinct
    groups = kmeans_groups(features, 5)
    np.testing.assert_array_equal(groups, [0, 0, 0, 1, 1, 1])


def test_group_images_maps_names_with_capped_k(family_records, family_features) -> None:
    records, truth = family_records
    mapping = group_images(records, family_features, k=80, seed=0)  # 18 images -> effective k = 4
    assert list(mapping) == [r.name for r in records]
    assert len(set(mapping.values())) == 4
    with pytest.raises(ConfigError):
        group_images(records[:2], family_features, k=3)


def test_group_records_result_and_cache_file(grouped, family_records) -> None:
    result, cache = grouped
    records, truth = family_records
    assert (result.user, result.k, result.k_requested, result.feature_model) == ("id1", 3, 3, "lite0-p1")
    assert result.names == [r.name for r in records] and result.skipped == []
    assert adjusted_rand_score(truth, result.groups) == 1.0
    assert result.embedding.shape == (18, 2) and np.isfinite(result.embedding).all()
    assert result.sizes().tolist() == [6, 6, 6]
    assert grouping_path(cache, "id1", 3, 0).is_file()
    assert load_grouping(cache, "id1", 3, 0) == result
    assert load_grouping(cache, "id1", 4, 0) is None


def test_second_call_reuses_cache_and_changed_image_reextracts_only_it(grouped, family_records, tmp_path,
                                                                       monkeypatch) -> None:
    result, cache = grouped
    records, _ = family_records
    calls: list[int] = []
    real = grouping_user.extract_features

    def spy(*args, **kwargs):
        fs = real(*args, **kwargs)
        calls.append(fs.computed)
        return fs

    monkeypatch.setattr(grouping_user, "extract_features", spy)
    assert group_records("id1", records, k=3, cache_dir=cache, seed=0) == result
    assert calls == []  # unchanged photos: no feature extraction at all
    # Copy the collection (same bytes, new paths) and change one photo: only that photo is computed.
    copies = []
    for r in records:
        (tmp_path / r.image_path.name).write_bytes(r.image_path.read_bytes())
        copies.append(ImageRecord(r.name, tmp_path / r.image_path.name, None, user="id1"))
    _write(copies[0].image_path, _family_image(0, np.random.default_rng(99)))
    again = group_records("id1", copies, k=3, cache_dir=cache, seed=0)
    assert calls == [1]
    assert again.key != result.key and again.names == result.names


def test_corrupt_image_is_skipped_and_reported(family_records, tmp_path) -> None:
    records, truth = family_records
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(records[0].image_path.read_bytes()[:300])  # a truncated JPEG: the header parses, decoding fails
    missing = tmp_path / "missing.jpg"
    extra = [ImageRecord("broken", bad, None), ImageRecord("missing", missing, None)]
    result = group_records("id1", records[:6] + extra, k=2, seed=0)
    assert result.names == [r.name for r in records[:6]]
    assert result.skipped == ["broken", "missing"]
    assert "broken.jpg" in result.skip_reasons["broken"] and "missing.jpg" in result.skip_reasons["missing"]
    assert result.k == 1  # 6 readable images // 4
    with pytest.raises(DatasetError, match="skipped"):
        result.group_of("broken")
    with pytest.raises(DatasetError):
        group_records("id1", extra, k=2)


def test_grouping_result_accessors_and_round_trip() -> None:
    result = GroupingResult(user="id2", names=["a", "b", "c", "d"], groups=np.array([1, 0, 1, 2]),
                            embedding=np.arange(8, dtype=np.float32).reshape(4, 2), k=4, k_requested=80,
                            feature_model="lite0-p1", skipped=["e"], skip_reasons={"e": "truncated"}, seed=3)
    assert result.group_of("c") == 1
    assert result.members(1) == ["a", "c"] and result.members(3) == []
    assert result.sizes().tolist() == [1, 2, 1, 0]
    back = GroupingResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result and back.embedding.dtype == np.float32
    np.testing.assert_array_equal(back.embedding, result.embedding)
    with pytest.raises(DatasetError):
        result.group_of("zzz")
    with pytest.raises(DatasetError):
        GroupingResult.from_dict({"format": "something-else"})
    with pytest.raises(DatasetError):
        GroupingResult(user="x", names=["a"], groups=np.array([5]), embedding=np.zeros((1, 2)), k=2,
                       k_requested=2, feature_model="lite0-p1")


def test_load_grouping_ignores_corrupt_file(tmp_path: Path) -> None:
    path = grouping_path(tmp_path, "id1", 80, 0)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_grouping(tmp_path, "id1", 80, 0) is None


def test_umap_embedding_deterministic_and_small_fallbacks(family_features) -> None:
    first = umap_embedding(family_features, seed=0)
    np.testing.assert_array_equal(first, umap_embedding(family_features, seed=0))
    assert umap_embedding(family_features[:5]).shape == (5, 2)  # PCA below UMAP_MIN_IMAGES
    np.testing.assert_array_equal(umap_embedding(family_features[:1]), np.zeros((1, 2), np.float32))


def test_identical_files_are_computed_once(family_records, tmp_path) -> None:
    records, _ = family_records
    data = records[0].image_path.read_bytes()
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in paths:
        path.write_bytes(data)
    fs = extract_features(paths, cache_dir=tmp_path / "cache")
    assert fs.computed == 1 and fs.features.shape == (2, 1280)
    np.testing.assert_array_equal(fs.features[0], fs.features[1])
    assert extract_features(paths, cache_dir=tmp_path / "cache").computed == 0


def test_resnet50_weights_from_hub_cache_or_a_clear_error(family_records, tmp_path, monkeypatch) -> None:
    from torchvision.models import resnet50

    records, _ = family_records
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match="checkpoints"):
        feature_namespace("resnet50")
    with pytest.raises(ConfigError, match="lite0"):
        feature_namespace("vgg")
    # A random-init checkpoint stands in for torchvision's file: only loading and shapes are checked here.
    (tmp_path / "checkpoints").mkdir()
    torch.save(resnet50(weights=None).state_dict(), tmp_path / "checkpoints" / "resnet50-0000abcd.pth")
    assert feature_namespace("resnet50") == "resnet50-0000abcd-p1"
    fs = extract_features([records[0].image_path], model="resnet50", cache_dir=tmp_path / "cache")
    assert fs.features.shape == (1, 2048) and fs.computed == 1
    assert len(list((tmp_path / "cache" / "features" / "resnet50-0000abcd-p1").rglob("*.npy"))) == 1


def test_group_user_reads_pss_layout_and_exports_cluster_list(family_records, cache_root, tmp_path) -> None:
    records, truth = family_records
    user_dir = tmp_path / "personal" / "id1"
    (user_dir / "JPEGImages").mkdir(parents=True)
    for r in records:
        (user_dir / "JPEGImages" / r.image_path.name).write_bytes(r.image_path.read_bytes())
    progress: list[tuple[float, str]] = []
    result = group_user(tmp_path / "personal", "id1", k=3, cache_dir=cache_root,
                        progress=lambda f, m: progress.append((f, m)))
    assert adjusted_rand_score(truth, result.groups) == 1.0 and progress[-1][0] == 1.0
    path = export_cluster_list(result, user_dir)
    assert path == user_dir / "train_cluster3.txt"
    first = path.read_text().splitlines()[0]
    assert first == f"/JPEGImages/img00.jpg /SegmentationClass/img00.png {result.group_of('img00')}"
    assert read_user(tmp_path / "personal", "id1", k=3).groups == result.as_mapping()
