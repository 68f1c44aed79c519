"""The baselines' loss wiring (AdaptSeg, MaxSquare, FDA, MRNet) and the FDA / MRNet pseudo-label policies, against
values computed by hand on constant predictions. The loss functions themselves are tested in test_losses.py; every registered
method also trains through the loop in test_engine.py."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pss.data.labels import IGNORE_INDEX, read_label_png
from pss.data.records import ImageRecord
from pss.engine.evaluate import EvalSettings
from pss.engine.pseudo import PseudoContext
from pss.methods import StepBatch
from pss.methods.adaptseg import AdaptSeg, AdaptSegConfig
from pss.methods.fda import FDA, FDAConfig
from pss.methods.maxsquare import MaxSquare, MaxSquareConfig, confident_fused_labels
from pss.methods.mrnet import MRNet, MRNetConfig, MRNetStage2, MRNetStage2Config
from pss.methods.pseudo import (ClassThresholdPseudoConfig, FusedArgmaxPseudoConfig, SoftPrediction, Teacher,
                               class_thresholds)
from pss.models.segmenter import SegOutput

C = 21
LN2 = math.log(2.0)


def class_logits(cls: int, value: float) -> torch.Tensor:
    """(C,) logits: ``value`` for ``cls``, 0 elsewhere."""
    z = torch.zeros(C, dtype=torch.float64)
    z[cls] = value
    return z


class FixedModel(nn.Module):
    """Predicts the same logits at every stride-8 position of every image; records its inputs."""

    num_classes = C

    def __init__(self, main: torch.Tensor, aux: torch.Tensor) -> None:
        super().__init__()
        self.main, self.aux = main.float(), aux.float()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, group_ids: torch.Tensor | None = None) -> SegOutput:
        self.inputs.append(x.detach().clone())
        n, h, w = x.shape[0], math.ceil(x.shape[2] / 8), math.ceil(x.shape[3] / 8)
        main = self.main.view(1, C, 1, 1).expand(n, C, h, w)
        aux = self.aux.view(1, C, 1, 1).expand(n, C, h, w)
        return SegOutput(main.clone(), aux.clone(), torch.zeros(n, 4, h, w))


def batch(step: int = 0, n: int = 2, side: int = 32, label: int = 1, seed: int = 0) -> StepBatch:
    g = torch.Generator().manual_seed(seed)
    source = {"image": torch.rand(n, 3, side, side, generator=g), "label": torch.full((n, side, side), label)}
    target = {"image": torch.rand(n, 3, side, side, generator=g), "label": torch.full((n, side, side), IGNORE_INDEX)}
    return StepBatch(step=step, source=source, target=target)


def softmax(z: torch.Tensor) -> np.ndarray:
    return torch.softmax(z, 0).numpy()


def test_adaptseg_discriminators_see_softmax_maps() -> None:
    method = AdaptSeg(AdaptSegConfig(ndf=4), C)
    for p in method.parameters():  # D(x) = 0 everywhere: BCE(0, label) = ln 2 for either label
        nn.init.zeros_(p)
    model = FixedModel(class_logits(1, 2.0), class_logits(2, 1.0))
    out = method.segmenter_losses(model, batch())
    e2, e1 = math.exp(2.0), math.exp(1.0)
    assert out.losses["source_main"].item() == pytest.approx(math.log(e2 + 20) - 2.0, rel=1e-5)
    assert out.losses["source_aux"].item() == pytest.approx(0.4 * math.log(e1 + 20), rel=1e-5)
    assert out.losses["target_adv_main"].item() == pytest.approx(0.001 * LN2, rel=1e-5)
    assert out.losses["target_adv_aux"].item() == pytest.approx(0.0002 * LN2, rel=1e-5)
    # the discriminator input is the softmax of the upsampled output (output space), not an entropy map
    main_map = out.cache["target_main"]
    assert main_map.shape == (2, C, 32, 32)
    assert main_map[0, 1, 5, 7].item() == pytest.approx(e2 / (e2 + 20), rel=1e-5)
    assert out.cache["source_aux"][1, 2, 0, 0].item() == pytest.approx(e1 / (e1 + 20), rel=1e-5)
    aux = method.critic_losses(out.cache)
    assert aux["d_main"].item() == pytest.approx(LN2, rel=1e-5) and aux["d_aux"].item() == pytest.approx(LN2, rel=1e-5)


def test_maxsquare_plain_image_wise_and_multi_level() -> None:
    model = FixedModel(class_logits(1, 2.0), class_logits(2, 1.0))
    p = softmax(class_logits(1, 2.0))
    square_mean = float((p ** 2).sum() / C)  # mean over channels (and over identical pixels)
    plain = MaxSquare(MaxSquareConfig(), C).segmenter_losses(model, batch()).losses
    assert plain["target_maxsquare"].item() == pytest.approx(0.1 * -square_mean / 2, rel=1e-5)
    # image-wise: every pixel's argmax is class 1, n_1 = H*W, weight 1/(n_1^0.2 * (HW)^0.8) = 1/(HW)
    # -> -sum(p^2 w)/(N*C) = -(N * HW * sum_c p_c^2 / HW) / (N * C) = -mean_c p_c^2
    iw = MaxSquare(MaxSquareConfig(image_wise=True), C).segmenter_losses(model, batch()).losses
    assert iw["target_maxsquare"].item() == pytest.approx(0.1 * -square_mean, rel=1e-5)
    # multi-level: main is confident (p_1 > 0.95), the fused argmax is class 1, aux gets CE towards 1
    confident = FixedModel(class_logits(1, 10.0), class_logits(2, 1.0))
    multi = MaxSquare(MaxSquareConfig(multi_level=True), C).segmenter_losses(confident, batch()).losses
    assert multi["target_aux_hard"].item() == pytest.approx(0.01 * math.log(math.e + 20), rel=1e-5)
    unsure = MaxSquare(MaxSquareConfig(multi_level=True), C).segmenter_losses(model, batch()).losses
    assert unsure["target_aux_hard"].item() == 0.0  # p_1 = 0.27 < 0.95 and aux p_2 = 0.12: all pixels ignored


def test_confident_fused_labels_by_hand() -> None:
    main = torch.tensor([[0.96, 0.04], [0.6, 0.4], [0.2, 0.8]]).T.reshape(1, 2, 1, 3)
    aux = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.02, 0.98]]).T.reshape(1, 2, 1, 3)
    # pixel 0: main confident, fused (0.63, 0.37) -> 0; pixel 1: nobody > 0.95 -> 255; pixel 2: aux confident -> 1
    assert confident_fused_labels(main, aux, 0.95).tolist() == [[[0, IGNORE_INDEX, 1]]]


def test_fda_trains_on_source_with_the_target_amplitude() -> None:
    model = FixedModel(class_logits(1, 2.0), class_logits(1, 2.0))
    step = batch()
    step.target["image"] = step.target["image"][:1]  # a smaller target batch is cycled
    out = FDA(FDAConfig(beta=0.1), C).segmenter_losses(model, step).losses
    stylised, seen_target = model.inputs
    assert torch.equal(seen_target, step.target["image"])
    b = math.floor(32 * 0.1)  # window half-size: frequencies -3..3 on both axes
    spectrum = torch.fft.fftshift(torch.fft.fft2(stylised.double()).abs(), dim=(-2, -1))
    trg = torch.fft.fftshift(torch.fft.fft2(step.target["image"].double()).abs(), dim=(-2, -1))
    src = torch.fft.fftshift(torch.fft.fft2(step.source["image"].double()).abs(), dim=(-2, -1))
    low = (slice(None), slice(None), slice(16 - b, 16 + b + 1), slice(16 - b, 16 + b + 1))
    torch.testing.assert_close(spectrum[low], trg.expand(2, -1, -1, -1)[low], atol=1e-3, rtol=1e-4)
    high = spectrum.clone()
    high[low] = 0
    src_high = src.clone()
    src_high[low] = 0
    torch.testing.assert_close(high, src_high, atol=1e-3, rtol=1e-4)
    # robust entropy on the stride-8 target logits: ent = -sum p ln p / ln 21, loss = (ent^2 + 1e-8)^2
    p = softmax(class_logits(1, 2.0))
    ent = float(-(p * np.log(p)).sum() / math.log(C))
    assert out["target_ent"].item() == pytest.approx(0.005 * (ent ** 2 + 1e-8) ** 2, rel=1e-4)
    assert out["source_main"].item() == pytest.approx(math.log(math.exp(2) + 20) - 2.0, rel=1e-5)


def _memory_kl_by_hand(main: torch.Tensor, aux: torch.Tensor) -> float:
    m, p_main, p_aux = softmax(0.5 * aux + main), softmax(main), softmax(aux)
    return float((m * (np.log(m) - np.log(p_main))).sum() + (m * (np.log(m) - np.log(p_aux))).sum())


def test_mrnet_memory_regularisation_starts_at_its_fraction_of_the_run() -> None:
    main, aux = class_logits(1, 2.0), class_logits(3, 1.5)
    model = FixedModel(main, aux)
    method = MRNet(MRNetConfig(ndf=4), C)
    assert "target_kl" in method.segmenter_losses(model, batch(step=0)).losses  # no schedule given: on at once
    method.on_train_start(100)  # official 15k of 100k -> 15 of 100
    assert "target_kl" not in method.segmenter_losses(model, batch(step=14)).losses
    losses = method.segmenter_losses(model, batch(step=15)).losses
    assert losses["target_kl"].item() == pytest.approx(0.1 * _memory_kl_by_hand(main, aux), rel=1e-4)
    assert {"target_adv_main", "target_adv_aux"} <= set(losses)


def test_mrnet_stage2_rectified_loss_with_agreeing_heads() -> None:
    model = FixedModel(class_logits(1, 2.0), class_logits(1, 2.0))
    step = batch()
    label = torch.full((2, 32, 32), IGNORE_INDEX)
    label[:, :16] = 1  # half the pixels pseudo-labelled 1, half ignored
    step.pseudo = {"image": step.target["image"], "label": label}
    losses = MRNetStage2(MRNetStage2Config(), C).segmenter_losses(model, step).losses
    # equal heads: variance = KL = 0, so the loss is the CE averaged over ALL pixels (ignored ones count 0)
    ce = math.log(math.exp(2) + 20) - 2.0
    assert losses["pseudo_main"].item() == pytest.approx(ce / 2, rel=1e-5)
    assert losses["pseudo_aux"].item() == pytest.approx(0.5 * ce / 2, rel=1e-5)
    step.pseudo = None
    assert set(MRNetStage2(MRNetStage2Config(), C).segmenter_losses(model, step).losses) == {"source_main",
                                                                                             "source_aux"}


def test_fda_class_thresholds_by_hand() -> None:
    label = np.array([[1, 1, 1, 1, 1, 2]], np.uint8)
    conf = np.array([[0.7, 0.5, 0.99, 0.6, 0.8, 0.95]], np.float16)
    thresholds = class_thresholds([SoftPrediction("a", label, conf, 0.0)], C, 0.66, 0.9)
    # class 1: sorted (0.5, 0.6, 0.7, 0.8, 0.99)[round(0.66 * 5) = 3] = 0.8; class 2: (0.95)[0] capped to 0.9
    assert thresholds[1] == pytest.approx(0.8, abs=1e-3)
    assert thresholds[2] == pytest.approx(0.9)
    assert thresholds[0] == pytest.approx(0.9) and thresholds[5] == pytest.approx(0.9)  # never predicted: the cap


def test_teacher_averages_fused_softmaxes() -> None:
    a = FixedModel(class_logits(1, 2.0), class_logits(2, 4.0))
    b = FixedModel(class_logits(3, 1.0), class_logits(3, 0.0))
    out = Teacher([a, b], aux_weight=0.5)(torch.rand(1, 3, 16, 16))
    expected = (softmax(class_logits(1, 2.0) + 0.5 * class_logits(2, 4.0)) + softmax(class_logits(3, 1.0))) / 2
    np.testing.assert_allclose(torch.softmax(out.logits[0, :, 0, 0].double(), 0).numpy(), expected, rtol=1e-5)


def _context(tmp_path: Path, records: list[ImageRecord], load_model=None) -> PseudoContext:
    return PseudoContext(records, None, EvalSettings(torch.device("cpu"), short_side=16, batch_size=4),
                         out_dir=tmp_path / "pseudo", load_teacher=load_model)


@pytest.fixture()
def target_records(tmp_path: Path) -> list[ImageRecord]:
    records = []
    for i in range(2):
        Image.fromarray(np.full((20, 24, 3), 60 * i, np.uint8)).save(tmp_path / f"t{i}.jpg")
        records.append(ImageRecord(f"t{i}", tmp_path / f"t{i}.jpg", None))
    return records


def test_mrnet_pseudo_labels_fuse_main_and_half_aux(tmp_path: Path, target_records: list[ImageRecord]) -> None:
    # main prefers class 1 by 1.0; aux prefers class 2 by 4.0: main + 0.5 aux -> class 2 (2.0 > 1.0), no threshold
    model = FixedModel(class_logits(1, 1.0), class_logits(2, 4.0))
    pseudo = FusedArgmaxPseudoConfig().build(model, _context(tmp_path, target_records))
    assert [r.name for r in pseudo.records] == ["t0", "t1"]
    for record in pseudo.records:
        assert record.mask_path == tmp_path / "pseudo" / f"{record.name}.png"
        np.testing.assert_array_equal(read_label_png(record.mask_path), np.full((20, 24), 2, np.uint8))


def test_fda_pseudo_labels_threshold_the_mbt_average(tmp_path: Path, target_records: list[ImageRecord]) -> None:
    model = FixedModel(class_logits(1, 3.0), class_logits(1, 3.0))
    extra = FixedModel(class_logits(1, 30.0), class_logits(1, 30.0))
    loaded: list[str] = []

    def load(ref: str) -> nn.Module:
        loaded.append(ref)
        return extra

    config = ClassThresholdPseudoConfig(extra_models=["run-b"])
    pseudo = config.build(model, _context(tmp_path, target_records, load))
    assert loaded == ["run-b"] and pseudo.summary["teachers"] == 2
    # every pixel has the same confidence (p1 + 1) / 2 = 0.64: the class-1 threshold is that value, so all are kept
    p1 = math.exp(3) / (math.exp(3) + 20)
    assert pseudo.summary["thresholds"][1] == pytest.approx((p1 + 1) / 2, abs=1e-3)
    assert pseudo.summary["kept_pixels"] == 1.0
    np.testing.assert_array_equal(read_label_png(pseudo.records[0].mask_path), np.ones((20, 24), np.uint8))
