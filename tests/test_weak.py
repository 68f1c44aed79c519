"""Issue 17's building blocks against hand-computed values: tag vectors, the saliency reader's checks, the EPS
classification and saliency losses, PSA's pairs and affinity loss, one random-walk step, pseudo-mask quality, and a
tiny end-to-end run (saliency -> EPS -> pseudo masks -> AffinityNet -> refined masks) on the demo data."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pss.data.labels import read_label_png, write_label_png
from pss.data.records import ImageRecord

# ---- 1. tags ------------------------------------------------------------------------------------------------------


def test_tag_vector_from_a_mask_and_from_the_users_tags_only(tmp_path: Path) -> None:
    from pss.data.datasets import image_tags
    from pss.data.tags import batch_tags20, record_tags, tags_from_indices, tags_from_mask

    mask = np.array([[0, 3], [255, 15]], dtype=np.uint8)
    assert np.flatnonzero(tags_from_mask(mask)).tolist() == [2, 14]  # classes 3 and 15; 0 and 255 are not tags
    assert tags_from_mask(mask).shape == (20,) and tags_from_mask(mask).dtype == np.float32
    with pytest.raises(ValueError, match="outside"):
        tags_from_indices([0])
    write_label_png(tmp_path / "s.png", mask)
    source = ImageRecord("s", tmp_path / "s.jpg", tmp_path / "s.png")
    assert np.flatnonzero(record_tags(source)).tolist() == [2, 14]        # a source image: its mask's classes
    user = ImageRecord("u", tmp_path / "u.jpg", tmp_path / "s.png", tags=(8, 12), user="id1")
    assert np.flatnonzero(record_tags(user)).tolist() == [7, 11]          # a user image: its tag line, not its mask
    untagged = ImageRecord("v", tmp_path / "v.jpg", tmp_path / "s.png", user="id1")
    assert record_tags(untagged).sum() == 0
    # the batch field: a user's mask never becomes its tags (it is evaluation ground truth)
    assert image_tags(untagged, torch.from_numpy(mask)).sum() == 0
    assert torch.nonzero(image_tags(user, torch.from_numpy(mask))).flatten().tolist() == [8, 12]
    assert batch_tags20(image_tags(user, torch.from_numpy(mask))[None]).nonzero()[:, 1].tolist() == [7, 11]


def test_untagged_user_images_are_reported_not_guessed(tmp_path: Path) -> None:
    from pss.data.pss_layout import read_user
    from pss.data.tags import user_tag_report

    user = tmp_path / "id1"
    (user / "JPEGImages").mkdir(parents=True)
    (user / "SegmentationClass").mkdir()
    for name in "abc":
        Image.new("RGB", (16, 12)).save(user / "JPEGImages" / f"{name}.jpg")
    write_label_png(user / "SegmentationClass" / "b.png", np.full((12, 16), 8, np.uint8))  # b shows a cat
    (user / "imgLabelList.txt").write_text("a.jpg:cat,dog\nc.jpg:UNKNOWN\n")
    report = user_tag_report(read_user(tmp_path, "id1"))
    assert [r.name for r in report.tagged] == ["a", "c"] and report.untagged == ["b"] and report.negatives == ["c"]
    assert "1 untagged, left out: b" in report.summary()
    (user / "imgLabelList.txt").write_bytes(b"a.jpg:cat\n\xff\xfe not utf-8\n")  # unreadable: nothing tagged
    assert user_tag_report(read_user(tmp_path, "id1")).untagged == ["a", "b", "c"]
    (user / "imgLabelList.txt").unlink()  # no tag file at all: every image is untagged
    assert user_tag_report(read_user(tmp_path, "id1")).untagged == ["a", "b", "c"]


# ---- 2a. saliency reader ------------------------------------------------------------------------------------------


def _jpeg(path: Path, width: int, height: int, orientation: int = 1) -> None:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.new("RGB", (width, height), (90, 120, 30)).save(path, exif=exif)


def test_saliency_reader_and_its_checks(tmp_path: Path) -> None:
    from pss.data.problems import KINDS
    from pss.data.saliency import SaliencyError, check_saliency, read_saliency, saliency_path

    (tmp_path / "JPEGImages").mkdir()
    sal = tmp_path / "SALImages"
    sal.mkdir()
    records = []
    for name in ("good", "rgb", "rotated", "transposed", "small", "palette", "binary", "missing", "corrupt", "wide16"):
        # "rotated" is stored 40x30 with EXIF orientation 6: displayed 30 wide, 40 high
        _jpeg(tmp_path / "JPEGImages" / f"{name}.jpg", 40, 30, orientation=6 if name == "rotated" else 1)
        records.append(ImageRecord(name, tmp_path / "JPEGImages" / f"{name}.jpg", None, user="id1"))
    grey = np.tile(np.arange(0, 250, 250 / 40, dtype=np.float64).astype(np.uint8), (30, 1))  # (30, 40)
    Image.fromarray(grey, "L").save(sal / "good.png")
    rgb = np.stack([grey, np.zeros_like(grey), np.full_like(grey, 255)], axis=2)
    Image.fromarray(rgb, "RGB").save(sal / "rgb.png")
    Image.fromarray(grey.T.copy(), "L").save(sal / "rotated.png")       # 30 wide x 40 high: matches the display
    Image.fromarray(grey.T.copy(), "L").save(sal / "transposed.png")    # 30x40 for a 40x30 image
    Image.fromarray(grey[:20], "L").save(sal / "small.png")
    Image.fromarray(grey, "P").save(sal / "palette.png")
    Image.fromarray((grey > 100).astype(np.uint8), "L").save(sal / "binary.png")
    (sal / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(grey.astype(np.uint16) * 200).save(sal / "wide16.png")

    assert saliency_path(records[0]) == sal / "good.png"  # SALImages/ beside JPEGImages/ (the EPS layout)
    assert read_saliency(sal / "good.png", (30, 40)) == pytest.approx(grey / 255.0)
    assert read_saliency(sal / "rgb.png", (30, 40)) == pytest.approx(np.rint((grey + 255.0) / 3) / 255.0)
    found = {p.path.stem: p.kind for p in check_saliency(records)}
    assert found == {"transposed": "saliency_orientation_mismatch", "small": "saliency_size_mismatch",
                     "palette": "bad_saliency_values", "binary": "bad_saliency_values",
                     "missing": "missing_saliency", "corrupt": "corrupt_saliency", "wide16": "bad_saliency_values"}
    assert set(found.values()) <= set(KINDS)
    messages = {p.path.stem: p.message for p in check_saliency(records)}
    assert "rotate the map" in messages["transposed"] and "multiply by 255" in messages["binary"]
    with pytest.raises(SaliencyError, match="saliency map is 40x20"):
        read_saliency(sal / "small.png", (30, 40))


def test_saliency_follows_the_images_crop_and_flip(tmp_path: Path) -> None:
    from pss.data.datasets import SegDataset
    from pss.data.saliency import PAD_VALUE

    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SALImages").mkdir()
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    image = np.stack([grey, grey, grey], axis=2)  # the image is its own saliency map
    Image.fromarray(image).save(tmp_path / "JPEGImages" / "a.png")
    Image.fromarray(grey, "L").save(tmp_path / "SALImages" / "a.png")
    write_label_png(tmp_path / "a_mask.png", np.zeros((30, 40), np.uint8))
    record = ImageRecord("a", tmp_path / "JPEGImages" / "a.png", tmp_path / "a_mask.png")
    # scale (1, 1): the long side stays 40 = crop, so only the padding (30 -> 40 rows) and the flip act
    data = SegDataset([record], train=True, crop=40, seed=3, scale=(1.0, 1.0), fields=("saliency", "tags"))
    flips = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        item = data[0]
        assert item is not None and item["saliency"].shape == (40, 40) and item["tags"].shape == (21,)
        padded = item["label"] == 255
        assert torch.equal(item["saliency"] == PAD_VALUE, padded) and padded.sum() == 10 * 40
        assert torch.allclose(item["saliency"][~padded], item["image"][0][~padded], atol=1 / 254 + 1e-6)
        flips.add(bool(torch.allclose(item["saliency"][:30], torch.from_numpy(grey[:, ::-1] / 255.0).float(),
                                      atol=1 / 254 + 1e-6)))
    assert flips == {True, False}
    # evaluation items carry the map too (no padding); a missing map skips the item like a bad image
    item = SegDataset([record], train=False, crop=40, eval_mode="none", fields=("saliency",))[0]
    assert item is not None and torch.allclose(item["saliency"], torch.from_numpy(grey / 255.0).float(),
                                               atol=1 / 254 + 1e-6)
    (tmp_path / "SALImages" / "a.png").unlink()
    missing = SegDataset([record], train=True, crop=40, fields=("saliency",))
    assert missing[0] is None and missing.skipped == 1


# ---- 3. EPS losses ------------------------------------------------------------------------------------------------


def test_classification_loss_by_hand() -> None:
    from pss.losses import multilabel_soft_margin

    logits, tags = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[1.0, 0.0]])
    # class 1: -log σ(0) = ln 2; class 2 (absent): -log(1 - σ(ln 3)) = -log(1/4) = 2 ln 2; mean 1.5 ln 2
    assert float(multilabel_soft_margin(logits, tags)) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    x, y = torch.randn(3, 20), (torch.rand(3, 20) > 0.5).float()
    assert float(multilabel_soft_margin(x, y)) == pytest.approx(float(F.multilabel_soft_margin_loss(x, y)), rel=1e-5)


# The 2x2 toy: channels (bg, c1, c2, c3), c1 and c2 tagged, c3 not; pixels a (0,0), b (0,1), c (1,0), d (1,1).
_P = torch.tensor([[0.1, 0.7, 0.1, 0.1],   # a
                   [0.1, 0.1, 0.6, 0.2],   # b
                   [0.5, 0.2, 0.1, 0.2],   # c
                   [0.2, 0.6, 0.1, 0.1]])  # d
_CAMS = _P.log().t().reshape(1, 4, 2, 2)   # softmax(log p) = p
_TAGS = torch.tensor([[1.0, 1.0, 0.0]])
_SAL = torch.tensor([[[1.0, 0.0], [0.2, 0.8]]])


def test_eps_saliency_loss_on_a_2x2_toy() -> None:
    from pss.losses import eps_saliency_loss

    terms = eps_saliency_loss(_CAMS, _TAGS, _SAL, tau=0.4, lam=0.5)
    # overlap: c1 is > 0.5 at a, d, both salient -> 2/(2 + 1e-4) > τ: foreground; c2 only at b, not salient -> 0:
    # background; c3 untagged -> in neither. M_fg = p_c1 = (.7 .1 .2 .6); M_bg = p_bg + p_c2 = (.2 .7 .6 .3);
    # Ŝ = .5 M_fg + .5 (1 - M_bg) = (.75 .2 .3 .65); L = ((.25)² + .2² + .1² + .15²) / 4 = .135 / 4
    assert terms.overlap[0, :2].tolist() == pytest.approx([2 / (2 + 1e-4), 0.0])
    assert terms.foreground_classes.tolist() == [[True, False, False]]
    assert terms.estimate.flatten().tolist() == pytest.approx([0.75, 0.2, 0.3, 0.65], abs=1e-6)
    assert float(terms.loss) == pytest.approx(0.135 / 4, rel=1e-5)
    # τ above c1's ratio: c1 joins the background, M_fg = 0, M_bg = p_bg + p_c1 + p_c2, Ŝ = .5 p_c3
    strict = eps_saliency_loss(_CAMS, _TAGS, _SAL, tau=0.99999, lam=0.5)
    assert float(strict.loss) == pytest.approx((0.95 ** 2 + 0.1 ** 2 + 0.1 ** 2 + 0.75 ** 2) / 4, rel=1e-5)
    # λ = 1: Ŝ = M_fg = (.7 .1 .2 .6)
    assert float(eps_saliency_loss(_CAMS, _TAGS, _SAL, lam=1.0).loss) == pytest.approx(
        (0.3 ** 2 + 0.1 ** 2 + 0.0 ** 2 + 0.2 ** 2) / 4, rel=1e-5)
    # the saliency map is resized nearest to the CAM size: a 4x4 map of 2x2 blocks gives the same loss
    big = _SAL.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert float(eps_saliency_loss(_CAMS, _TAGS, big).loss) == pytest.approx(0.135 / 4, rel=1e-5)
    # a padded pixel (saliency -1) is out of the ratios and the mean
    padded = _SAL.clone()
    padded[0, 1, 1] = -1.0
    assert float(eps_saliency_loss(_CAMS, _TAGS, padded).loss) == pytest.approx((0.0625 + 0.04 + 0.01) / 3, rel=1e-5)
    # the ratios are detached: the gradient flows through Ŝ only
    cams = _CAMS.clone().requires_grad_(True)
    eps_saliency_loss(cams, _TAGS, _SAL).loss.backward()
    assert cams.grad is not None and torch.isfinite(cams.grad).all()


# ---- 4. AffinityNet -----------------------------------------------------------------------------------------------


def test_pair_offsets_and_indices_for_radius_5() -> None:
    from pss.models.affinity import pair_indices, pair_offsets

    offsets = pair_offsets(5)
    # per row dy: dy=0 -> dx 1..4 (4); dy=1, 2 -> |dx| <= 4 (9 each); dy=3 -> |dx| <= 3 (7); dy=4 -> |dx| <= 2 (5)
    assert len(offsets) == 4 + 9 + 9 + 7 + 5 == 34
    assert all(0 < dy * dy + dx * dx < 25 and (dy > 0 or dx > 0) for dy, dx in offsets)
    assert len(set(offsets)) == 34 and not any((-dy, -dx) in offsets for dy, dx in offsets)
    for h, w in ((12, 16), (5, 9), (20, 13)):
        index_from, index_to = pair_indices(h, w, 5)
        assert len(index_from) == 34 * (h - 4) * (w - 8)  # interior "from" pixels only (psa)
        fy, fx, ty, tx = index_from // w, index_from % w, index_to // w, index_to % w
        assert ((ty - fy) ** 2 + (tx - fx) ** 2 < 25).all() and (ty < h).all() and (tx >= 0).all() and (tx < w).all()
        assert fy.max() == h - 5 and fx.min() == 4 and fx.max() == w - 5
    assert len(pair_indices(8, 8, 5)[0]) == 0  # an 8x8 grid (64 px crop) has no interior pixel
    # every in-grid pair, once (the random walk): sum over offsets of (h - dy)(w - |dx|)
    h, w = 6, 7
    full_from, full_to = pair_indices(h, w, 5, interior_only=False)
    assert len(full_from) == sum((h - dy) * (w - abs(dx)) for dy, dx in offsets)
    pairs = {tuple(sorted(p)) for p in zip(full_from.tolist(), full_to.tolist(), strict=True)}
    assert len(pairs) == len(full_from)
    by_hand = {(i, j) for i in range(h * w) for j in range(i + 1, h * w)
               if (i // w - j // w) ** 2 + (i % w - j % w) ** 2 < 25}
    assert pairs == by_hand


def test_affinity_pair_labels_and_loss_by_hand() -> None:
    from pss.losses import AffinityPairLabels, affinity_loss, affinity_pair_labels

    grid = torch.tensor([[[0, 0, 1], [2, 255, 1]]])  # flattened: 0 0 1 / 2 255 1
    index_from, index_to = torch.tensor([0, 2, 0, 1, 3]), torch.tensor([1, 5, 2, 4, 5])
    labels = affinity_pair_labels(grid, index_from, index_to)
    assert labels.bg_pos.tolist() == [[1, 0, 0, 0, 0]]  # (0,1): both background
    assert labels.fg_pos.tolist() == [[0, 1, 0, 0, 0]]  # (2,5): class 1 both
    assert labels.neg.tolist() == [[0, 0, 1, 0, 1]]     # (0,2): 0 vs 1; (3,5): 2 vs 1; (1,4) touches 255: none
    aff = torch.tensor([[0.5, 0.25, 0.8, 0.9]])
    terms = affinity_loss(aff, AffinityPairLabels(torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 1.0, 0, 0]]),
                                                  torch.tensor([[0, 0, 1.0, 1.0]])))
    bg = -math.log(0.5 + 1e-5) / (1 + 1e-5)                                    # ≈ ln 2
    fg = -math.log(0.25 + 1e-5) / (1 + 1e-5)                                   # ≈ ln 4
    neg = -(math.log(1 + 1e-5 - 0.8) + math.log(1 + 1e-5 - 0.9)) / (2 + 1e-5)  # ≈ (ln 5 + ln 10) / 2
    assert (float(terms.bg), float(terms.fg), float(terms.neg)) == pytest.approx((bg, fg, neg), rel=1e-5)
    assert float(terms.loss) == pytest.approx(bg / 4 + fg / 4 + neg / 2, rel=1e-5)
    assert float(terms.loss) == pytest.approx(math.log(2) / 4 + math.log(4) / 4 + math.log(50) / 4, rel=1e-3)


def test_one_random_walk_step_on_a_3x3_grid() -> None:
    from pss.models.affinity import random_walk

    scores = torch.zeros(1, 3, 3)
    scores[0, 1, 1] = 1.0  # one-hot at the centre
    # equal features: every affinity is 1; radius 2 = the 8-neighbourhood. One step (logt = 0): each pixel gets the
    # centre's score divided by its column sum = its neighbours + itself: corner 1/4, edge 1/6, centre 1/9
    walked = random_walk(scores, torch.zeros(4, 3, 3), beta=8, logt=0, radius=2)
    corner, edge, centre = 1 / 4, 1 / 6, 1 / 9
    want = [corner, edge, corner, edge, centre, edge, corner, edge, corner]
    assert walked[0].flatten().tolist() == pytest.approx(want)
    # one feature differs: f(2,2) = ln 2 -> its affinities exp(-ln 2) = 1/2, ^β (β = 2) = 1/4.
    features = torch.zeros(1, 3, 3)
    features[0, 2, 2] = math.log(2.0)
    walked = random_walk(scores, features, beta=2, logt=0, radius=2)
    # column (2,2): 1/4 from (1,1), (1,2), (2,1), 1 itself -> 1/4 / 1.75 = 1/7;
    # column (1,2): 1 from (0,1), (0,2), (1,1), (2,1), 1/4 from (2,2), 1 itself -> 1 / 5.25 = 4/21
    assert float(walked[0, 2, 2]) == pytest.approx(1 / 7, rel=1e-6)
    assert float(walked[0, 1, 2]) == pytest.approx(4 / 21, rel=1e-6)
    # two steps = T squared once; the sparse path (no dense matrix) gives the same as the dense one
    torch.manual_seed(0)
    s, f = torch.rand(3, 5, 6), torch.rand(8, 5, 6)
    dense = random_walk(s, f, beta=8, logt=2, radius=5, method="dense")
    sparse = random_walk(s, f, beta=8, logt=2, radius=5, method="sparse")
    assert torch.allclose(dense, sparse, atol=1e-5)
    assert torch.allclose(random_walk(s, f, beta=8, logt=8, radius=5), random_walk(s, f, beta=8, logt=8, radius=5,
                                                                                   method="dense"), atol=1e-4)
    with pytest.raises(ValueError, match="max_dense_nodes=29"):  # the memory bound: 30 nodes > 29
        random_walk(s, f, method="dense", max_dense_nodes=29)
    one = random_walk(s, f, beta=8, logt=1, radius=5)
    twice = random_walk(random_walk(s, f, beta=8, logt=0, radius=5), f, beta=8, logt=0, radius=5)
    assert torch.allclose(one, twice, atol=1e-6)


def test_confident_labels_follow_psas_two_background_powers() -> None:
    from pss.weak.pipeline import confident_label_map

    scores = torch.zeros(20, 1, 4)
    scores[4, 0] = torch.tensor([0.9, 0.5, 0.1, 0.0])  # class 5
    # peak .9: bg4 = .1^4 = 1e-4 < .9 -> class 5. peak .5: bg4 = .0625 < .5 -> class 5 (confident).
    # peak .1: bg4 = .6561 > .1 (uncertain under la); bg32 = .9^32 = .034 < .1 (ha says class) -> 255.
    # peak 0: both backgrounds 1 -> 0.
    assert confident_label_map(scores)[0].tolist() == [5, 5, 255, 0]
    scores[4, 0, 2] = 0.02  # bg32 = .98^32 = .52 > .02: background even under the weak background -> 0
    assert confident_label_map(scores)[0, 2] == 0


# ---- 6. quality -----------------------------------------------------------------------------------------------------


def test_pseudo_mask_quality_uses_the_users_labelled_masks(tmp_path: Path) -> None:
    from pss.weak.quality import pseudo_mask_quality

    (tmp_path / "gt").mkdir()
    (tmp_path / "pseudo").mkdir()
    write_label_png(tmp_path / "gt" / "a.png", np.array([[0, 1], [0, 1]], np.uint8))
    write_label_png(tmp_path / "pseudo" / "a.png", np.array([[0, 1], [1, 1]], np.uint8))
    write_label_png(tmp_path / "pseudo" / "b.png", np.zeros((2, 2), np.uint8))
    records = [ImageRecord("a", tmp_path / "a.jpg", tmp_path / "gt" / "a.png", user="id1"),
               ImageRecord("b", tmp_path / "b.jpg", None, user="id1"),                  # unlabelled: not scored
               ImageRecord("c", tmp_path / "c.jpg", tmp_path / "gt" / "a.png", user="id1")]  # no pseudo mask
    report = pseudo_mask_quality(tmp_path / "pseudo", records)
    # background IoU 1/2, class 1 IoU 2/3
    assert report.num_images == 1 and report.miou["present"] == pytest.approx((1 / 2 + 2 / 3) / 2)


# ---- 5. end to end on the demo data --------------------------------------------------------------------------------


def test_tags_to_refined_masks_end_to_end(tmp_path: Path) -> None:
    from pss.config import build_config
    from pss.data.demo import DemoConfig, generate_demo
    from pss.data.pss_layout import read_user
    from pss.data.saliency import check_saliency
    from pss.data.tags import user_tag_report
    from pss.data.voc_layout import read_voc
    from pss.weak import pipeline
    from pss.weak.quality import pseudo_mask_quality

    torch.manual_seed(0)
    root = tmp_path / "data"
    generate_demo(root, seed=0, config=DemoConfig(num_source=8, num_users=1, images_per_user=8, long_side=96))
    source = read_voc(root / "VOC2012")
    user = read_user(root / "personal", "id1")
    report = user_tag_report(user)
    assert report.tagged and not report.untagged
    device = torch.device("cpu")
    # crop 96: a 12x12 feature grid (interior pairs at radius 5 need >= 5 rows and >= 9 columns: crop >= 72)
    config = build_config("tiny", ["train.steps=2", "train.batch_size=2", "data.crop=96"])

    saliency_model = pipeline.train_saliency_model(config, source, device)
    sal_dir = tmp_path / "SALImages"
    assert len(pipeline.write_saliency_maps(saliency_model, user.records, sal_dir, device)) == len(user.records)
    assert check_saliency(user.records, sal_dir) == []

    cam_model = pipeline.train_cam_model(config, report.tagged, sal_dir, device)
    masks = pipeline.write_cam_pseudo_masks(cam_model, report.tagged, tmp_path / "eps", tmp_path / "scores", device)
    assert sorted(masks) == sorted(r.name for r in report.tagged)
    for record in report.tagged:
        assert set(np.unique(read_label_png(masks[record.name]))) <= {0, *record.tags}

    aff_records = pipeline.write_affinity_labels(report.tagged, tmp_path / "scores", tmp_path / "afflabels")
    for record in aff_records:
        assert record.mask_path is not None
        assert set(np.unique(read_label_png(record.mask_path))) <= {0, 255, *record.tags}
    aff_model = pipeline.train_affinity_model(config, aff_records, device)
    refined = pipeline.write_refined_masks(aff_model, report.tagged, tmp_path / "scores", tmp_path / "rw", device)
    # the same at a smaller inference size (large photos): outputs still at the image's size
    small = pipeline.write_refined_masks(aff_model, report.tagged[:2], tmp_path / "scores", tmp_path / "rw48",
                                         device, short_side=48)
    for record in report.tagged:
        mask = read_label_png(refined[record.name])
        assert mask.shape == read_label_png(masks[record.name]).shape
        assert set(np.unique(mask)) <= {0, *record.tags}
        if record.name in small:
            assert read_label_png(small[record.name]).shape == mask.shape

    for folder in ("eps", "rw"):
        quality = pseudo_mask_quality(tmp_path / folder, user.records)
        assert quality.num_images == sum(r.mask_path is not None for r in report.tagged) > 0
        assert 0.0 <= quality.miou["pss"] <= 1.0


# ---- the segmentation stage on the weak masks ------------------------------------------------------------------------


def test_weak_seg_trains_on_the_weak_stages_masks(tmp_path: Path) -> None:
    from fixed_batch import write_records
    from pss.config import build_config
    from pss.engine.data import make_stream
    from pss.engine.evaluate import Prediction
    from pss.engine.hooks import Hook
    from pss.engine.trainer import Trainer
    from pss.errors import ConfigError
    from pss.methods.weak_seg import WeakMasksPseudoConfig, WeakSeg, WeakSegConfig
    from pss.models.segmenter import build_segmenter

    records = write_records(tmp_path)
    weak = tmp_path / "weak"
    weak.mkdir()
    for record in records["target"][:5]:  # target3..7 have no mask (e.g. untagged): left out
        write_label_png(weak / f"{record.name}.png", np.full((72, 80), 2, np.uint8))

    class FakeSource:
        def __init__(self) -> None:
            self.by_name = {r.name: r for r in records["target"]}

        def predict(self, model: object) -> list[Prediction]:
            return [Prediction(r.name, np.zeros((72, 80), np.uint8), np.full((72, 80), 0.5, np.float32), 0)
                    for r in records["target"]]

        def write(self, name: str, label: np.ndarray) -> ImageRecord:
            path = tmp_path / f"pseudo_{name}.png"
            write_label_png(path, label)
            return dataclasses.replace(self.by_name[name], mask_path=path)

    policy = WeakMasksPseudoConfig(folder=str(weak))
    labels = policy.build(None, FakeSource())  # type: ignore[arg-type]
    assert labels.selected == [r.name for r in records["target"][:5]] and len(labels.mean_entropy) == 8
    assert all(read_label_png(r.mask_path).max() == 2 for r in labels.records if r.mask_path)
    with pytest.raises(ConfigError, match="pseudo.folder is empty"):
        WeakMasksPseudoConfig().build(None, FakeSource())  # type: ignore[arg-type]

    torch.manual_seed(0)
    config = build_config("tiny", ["train.steps=2", "train.amp=off", "train.channels_last=off"])
    method = WeakSeg(WeakSegConfig(pseudo=policy), 21)
    assert method.starts_from == "source_only" and method.pseudo_policy() is policy
    streams = {"source": make_stream(records["source"], None, config, 1),
               "pseudo": make_stream(labels.records, None, config, 2)}
    seen: list[set[str]] = []

    class Spy(Hook):
        def on_step(self, trainer: Trainer, step: int, losses: dict[str, torch.Tensor]) -> None:
            seen.append(set(losses))

    Trainer(config, build_segmenter(config.model), method, streams, torch.device("cpu"), hooks=[Spy()]).run()
    assert seen == [{"source_main", "source_aux", "pseudo_main", "pseudo_aux"}] * 2


# ---- the CAM classifier -------------------------------------------------------------------------------------------


def test_cam_net_shapes_frozen_bn_and_eps_inference() -> None:
    from pss.models.backbones import build_backbone
    from pss.models.cam import CAMNet, cam_pseudo_mask, multiscale_cam_scores

    torch.manual_seed(0)
    model = CAMNet(build_backbone("tiny", pretrained=False), 21, frozen_bn=True)
    assert model.classifier.bias is None and model.classifier.out_channels == 21
    out = model.train()(torch.rand(2, 3, 40, 48))
    assert out.cams.shape == (2, 21, 5, 6) and torch.allclose(out.logits, out.cams.mean(dim=(2, 3)))
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not bn.training and not bn.weight.requires_grad
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # the forward did not update it
    tags = torch.zeros(20)
    tags[[2, 6]] = 1.0
    scores = multiscale_cam_scores(model, torch.rand(3, 30, 44), tags)
    assert scores.shape == (20, 30, 44)
    assert scores.amax(dim=(1, 2))[[2, 6]].tolist() == pytest.approx([1.0, 1.0], abs=1e-4)  # max-normalised
    assert scores[[i for i in range(20) if i not in (2, 6)]].abs().max() == 0  # untagged classes never score
    # argmax against the constant background 0.20: class c + 1 where its score beats 0.2 and the others
    by_hand = torch.zeros(20, 1, 3)
    by_hand[2, 0] = torch.tensor([0.1, 0.5, 0.3])
    by_hand[6, 0] = torch.tensor([0.15, 0.4, 0.9])
    assert cam_pseudo_mask(by_hand)[0].tolist() == [0, 3, 7]
