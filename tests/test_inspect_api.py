"""The Inspect / Compare engine helpers that need no trained run: error maps, drawing, the inference cache file,
and the step-2 selection shown for an image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pss.api import maps
from pss.api.inference_cache import load_inference, save_inference
from pss.api.inspect import RunContext
from pss.api.pseudo import pseudo_status
from pss.config import build_config
from pss.inference import ImageInference


def test_error_categories_of_a_hand_made_case() -> None:
    target = np.array([[0, 0, 5, 5],
                       [0, 7, 7, 255],
                       [3, 3, 0, 255]], dtype=np.uint8)
    pred = np.array([[0, 2, 5, 0],
                     [0, 7, 9, 0],
                     [3, 0, 4, 6]], dtype=np.uint8)
    c, w, m, f, i = maps.CORRECT, maps.WRONG_CLASS, maps.MISSED, maps.FALSE_POSITIVE, maps.IGNORED
    expected = np.array([[c, f, c, m],
                         [c, c, w, i],
                         [c, m, f, i]], dtype=np.uint8)
    np.testing.assert_array_equal(maps.error_categories(pred, target), expected)


def test_error_colours_darken_correct_background_and_colour_the_rest() -> None:
    target = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    pred = np.array([[0, 1], [0, 3]], dtype=np.uint8)
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    out = maps.error_colours(maps.error_categories(pred, target), target, image)
    assert out[0, 0].tolist() == [70, 70, 70]  # 200 * 0.35: the photo, darkened
    assert tuple(out[0, 1]) == maps.ERROR_COLOURS[maps.CORRECT]
    assert tuple(out[1, 0]) == maps.ERROR_COLOURS[maps.MISSED]
    assert tuple(out[1, 1]) == maps.ERROR_COLOURS[maps.IGNORED]


def test_display_size_enlarges_small_images_by_an_integer_and_maps_clicks_back() -> None:
    size = maps.display_size(192, 144)
    assert (size.width, size.height, size.scale) == (576, 432, 3.0)
    assert size.to_image(575, 431, 192, 144) == (191, 143)
    assert size.to_image(3, 5, 192, 144) == (1, 1)
    big = maps.display_size(4000, 3000)
    assert (big.width, big.height) == (1024, 768)
    assert big.to_image(1023, 767, 4000, 3000) == (3996, 2996)
    assert maps.display_size(600, 500).scale == 1.0


def test_pseudo_label_colours_hatch_ignored_pixels_only() -> None:
    pseudo = np.array([[0, 15, 255, 255]], dtype=np.uint8)
    out = maps.pseudo_label_colours(pseudo)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == maps.VOC_PALETTE[15].tolist()
    assert {tuple(out[0, 2]), tuple(out[0, 3])} <= set(maps.HATCH)


def test_heat_colours_get_brighter_and_colour_bar_fits() -> None:
    ramp = maps.heat_colours(np.array([[0.0, 0.5, 1.0]]))
    brightness = ramp.astype(int).sum(axis=2)[0]
    assert brightness[0] < brightness[1] < brightness[2]
    image = np.zeros((120, 50, 3), dtype=np.uint8)
    assert maps.with_colour_bar(image, 0.0, 1.0, "entropy").shape[:2] == (120, 50 + maps.COLOUR_BAR_WIDTH)


def test_grid_places_equal_panels_with_gaps() -> None:
    a = np.full((4, 5, 3), 10, dtype=np.uint8)
    out = maps.grid([[a, None, a], [None, a, None]], gap=2)
    assert out.shape == (4 * 2 + 2, 5 * 3 + 2 * 2, 3)
    assert (out[0:4, 0:5] == 10).all() and (out[0:4, 7:12] == 255).all() and (out[6:10, 7:12] == 10).all()


def _inference(with_attention: bool) -> ImageInference:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(21, 6, 8)).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    attention = rng.random((2 * 1, 2 * 21)).astype(np.float32) if with_attention else None
    return ImageInference("im0", prob, prob.argmax(0).astype(np.uint8), rng.random((6, 8)).astype(np.float32),
                          ["im0", "im1"], (1, 2), attention,
                          rng.random((2, 21, 1, 2)).astype(np.float32) if with_attention else None)


@pytest.mark.parametrize("with_attention", [True, False])
def test_inference_cache_file_round_trip(tmp_path: Path, with_attention: bool) -> None:
    fresh = _inference(with_attention)
    meta = {"version": 1, "run_id": "r", "checkpoint": "step_00000002.pt", "checkpoint_mtime": 5, "image": "k"}
    path = tmp_path / "r" / "im0.npz"
    save_inference(path, fresh, meta)
    cached = load_inference(path, meta)
    np.testing.assert_allclose(cached.prob, fresh.prob, atol=5e-4)  # float16 on disk
    np.testing.assert_array_equal(cached.label, fresh.label)
    np.testing.assert_array_equal(cached.entropy, fresh.entropy)
    assert cached.group_images == fresh.group_images and cached.grid == fresh.grid and cached.size == (6, 8)
    if with_attention:
        np.testing.assert_array_equal(cached.attention, fresh.attention)
        np.testing.assert_array_equal(cached.region_masks, fresh.region_masks)
    else:
        assert cached.attention is None and cached.region_masks is None
    assert load_inference(path, {**meta, "checkpoint_mtime": 6}) is None  # a newer checkpoint: recompute
    path.write_bytes(b"not a zip")
    assert load_inference(path, meta) is None


def test_inference_cache_keeps_the_image_size_of_bounded_maps(tmp_path: Path) -> None:
    """Maps of a large photo are smaller than the image (pss.inference.MAX_MAP_SIDE): the cache keeps its size."""
    fresh = _inference(False)
    fresh.size = (60, 80)
    meta = {"version": 1, "run_id": "r", "checkpoint": "step_00000002.pt", "checkpoint_mtime": 5, "image": "k"}
    save_inference(tmp_path / "im0.npz", fresh, meta)
    cached = load_inference(tmp_path / "im0.npz", meta)
    assert cached.size == (60, 80) and cached.label.shape == (6, 8)
    assert cached.map_pixel(79, 59) == (7, 5) and maps.resize_label(cached.label, (80, 60)).shape == (60, 80)


def _context(report: dict, method: dict | None = None) -> RunContext:
    config = build_config("tiny", [f"method.name={(method or {}).get('name', 'pss')}"])
    if method:
        config.method.update(method)
    return RunContext("r", "id1", config, Path("step_00000002.pt"), 0, report)


def test_pseudo_status_ranks_by_mean_entropy_and_keeps_the_lowest_half() -> None:
    scores = {"a": 0.5, "b": 0.1, "c": 0.9, "d": 0.3, "e": 0.7}
    ctx = _context({"mean_entropy": scores})
    keep = max(1, int(5 * 0.5))  # select_easy_images: floor(total * r)
    assert keep == 2
    expected_rank = {"b": 1, "d": 2, "a": 3, "e": 4, "c": 5}
    for name, rank in expected_rank.items():
        status = pseudo_status(ctx, name, 0.0)
        assert (status.rank, status.total, status.keep, status.selected) == (rank, 5, 2, rank <= 2)
        assert status.mean_entropy == scores[name] and status.pixel_keep_rate == 0.8


def test_pseudo_status_of_an_image_missing_from_the_report_uses_its_own_entropy() -> None:
    ctx = _context({"mean_entropy": {"a": 0.5, "b": 0.1, "c": 0.9}},
                   {"name": "pss_s2", "pseudo": {"select_rate": 1.0, "pixel_keep_rate": 0.6}})
    status = pseudo_status(ctx, "new", 0.2)
    assert (status.rank, status.total, status.keep, status.selected) == (2, 4, 4, True)
    assert status.pixel_keep_rate == 0.6


def test_pseudo_status_uses_the_policy_of_the_stage_that_continues_the_run() -> None:
    """The policy comes from the registry (Method.starts_from), not a hard-coded PSS config: an FDA run's next
    stage (fda_ssl) labels every image, a PSS run's (pss_s2) the easiest half, a No-DA run's defaults to pss_s2."""
    scores = {"a": 0.5, "b": 0.1, "c": 0.9, "d": 0.3}
    fda = pseudo_status(_context({"mean_entropy": scores}, {"name": "fda"}), "c", 0.0)
    assert (fda.stage, fda.keep, fda.selected, fda.select_rate, fda.pixel_keep_rate) == ("fda_ssl", 4, True, 1.0, 1.0)
    pss = pseudo_status(_context({"mean_entropy": scores}, {"name": "pss"}), "c", 0.0)
    assert (pss.stage, pss.keep, pss.selected, pss.rank) == ("pss_s2", 2, False, 4)
    assert pseudo_status(_context({"mean_entropy": scores}, {"name": "source_only"}), "b", 0.0).stage == "pss_s2"
