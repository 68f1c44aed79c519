"""The per-image inference API that the app's inspect view uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pss.config import build_config
from pss.data.records import ImageRecord
from pss.inference import infer_image
from pss.models.segmenter import build_segmenter


@pytest.fixture()
def group(tmp_path: Path) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i, shape in enumerate([(48, 64), (64, 48), (48, 64)]):
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.jpg")
        records.append(ImageRecord(f"im{i}", tmp_path / f"im{i}.jpg", None))
    return records


def test_inference_of_a_group_context_model(group: list[ImageRecord]) -> None:
    torch.manual_seed(0)
    model = build_segmenter(build_config("tiny", ["model.context.mode=group"]).model).eval()
    inf = infer_image(model, group[1], group, torch.device("cpu"), short_side=48)
    assert inf.group_images == ["im1", "im0", "im2"]  # the inspected image comes first
    assert inf.prob.shape == (21, 64, 48) and inf.label.shape == (64, 48)
    np.testing.assert_allclose(inf.prob.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(inf.label, inf.prob.argmax(0))
    h, w = inf.grid
    assert inf.attention.shape == (h * w, 3 * 21)
    np.testing.assert_allclose(inf.attention.sum(1), 1.0, atol=1e-5)
    top = inf.attention_at(10, 20, top=5)
    row, col = inf.grid_cell(10, 20)
    expected = np.sort(inf.attention[row * w + col])[::-1][:5]
    np.testing.assert_allclose([r.weight for r in top], expected, rtol=1e-6)
    assert {r.image for r in top} <= set(inf.group_images)
    mask = inf.region_mask(top[0].image, top[0].class_index)
    assert mask.shape == (h, w) and mask.max() == pytest.approx(1.0)
    info = inf.pixel_info(3, 4)
    assert sum(p for _, p in info["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= info["entropy"] <= 1.0
    pseudo = inf.pseudo_label(0.75)
    assert np.mean(pseudo == 255) == pytest.approx(0.25, abs=0.02)
    kept = pseudo != 255
    assert np.array_equal(pseudo[kept], inf.label[kept])


def test_models_without_group_context_have_no_attention(group: list[ImageRecord]) -> None:
    model = build_segmenter(build_config("tiny", ["model.context.mode=none"]).model).eval()
    inf = infer_image(model, group[0], group, torch.device("cpu"), short_side=48)
    assert inf.attention is None and inf.attention_at(1, 1) == [] and inf.region_mask("im0", 0) is None


def test_a_large_photo_gets_maps_of_the_bounded_size_and_answers_in_image_pixels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo larger than MAX_MAP_SIDE (patched to 40 to keep the test small: a 120x90 photo) gets 40x30 maps;
    clicks and grid cells stay in the image's pixels, and the label resized to the image maps them back."""
    import pss.inference as inference
    from pss.api.maps import MAX_VIEW_SIDE

    assert inference.MAX_MAP_SIDE >= MAX_VIEW_SIDE  # the app never draws a map larger than the maps
    monkeypatch.setattr(inference, "MAX_MAP_SIDE", 40)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    record = ImageRecord("big", tmp_path / "big.jpg", None)
    model = build_segmenter(build_config("tiny", ["model.context.mode=none"]).model).eval()
    inf = infer_image(model, record, [record], torch.device("cpu"), short_side=48)
    assert inf.size == (90, 120) and inf.prob.shape == (21, 30, 40) and inf.entropy.shape == (30, 40)
    assert inf.map_pixel(119, 89) == (39, 29) and inf.map_pixel(3, 2) == (1, 0)  # x * 40 / 120, y * 30 / 90
    col, row = inf.map_pixel(60, 45)
    info = inf.pixel_info(60, 45)
    assert info["x"] == 60 and info["entropy"] == pytest.approx(float(inf.entropy[row, col]))
    assert inf.grid_cell(119, 89) == (inf.grid[0] - 1, inf.grid[1] - 1)
    from pss.api.maps import resize_label

    full = resize_label(inf.label, (120, 90))  # what Compare scores against the ground truth (pss.api.compare)
    assert full.shape == (90, 120) and full[89, 119] == inf.label[29, 39] and full[0, 2] == inf.label[0, 0]
    assert full[0, 3] == inf.label[0, 1]  # image column 3 lies in map column 1 (3 * 40 // 120)


def test_map_size_keeps_small_images_and_bounds_the_long_side() -> None:
    from pss.inference import MAX_MAP_SIDE, map_size

    assert map_size((480, 640)) == (480, 640)
    assert map_size((4000, 6000)) == (round(4000 * MAX_MAP_SIDE / 6000), MAX_MAP_SIDE)  # 683 x 1024
    assert map_size((6000, 10)) == (MAX_MAP_SIDE, 2)
