"""Loss functions against values computed by hand on 1x2 / 1x4 maps."""
from __future__ import annotations

import math

import pytest
import torch

from pss.losses import (bce_domain, entropy_loss, entropy_map, iw_max_square_loss, max_square_loss, memory_kl,
                        pixel_entropy, rectified_ce, robust_entropy, select_easy_images, seg_ce)

LN2, LN3 = math.log(2.0), math.log(3.0)


def probs(*pixels: tuple[float, ...]) -> torch.Tensor:
    """(1, C, 1, W) probability map from per-pixel C-tuples."""
    return torch.tensor(pixels, dtype=torch.float64).T.reshape(1, len(pixels[0]), 1, len(pixels))


def logits(*pixels: tuple[float, ...]) -> torch.Tensor:
    return probs(*pixels)


def test_entropy_map_and_pixel_entropy():
    p = probs((0.5, 0.5), (1.0, 0.0), (0.25, 0.75))
    ent = entropy_map(p)
    assert ent.shape == (1, 2, 1, 3)
    # C = 2 -> log2 C = 1: -0.5*log2(0.5) = 0.5 per channel; a one-hot pixel gives exactly 0 (no NaN)
    torch.testing.assert_close(ent[0, :, 0, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(ent[0, :, 0, 1], torch.tensor([0.0, 0.0], dtype=torch.float64))
    h3 = 0.25 * 2 + 0.75 * -math.log2(0.75)   # 0.811278...
    torch.testing.assert_close(pixel_entropy(p)[0, 0], torch.tensor([1.0, 0.0, h3], dtype=torch.float64))
    # C = 4 uniform: each channel -0.25*log2(0.25)/log2(4) = 0.25, sum 1
    uniform = torch.full((1, 4, 1, 1), 0.25)
    torch.testing.assert_close(entropy_map(uniform).flatten(), torch.full((4,), 0.25))
    assert entropy_loss(p).item() == pytest.approx((1.0 + 0.0 + h3) / 3)
    with pytest.raises(ValueError, match="N, C, H, W"):
        entropy_map(torch.ones(2, 3, 4))


def test_seg_ce_mean_over_valid_pixels():
    x = logits((0.0, 0.0), (LN3, 0.0), (5.0, -5.0)).requires_grad_(True)
    target = torch.tensor([[[0, 0, 255]]])
    # pixel 1: -log(1/2) = ln 2; pixel 2: -log(3/4); pixel 3 ignored
    expected = (LN2 + math.log(4 / 3)) / 2
    assert seg_ce(x, target).item() == pytest.approx(expected)
    all_ignored = torch.full((1, 1, 3), 255)
    loss = seg_ce(x, all_ignored)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(x.grad == 0)


def test_bce_domain():
    d = torch.tensor([[[[2.0, 0.0]]]])
    # label 1: mean(log(1+e^-2), ln 2); label 0: mean(log(1+e^2), ln 2)
    assert bce_domain(d, 1).item() == pytest.approx((math.log1p(math.exp(-2)) + LN2) / 2)
    assert bce_domain(d, 0).item() == pytest.approx((math.log1p(math.exp(2)) + LN2) / 2)
    with pytest.raises(ValueError, match="domain_label"):
        bce_domain(d, 2)


def test_max_square_loss():
    p = probs((0.5, 0.5), (1.0, 0.0))
    # squares 0.25, 0.25, 1, 0 -> mean 0.375 -> -0.1875
    assert max_square_loss(p).item() == pytest.approx(-0.1875)


def test_iw_max_square_loss_hand_value():
    p = probs((0.8, 0.2), (0.8, 0.2), (0.8, 0.2), (0.3, 0.7))
    # n = 4 pixels, argmax counts n_0 = 3, n_1 = 1; ratio 0.5: w_0 = 1/(sqrt(3)*sqrt(4)), w_1 = 1/(1*2)
    w0, w1 = 1 / (math.sqrt(3) * 2), 0.5
    numerator = 3 * (0.64 + 0.04) * w0 + (0.09 + 0.49) * w1
    assert iw_max_square_loss(p, ratio=0.5).item() == pytest.approx(-numerator / (1 * 2))
    # batch denominator N*C: a batch of two images is the mean of the single-image losses
    q = probs((0.1, 0.9), (0.6, 0.4), (0.2, 0.8), (0.3, 0.7))
    batch = iw_max_square_loss(torch.cat([p, q]), ratio=0.5)
    single = (iw_max_square_loss(p, ratio=0.5) + iw_max_square_loss(q, ratio=0.5)) / 2
    assert batch.item() == pytest.approx(single.item())


def test_iw_max_square_weights_are_detached():
    x = logits((1.0, 0.0), (0.0, 2.0)).requires_grad_(True)
    iw_max_square_loss(torch.softmax(x, dim=1)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_robust_entropy():
    # p = (1/4, 3/4): entropy in nats / ln 2 = the base-2 entropy 0.811278...
    ent = 0.25 * 2 + 0.75 * -math.log2(0.75)
    x = logits((0.0, LN3))
    assert robust_entropy(x).item() == pytest.approx((ent ** 2 + 1e-8) ** 2)
    assert robust_entropy(x, eta=1.0).item() == pytest.approx(ent ** 2 + 1e-8)
    # uniform over C = 5 classes: normalised by ln C, so ent = 1
    assert robust_entropy(torch.zeros(1, 5, 2, 2)).item() == pytest.approx((1 + 1e-8) ** 2)


def test_rectified_ce_hand_value():
    a = logits((0.0, 0.0), (0.0, 0.0))
    b = logits((0.0, 0.0), (LN3, 0.0))
    target = torch.tensor([[[0, 255]]])
    # pixel 1: var 0, CE ln 2; pixel 2: ignored (CE 0), var = KL((.75,.25) || (.5,.5))
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert rectified_ce(a, b, target).item() == pytest.approx(LN2 / 2 + kl / 2)
    weight = torch.tensor([2.0, 1.0], dtype=torch.float64)
    assert rectified_ce(a, b, target, class_weight=weight).item() == pytest.approx(2 * LN2 / 2 + kl / 2)
    # the CE term is damped by exp(-var): swap roles so that the labelled pixel has variance kl
    target2 = torch.tensor([[[255, 0]]])
    assert rectified_ce(a, b, target2).item() == pytest.approx(LN2 * math.exp(-kl) / 2 + kl / 2)


def test_memory_kl_hand_value_and_detached_memory():
    main = logits((LN3, 0.0)).requires_grad_(True)
    aux = logits((0.0, 0.0)).requires_grad_(True)
    # m = softmax(0.5*aux + main) = (3/4, 1/4): KL(m || main) = 0, KL(m || aux) = KL((.75,.25) || (.5,.5))
    loss = memory_kl(main, aux)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    loss.backward()
    # m is detached and equals softmax(main) here, so main receives no gradient; aux does
    torch.testing.assert_close(main.grad, torch.zeros_like(main))
    assert aux.grad.abs().sum() > 0
    assert memory_kl(torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)).item() == pytest.approx(0.0)


def test_select_easy_images():
    scores = [0.3, 0.1, 0.2, 0.1]
    assert select_easy_images(scores, 0.5) == [1, 3]            # tie 0.1/0.1 broken by index
    assert select_easy_images(scores, 0.1) == [1]               # at least one image
    assert select_easy_images(scores, 1.0) == [1, 3, 2, 0]
    assert select_easy_images(torch.tensor([0.5, float("nan"), 0.4]), 1.0) == [2, 0, 1]
    assert len(select_easy_images(list(range(100)), 0.29)) == 29
    assert select_easy_images([], 0.5) == []
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="rate"):
            select_easy_images(scores, bad)
