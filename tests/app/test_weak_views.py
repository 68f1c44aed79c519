"""Inspect's views of the weak-supervision runs (issues 17, 18) on fake run directories (tests/app/weak_support.py):
each view's pictures and captions, missing files as messages, the transfer split (Inspect and the Runs tab), and a
clicked pixel's affinities on a tiny AffinityNet; then the two endpoints through ``gradio_client``."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from pss.api import maps
from pss.api.data import load_image
from pss.api.users import read_user
from pss.api.weak_views import pixel_affinities, split_info, weak_view
from pss.data.labels import VOC_PALETTE
from pss.errors import DatasetError
from weak_support import EPS_QUALITY, PERSON, USER, cat_ramp, saliency_ramp, weak_workspace


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    return weak_workspace(tmp_path_factory)


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _photo(weak, view) -> np.ndarray:
    record = read_user(weak.ws, USER).record(view.name)
    return maps.resize_rgb(load_image(record.image_path), (view.display.width, view.display.height))


def test_eps_view_shows_each_tagged_cam_saliency_and_both_masks(weak) -> None:
    view = weak_view(weak.ws, weak.eps, weak.a)
    assert view.kind == "eps" and view.method == "eps_affinity" and view.messages == []
    assert [caption for _, caption in view.cams] == ["cat", "person"]  # the npz's tagged classes, in class order
    assert [p.caption for p in view.panels] == ["saliency (our model)", "EPS pseudo mask", "AffinityNet-refined mask"]
    size = (view.display.height, view.display.width)
    photo = _photo(weak, view)
    # the cat CAM (a ramp 0 -> 1 from left to right): heat over the photo with alpha 0.2 + 0.65 * value
    cat = _png(view.cams[0][0])
    assert cat.shape[:2] == size
    stored = cat_ramp(*weak.size).astype(np.float16).astype(np.float32)  # the npz keeps float16 scores
    ramp = maps.resize_rgb(stored, (view.display.width, view.display.height))
    expected = maps.blend(photo, maps.heat_colours(ramp), 0.2 + 0.65 * ramp)
    np.testing.assert_array_equal(cat, expected)
    person = _png(view.cams[1][0])  # 0.5 everywhere: the same colour blended over every pixel
    np.testing.assert_array_equal(person, maps.blend(photo, maps.heat_colours(np.full(size, 0.5, np.float32)),
                                                     0.2 + 0.65 * 0.5))
    # saliency: the run's grey map (0 at the top, 1 at the bottom) drawn the same way
    saliency = _png(view.panels[0].path)
    ramp = maps.resize_rgb(np.rint(saliency_ramp(*weak.size) * 255) / 255, (size[1], size[0]))
    np.testing.assert_allclose(saliency.astype(int), maps.blend(photo, maps.heat_colours(ramp), 0.2 + 0.65 * ramp),
                               atol=1)
    # the masks at full opacity: person's palette colour in the top half, the photo (background) in the bottom
    for panel in view.panels[1:]:
        drawn = _png(panel.path)
        assert tuple(drawn[size[0] // 4, size[1] // 2]) == tuple(VOC_PALETTE[PERSON])
        np.testing.assert_array_equal(drawn[-1], photo[-1])
    assert [(q.stage, q.fiou, q.miou, q.num_images) for q in view.quality] == [
        (stage, EPS_QUALITY[stage]["fiou"], EPS_QUALITY[stage]["miou"], 4) for stage in ("cam", "refined")]
    assert view.has_affinity and view.saliency_source == "trained"


def test_missing_stage_files_are_messages_not_errors(weak) -> None:
    view = weak_view(weak.ws, weak.eps, weak.b)  # no stage wrote anything for image b
    assert view.cams == [] and all(p.path is None for p in view.panels)
    assert len(view.messages) == 4 and view.messages[0].startswith("CAMs: none for")
    assert all("not found" in m for m in view.messages)
    transfer = weak_view(weak.ws, weak.transfer, weak.s1)  # an object map only
    assert [p.path is not None for p in transfer.panels] == [True, False, False] and len(transfer.messages) == 2
    assert transfer.messages[0].startswith("coarse label (L-Net; white = unknown): no coarse label")
    from pss_app.services.weak import weak_section

    section = weak_section(weak.ws, weak.eps, weak.b)
    assert "- CAMs: none for" in section.info and all(path is None for path, _ in section.panels)
    assert [label for _, label in section.panels][1] == "EPS pseudo mask (missing)"


def test_user_saliency_is_read_from_the_users_folder(weak) -> None:
    """``saliency_source: user`` (the user supplied SALImages/): the run has no saliency folder; the view shows the
    user's own map."""
    from weak_support import _run

    run_id, run_dir = _run(weak.ws, "eps_seg", {"saliency_source": "user"})
    user_maps = read_user(weak.ws, USER).root / "SALImages"
    user_maps.mkdir(exist_ok=True)
    Image.fromarray(np.full(weak.size, 255, np.uint8), mode="L").save(user_maps / f"{weak.a}.png")
    try:
        view = weak_view(weak.ws, run_id, weak.a)
        assert not (run_dir / "saliency").exists()
        assert view.panels[0].caption == "saliency (the user's SALImages)" and view.panels[0].path is not None
        photo = _photo(weak, view)
        ones = np.ones(photo.shape[:2], np.float32)
        full = maps.blend(photo, maps.heat_colours(ones), 0.2 + 0.65 * ones)
        np.testing.assert_array_equal(_png(view.panels[0].path), full)  # all-white map: full heat everywhere
        assert [p.caption for p in view.panels] == ["saliency (the user's SALImages)", "EPS pseudo mask"]
        assert not view.has_affinity  # eps_seg has no AffinityNet
        with pytest.raises(DatasetError, match="only eps_affinity runs"):
            pixel_affinities(weak.ws, run_id, weak.a, 3, 3)
    finally:
        (user_maps / f"{weak.a}.png").unlink()
        user_maps.rmdir()


def test_transfer_view_and_the_split_in_inspect_and_runs(weak) -> None:
    from pss.api.weak_views import transfer_images

    # the maps are of the source's split images: the run's own list, coarse-labelled first; a user image is refused
    assert transfer_images(weak.ws, weak.transfer) == [weak.s0, weak.s1]
    with pytest.raises(DatasetError, match="source .VOC. split images"):
        weak_view(weak.ws, weak.transfer, weak.a)
    with pytest.raises(DatasetError, match="no stage map of an image named"):
        weak_view(weak.ws, weak.transfer, "../../id1/JPEGImages/x")
    view = weak_view(weak.ws, weak.transfer, weak.s0)
    assert (view.width, view.height) == Image.open(weak.ws.data / "VOC2012" / "JPEGImages" / f"{weak.s0}.jpg").size
    assert view.kind == "transfer" and view.messages == [] and view.cams == []
    assert [p.caption for p in view.panels] == ["object map (L-Net, class-agnostic)",
                                                "coarse label (L-Net; white = unknown)", "merged training labels"]
    coarse = _png(view.panels[1].path)
    assert tuple(coarse[-1, coarse.shape[1] // 2]) == tuple(VOC_PALETTE[255])  # the unknown rows (255)
    assert tuple(coarse[0, 0]) == tuple(VOC_PALETTE[PERSON])
    assert view.split is not None
    assert view.split.weak == ["cat", "dog"] and view.split.strong == ["background", "aeroplane", "person"]
    assert (view.split.fraction, view.split.seed) == (0.5, 3)
    from pss_app.services.runs import run_view
    from pss_app.services.weak import weak_section

    section = weak_section(weak.ws, weak.transfer, weak.a)  # the user's image: the run's first source image instead
    assert section.sources == [weak.s0, weak.s1] and section.source == weak.s0
    assert "**weak** (image labels only, pixels hidden): cat, dog" in section.info
    assert "Coarse labels vs the source masks: mIoU (%) all 50.0 · strong 62.5 · weak 25.0 · coverage 75.0 %" in \
        section.info
    assert weak_section(weak.ws, weak.transfer, weak.a, weak.s1).source == weak.s1
    metrics = run_view(weak.ws, weak.transfer).metrics  # the Runs tab's run details
    assert "Split: **weak** (image labels only, pixels hidden): cat, dog" in metrics
    assert "**strong** (pixel labels): background, aeroplane, person (fraction 0.5, seed 3)" in metrics
    assert "Split:" not in run_view(weak.ws, weak.eps).metrics
    assert split_info({"split": {"weak_names": ["cow"], "strong_names": ["background"]}}).weak == ["cow"]


def test_a_plain_run_has_no_stage_views(weak) -> None:
    from pss_app.services.weak import weak_section

    with pytest.raises(DatasetError, match="not a weak-supervision run"):
        weak_view(weak.ws, weak.plain, weak.a)
    section = weak_section(weak.ws, weak.plain, weak.a)  # the tab: a note, not an error
    assert "not a weak-supervision run" in section.info and section.cams == []
    with pytest.raises(DatasetError, match="not in this workspace"):
        weak_view(weak.ws, "no-such-run", weak.a)


def test_pixel_affinities_on_a_tiny_affinity_net(weak) -> None:
    from pss.data.image_io import load_rgb_tensor
    from pss.data.transforms import to_float
    from pss.models.affinity import build_affinity_net
    from pss.models.segmenter import ModelConfig

    height, width = weak.size
    x, y = 45, 42  # image pixel -> cell (42 // 8, 45 // 8) = (5, 5) on the stride-8 grid
    result = pixel_affinities(weak.ws, weak.eps, weak.a, x, y)
    assert (result.stride, result.radius) == (8, 5)
    assert result.grid == (-(-height // 8), -(-width // 8)) and result.cell == (5, 5)
    offsets = [(dy, dx) for dy, dx, _ in result.neighbours]
    assert offsets[0] == (0, 0) and result.neighbours[0][2] == 1.0  # self-affinity exp(0)
    assert all(dy * dy + dx * dx < 25 for dy, dx in offsets) and len(set(offsets)) == len(offsets)
    assert len(offsets) == 69  # every lattice point of the open disc of radius 5: 2 * 34 offsets + the cell itself
    values = result.values
    assert ((values > 0) & (values <= 1)).all()
    # each value is exp(-mean_c |f_i - f_j|) of the run's AffinityNet features, computed here by hand
    model = build_affinity_net(ModelConfig(backbone="tiny", pretrained=False))
    model.load_state_dict(torch.load(weak.ws.runs / weak.eps / "affinity" / "model.pt", weights_only=True))
    record = read_user(weak.ws, USER).record(weak.a)
    with torch.no_grad():
        features = model.eval()(to_float(load_rgb_tensor(record.image_path)).unsqueeze(0)).features[0]
    here = features[:, 5, 5]
    for dy, dx, value in result.neighbours[:: 7]:
        expected = torch.exp(-(here - features[:, 5 + dy, 5 + dx]).abs().mean()).item()
        assert value == pytest.approx(expected, rel=1e-5)
    # a corner pixel: only the quarter disc inside the grid (dy, dx >= 0): 5 + 5 + 5 + 4 + 3 = 22 cells
    corner = pixel_affinities(weak.ws, weak.eps, weak.a, 0, 0)
    assert corner.cell == (0, 0) and len(corner.neighbours) == 22
    assert all(dy >= 0 and dx >= 0 for dy, dx, _ in corner.neighbours)
    # the heat map over the image at the display size; far from the pixel, the photo is untouched
    view = weak_view(weak.ws, weak.eps, weak.a)
    heat = _png(result.heat)
    assert heat.shape[0] == view.display.height and heat.shape[1] > view.display.width  # + the colour bar
    np.testing.assert_array_equal(heat[-1, 0], _photo(weak, view)[-1, 0])
    with pytest.raises(DatasetError, match="only eps_affinity"):
        pixel_affinities(weak.ws, weak.transfer, weak.a, 1, 1)


@pytest.fixture(scope="module")
def served(weak, tmp_path_factory) -> Iterator:
    from gradio_client import Client

    from inspect_support import launch

    demo, url = launch(weak.ws)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("weak-downloads")))
    yield weak, client
    client.close()
    demo.close()


def test_inspect_weak_endpoint(served) -> None:
    weak, client = served
    client.predict(weak.eps, weak.a, 45, 42, api_name="/inspect_weak_pixel")
    info, cams, saliency, eps, refined, note, sources, heat, pixel, status = client.predict(
        weak.eps, weak.a, None, api_name="/inspect_weak")
    assert heat is None and pixel == ""  # a new run or image clears the last pixel's heat map
    assert sources["visible"] is False  # an EPS run's maps are of the user's images
    assert status == "" and "method **eps_affinity**" in info and "| refined | 37.5 | 18.8 | 4 |" in info
    assert [item["caption"] for item in cams] == ["cat", "person"]
    assert [panel["label"] for panel in (saliency, eps, refined)] == ["saliency (our model)", "EPS pseudo mask",
                                                                       "AffinityNet-refined mask"]
    assert all(_png(panel["value"]).shape[2] == 3 for panel in (saliency, eps, refined))
    assert "radius 5" in note
    *_, status = client.predict("no-such-run", weak.a, None, api_name="/inspect_weak")
    assert status.startswith("⚠") and "not in this workspace" in status
    info, *_, status = client.predict(weak.plain, weak.a, None, api_name="/inspect_weak")
    assert status == "" and "not a weak-supervision run" in info
    info, _, objectness, coarse, labels, _, sources, _, _, status = client.predict(weak.transfer, weak.a, weak.s1,
                                                                                   api_name="/inspect_weak")
    assert status == "" and sources["value"] == weak.s1 and [c[1] for c in sources["choices"]] == [weak.s0, weak.s1]
    assert objectness["value"] and coarse["label"].endswith("(missing)") and "cat, dog" in info


def test_inspect_weak_pixel_endpoint(served) -> None:
    weak, client = served
    heat, text, status = client.predict(weak.eps, weak.a, 45, 42, api_name="/inspect_weak_pixel")
    assert status == "" and "feature cell (5, 5)" in text and "68 neighbours within radius 5" in text
    assert _png(heat).shape[0] == _png(weak_view(weak.ws, weak.eps, weak.a).panels[0].path).shape[0]
    *_, status = client.predict(weak.transfer, weak.a, 1, 1, api_name="/inspect_weak_pixel")
    assert status.startswith("⚠") and "only eps_affinity" in status


def test_pixel_affinities_at_the_runs_inference_size(weak) -> None:
    """``method.infer_short_side`` (the pipeline computes its CAMs and random walk there): the features are of the
    image shrunk to that short side, and the pixel's cell is on that grid (hand-computed for the 192x144 photo)."""
    import shutil

    from weak_support import _run

    run_id, run_dir = _run(weak.ws, "eps_affinity", {}, {"radius": 5, "infer_short_side": 100})
    (run_dir / "affinity").mkdir()
    shutil.copy(weak.ws.runs / weak.eps / "affinity" / "model.pt", run_dir / "affinity" / "model.pt")
    assert weak.size == (144, 192)
    # shrunk to 100 x round(192 * 100 / 144) = 133: grid (ceil(100 / 8), ceil(133 / 8)) = (13, 17);
    # pixel (96, 72) -> (96.5 * 133 / 192, 72.5 * 100 / 144) = (66.8, 50.3) -> cell (50.3 // 8, 66.8 // 8) = (6, 8)
    result = pixel_affinities(weak.ws, run_id, weak.a, 96, 72)
    assert result.grid == (13, 17) and result.cell == (6, 8) and len(result.neighbours) == 69
