"""Transfer from strong to weak classes (issue 18): the split, the per-group mIoU, the mask discriminator, L-Net's
coarse-label diffusion by hand, and the split -> L-Net -> P-Net pipeline end to end on the tiny preset."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pss.data.datasets import SegDataset
from pss.data.labels import IGNORE_INDEX, read_label_png, write_label_png
from pss.data.records import ImageRecord
from pss.data.strong_weak import (StrongWeakConfig, apply_split, choose_strong_classes, hide_weak_pixels,
                                  split_record_tags, weak_classes)
from pss.methods.base import StepBatch
from pss.methods.pnet import PNet, PNetConfig, mask_discriminator_loss, pair_input, real_masks
from pss.models.lnet import DiffusionConfig, coarse_labels, propagate_within
from pss.models.segmenter import SegOutput
from pss.weak.split_report import group_miou

C = 21


# ---- 1. the split ------------------------------------------------------------------------------------------------


def test_choose_strong_classes() -> None:
    assert choose_strong_classes([3, 1]) == (0, 1, 3)
    assert choose_strong_classes(fraction=0.0) == (0,)
    assert choose_strong_classes(fraction=1.0) == tuple(range(C))
    half = choose_strong_classes(fraction=0.5, seed=7)
    assert len(half) == 11 and half[0] == 0 and half == choose_strong_classes(fraction=0.5, seed=7)
    assert half != choose_strong_classes(fraction=0.5, seed=8)
    assert weak_classes(half) == tuple(c for c in range(1, C) if c not in half)
    assert StrongWeakConfig(strong_classes=(2,)).strong() == (0, 2)
    for bad in ({}, {"classes": [1], "fraction": 0.5}, {"fraction": 1.5}, {"classes": [21]}):
        with pytest.raises(ValueError):
            choose_strong_classes(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StrongWeakConfig(hide="boxes")


def _mask() -> np.ndarray:
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:4] = 1  # strong
    mask[3:5, 4:7] = 2  # weak
    mask[0, 7] = IGNORE_INDEX  # a VOC boundary pixel
    return mask


def test_split_hides_exactly_the_weak_pixels_and_keeps_the_tags(tmp_path: Path) -> None:
    mask = _mask()
    hidden = hide_weak_pixels(mask, (0, 1))
    assert np.array_equal(hidden == IGNORE_INDEX, (mask == 2) | (mask == IGNORE_INDEX))
    assert np.array_equal(hidden[mask != 2], mask[mask != 2])
    assert (hide_weak_pixels(mask, (0, 1), "image") == IGNORE_INDEX).all()  # a weak class present: tag-only image
    assert np.array_equal(hide_weak_pixels(mask, (0, 1, 2), "image"), mask)  # all strong: unchanged

    image = np.zeros((6, 8, 3), np.uint8)
    from PIL import Image
    records = []
    for name, m in (("weak", mask), ("strong", np.where(mask == 2, 0, mask).astype(np.uint8))):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
        write_label_png(tmp_path / f"{name}_gt.png", m)
        records.append(ImageRecord(name, tmp_path / f"{name}.png", tmp_path / f"{name}_gt.png"))
    split = apply_split(records, (1,), tmp_path / "split")
    assert split.strong == (0, 1) and split.weak_images == ("weak",) and split.strong_images == ("strong",)
    weak = split.record("weak")
    assert weak.mask_path is not None and np.array_equal(read_label_png(weak.mask_path), hidden)
    assert weak.tags == (1, 2)  # from the full mask: the weak class stays a tag
    assert list(np.flatnonzero(split_record_tags(weak)) + 1) == [1, 2]
    item = SegDataset([weak], train=False, crop=8, eval_mode="none", fields=("tags",))[0]
    assert item is not None
    assert torch.equal(item["label"], torch.from_numpy(hidden).long())
    assert torch.nonzero(item["tags"]).flatten().tolist() == [1, 2]  # the batch field too


# ---- the per-group mIoU ----------------------------------------------------------------------------------------


def test_group_miou_by_hand() -> None:
    # rows = ground truth; classes 0, 1 strong, 2 and 3 weak (3 never occurs)
    matrix = np.array([[4, 1, 0, 0], [0, 3, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0]])
    iou = [4 / 5, 3 / 7, 2 / 5, 0.0]  # diag / (row + column - diag)
    pss = group_miou(matrix, (1,))
    assert pss.all == pytest.approx(sum(iou) / 4)
    assert pss.strong == pytest.approx((iou[0] + iou[1]) / 2)
    assert pss.weak == pytest.approx((iou[2] + iou[3]) / 2)
    present = group_miou(matrix, (0, 1), "present")  # class 3 has no union: left out
    assert present.all == pytest.approx(sum(iou[:3]) / 3) and present.weak == pytest.approx(iou[2])
    assert math.isnan(group_miou(matrix, (1, 2, 3)).weak)  # no weak class: fully supervised


# ---- the mask discriminator ----------------------------------------------------------------------------------------


class _ClassOneLogit(nn.Module):
    """A stand-in discriminator: D(image, mask) = the mask's class-1 channel (input channel 3 + 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 4:5]


class _ConstantSegmenter(nn.Module):
    """Main logits 2 for class 1 and 0 elsewhere, at stride 8."""

    def forward(self, x: torch.Tensor) -> SegOutput:
        n, _, h, w = x.shape
        main = torch.zeros(n, C, h // 8, w // 8, requires_grad=True)
        logits = main + torch.nn.functional.one_hot(torch.tensor(1), C).float().view(1, C, 1, 1) * 2.0
        return SegOutput(logits, logits, logits[:, :4])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_real_masks_fill_ignored_pixels_with_the_prediction() -> None:
    label = torch.tensor([[[1, IGNORE_INDEX]]])
    prob = torch.tensor([0.2, 0.3, 0.5]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    real = real_masks(label, prob)
    assert real[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert real[0, :, 0, 1].tolist() == pytest.approx([0.2, 0.3, 0.5])


def test_mask_discriminator_loss_by_hand() -> None:
    d = _ClassOneLogit()
    image = torch.zeros(1, 3, 2, 2)
    real = pair_input(image, real_masks(torch.ones(1, 2, 2, dtype=torch.long), torch.zeros(1, C, 2, 2)))
    fake = pair_input(image, torch.full((1, C, 2, 2), 0.5))
    # D(real) = 1 against "real" (1), D(fake) = 0.5 against "fake" (0)
    want = 0.5 * (_softplus(-1.0) + _softplus(0.5))
    assert float(mask_discriminator_loss(d, real, fake)) == pytest.approx(want)
    assert float(mask_discriminator_loss(d, real, None)) == pytest.approx(0.5 * _softplus(-1.0))
    with pytest.raises(ValueError):
        mask_discriminator_loss(d, None, None)


def test_pnet_losses_by_hand() -> None:
    """One strong image (tags {1}) and one weak-class image (tags {1, 2}) with strong classes {0, 1}."""
    method = PNet(PNetConfig(strong_classes=(1,), ndf=2, lambda_seg_aux=0.0), C)
    method.discriminator = _ClassOneLogit()  # type: ignore[assignment]
    label = torch.ones(2, 32, 32, dtype=torch.long)
    tags = torch.zeros(2, C)
    tags[:, 1] = 1
    tags[1, 2] = 1
    batch = StepBatch(0, {"image": torch.zeros(2, 3, 32, 32), "label": label, "tags": tags})
    out = method.segmenter_losses(_ConstantSegmenter(), batch)  # type: ignore[arg-type]
    p1 = math.exp(2) / (math.exp(2) + C - 1)  # softmax of class 1
    assert float(out.losses["source_main"].detach()) == pytest.approx(-math.log(p1), rel=1e-5)
    assert float(out.losses["weak_adv"].detach()) == pytest.approx(0.01 * _softplus(-p1), rel=1e-5)
    assert out.cache["real"].shape == (1, C + 3, 32, 32) and out.cache["fake"].shape == (1, C + 3, 32, 32)
    critic = method.critic_losses(out.cache)
    assert float(critic["d_mask"]) == pytest.approx(0.5 * (_softplus(-1.0) + _softplus(p1)), rel=1e-5)


def test_pnet_trains_its_discriminator_in_the_loop(tmp_path: Path) -> None:
    """Through the one loop: the segmenter and the mask discriminator (its own Adam) both move; D gets its loss."""
    from PIL import Image

    from pss.config import build_config
    from pss.models.segmenter import build_segmenter
    from pss.weak.pipeline import train_stage

    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        mask = np.zeros((64, 64), np.uint8)
        mask[8:40, 8:40] = 1
        if i % 2:
            mask[40:60, 30:60] = 2  # a weak class: this image's prediction is "fake"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        write_label_png(tmp_path / f"{i}_gt.png", mask)
        records.append(ImageRecord(str(i), tmp_path / f"{i}.png", tmp_path / f"{i}_gt.png"))
    split = apply_split(records, (1,), tmp_path / "split")
    config = build_config("tiny", ["train.steps=2", "train.batch_size=4", "train.amp=off", "train.channels_last=off"])
    method = PNet(PNetConfig(strong_classes=(1,), ndf=4), C)
    before = [p.detach().clone() for p in method.discriminator.parameters()]
    model = build_segmenter(config.model)
    weights = [p.detach().clone() for p in model.parameters()]
    dataset = SegDataset(list(split.records), train=True, crop=64, fields=("tags",))
    result = train_stage(config, model, method, dataset, torch.device("cpu"))
    assert {"source_main", "weak_adv", "d_mask"} <= set(result.last_losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, method.discriminator.parameters(), strict=True))
    assert any(not torch.equal(b, p) for b, p in zip(weights, model.parameters(), strict=True))


# ---- L-Net's coarse labels on a toy ------------------------------------------------------------------------------


def test_propagation_stays_inside_the_region_and_pays_for_colour_edges() -> None:
    image = torch.zeros(3, 1, 6)
    image[0, 0, :3] = 1.0  # red | green | (outside)
    image[1, 0, 3:] = 1.0
    region = torch.tensor([[True, True, True, True, True, False]])
    seeds = torch.zeros(2, 1, 6, dtype=torch.bool)
    seeds[0, 0, 0] = True
    seeds[1, 0, 4] = True
    distance = propagate_within(seeds, region, image, sigma=0.5, step_cost=0.1)
    edge = 2.0 / (2 * 0.25) + 0.1  # red -> green: |(1,0,0) - (0,1,0)|^2 = 2
    assert distance[0, 0].tolist()[:5] == pytest.approx([0.0, 0.1, 0.2, 0.2 + edge, 0.3 + edge])
    assert distance[1, 0].tolist()[:5] == pytest.approx([0.3 + edge, 0.2 + edge, 0.1 + edge, 0.1, 0.0])
    assert math.isinf(distance[0, 0, 5]) and math.isinf(distance[1, 0, 5])  # outside the region
    capped = propagate_within(seeds, region, image, sigma=0.5, step_cost=0.1, iterations=1)
    assert math.isinf(capped[0, 0, 2]) and capped[0, 0, 1] == pytest.approx(0.1)  # one sweep: one step


def test_coarse_labels_on_a_toy() -> None:
    """Two objects of different colours in M, one CAM peak in each, an object without any peak, a band pixel."""
    image = torch.zeros(3, 8, 14)
    objectness = torch.zeros(8, 14)
    objectness[1:7, 1:5] = 1.0
    image[0, 1:7, 1:5] = 1.0  # red object: class 3
    objectness[1:7, 5:9] = 1.0
    image[1, 1:7, 5:9] = 1.0  # green object touching it: class 5
    objectness[2:4, 11:13] = 0.9  # an object no CAM fires on
    objectness[7, 0] = 0.4  # between the background and object thresholds
    scores = torch.zeros(20, 8, 14)
    scores[2, 3, 2] = 1.0  # class 3's peak
    scores[2, 3, 5] = 0.3  # its weak spill into the green object (below the seed threshold)
    scores[4, 4, 7] = 1.0  # class 5's peak
    label = coarse_labels(image, objectness, scores, DiffusionConfig())
    want = torch.zeros(8, 14, dtype=torch.uint8)
    want[1:7, 1:5] = 3
    want[1:7, 5:9] = 5
    want[2:4, 11:13] = IGNORE_INDEX  # unreached
    want[7, 0] = IGNORE_INDEX  # uncertain band
    assert torch.equal(label, want)
    # no tagged class: every object pixel stays uncertain, the background stays background
    empty = coarse_labels(image, objectness, torch.zeros(20, 8, 14))
    assert (empty[objectness >= 0.5] == IGNORE_INDEX).all() and (empty[objectness < 0.3] == 0).all()


def test_saliency_maps_we_write_stay_readable(tmp_path: Path) -> None:
    """An almost empty map (maximum grey level 1: a short-trained saliency or object model) must not come back as a
    'binary map saved without scaling' (read_saliency refuses those, the dataset would skip the image)."""
    from pss.data.saliency import read_saliency, write_saliency_png

    faint = np.full((4, 4), 1.0 / 255, np.float32)
    write_saliency_png(tmp_path / "faint.png", faint)
    assert (read_saliency(tmp_path / "faint.png") == 0).all()
    Image.fromarray(np.ones((4, 4), np.uint8), mode="L").save(tmp_path / "binary.png")  # a user's unscaled 0/1 map
    with pytest.raises(Exception, match="binary"):
        read_saliency(tmp_path / "binary.png")
    levels = np.arange(256, dtype=np.float32).reshape(16, 16) / 255  # every other level is written as it is
    write_saliency_png(tmp_path / "levels.png", levels)
    grey = np.asarray(Image.open(tmp_path / "levels.png"))
    assert grey[0, 1] == 0 and np.array_equal(grey.ravel()[2:], np.arange(2, 256))


# ---- 5. end to end on the demo data ------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction_label, hide", [("half", "pixels"), ("none", "image")])
def test_split_lnet_pnet_end_to_end(tmp_path: Path, fraction_label: str, hide: str) -> None:
    from pss.config import build_config
    from pss.data.demo import DemoConfig, generate_demo
    from pss.data.voc_layout import read_voc
    from pss.weak.transfer import run_transfer

    torch.manual_seed(0)
    root = tmp_path / "data"
    generate_demo(root, seed=0, config=DemoConfig(num_source=8, num_users=1, images_per_user=2, long_side=96))
    source = read_voc(root / "VOC2012")
    present = sorted({int(c) for r in source if r.mask_path is not None
                      for c in np.unique(read_label_png(r.mask_path)) if 0 < c < C})
    strong = tuple(present[: len(present) // 2]) if fraction_label == "half" else ()
    config = build_config("tiny", ["train.steps=2", "train.batch_size=2", "train.amp=off",
                                   "train.channels_last=off"])
    if fraction_label == "half":
        kwargs = {"pnet": PNetConfig(strong_classes=strong, hide=hide, ndf=4)}
    else:  # the split given apart from P-Net's settings: P-Net is made to use it
        kwargs = {"split_config": StrongWeakConfig(strong_classes=strong, hide=hide), "pnet": PNetConfig(ndf=4)}
    result = run_transfer(config, source, tmp_path / "work", torch.device("cpu"), scales=(1.0,), short_side=48,
                          **kwargs)  # type: ignore[arg-type]
    split = result.split
    assert split.strong == (0, *strong) and split.policy == hide
    assert result.pnet_config.strong() == split.strong and result.pnet_config.hide == hide
    assert sorted(split.weak_images + split.strong_images) == sorted(r.name for r in source)
    assert split.weak_images, "the demo source must have weak-class images for this test"
    assert (result.object_model is None) == (not strong)
    for record in result.records:
        assert record.mask_path is not None
        values = set(np.unique(read_label_png(record.mask_path)).tolist())
        assert values <= {0, IGNORE_INDEX, *record.tags}
        if record.name in split.weak_images:
            coarse = read_label_png(result.coarse_folder / f"{record.name}.png")
            assert set(np.unique(coarse).tolist()) <= {0, IGNORE_INDEX, *record.tags}
    assert result.coarse_quality is not None
    quality = result.coarse_quality
    assert quality.report.num_images == len(split.weak_images)
    assert 0.0 <= quality.groups.all <= 1.0 and 0.0 <= quality.groups.weak <= 1.0
    assert 0.0 <= quality.coverage <= 1.0
    from pss.models.segmenter import Segmenter
    assert isinstance(result.pnet, Segmenter)
