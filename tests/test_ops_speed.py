"""The CPU speed path: the depthwise convolution's own backward and the fast-path decision (issue "training speed")."""
from __future__ import annotations

import math
import pytest
import torch
import torch.nn.functional as F

from pss.engine import device as device_mod
from pss.engine.device import fast_path
from pss.models.efficientnet_lite import EfficientNetLite0
from pss.ops.depthwise import depthwise_conv2d
from pss.ops.kernels import stock_kernels


def test_depthwise_backward_by_hand() -> None:
    """One channel, a 3x3 input, a 2x2 kernel: y = x ⋆ w (valid correlation), L = sum(y · g).

    dL/dw[i, j] = sum_{y,x} g[y,x] · x[y+i, x+j] and dL/dx = the full convolution of g with w, written out here.
    """
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3).requires_grad_()
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).requires_grad_()
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 1, 2, 2)
    y = depthwise_conv2d(x, w)
    # y[0,0] = 1+4+12+20 = 37, y[0,1] = 2+6+15+24 = 47, y[1,0] = 4+10+21+32 = 67, y[1,1] = 5+12+24+36 = 77
    assert y.detach().view(-1).tolist() == [37.0, 47.0, 67.0, 77.0]
    (y * g).sum().backward()
    # dL/dw[i,j] = g[0,0]·x[i,j] + g[1,1]·x[i+1,j+1] = x[i,j] + 2·x[i+1,j+1]
    assert w.grad.view(-1).tolist() == [1 + 2 * 5, 2 + 2 * 6, 4 + 2 * 8, 5 + 2 * 9]
    # dL/dx[a,b] = sum over output positions (p,q) with a-p, b-q in {0,1} of g[p,q] · w[a-p, b-q]
    expected = torch.zeros(3, 3)
    for p in range(2):
        for q in range(2):
            expected[p:p + 2, q:q + 2] += g[0, 0, p, q] * w.detach()[0, 0]
    assert torch.equal(x.grad[0, 0], expected)


@pytest.mark.parametrize("stride,dilation,kernel,side,padding", [
    (1, 1, 3, 10, 0), (1, 2, 5, 16, 0), (1, 2, 3, 12, 0), (2, 1, 5, 35, 0), (2, 1, 3, 17, 0),
    (1, 1, 3, 10, 1), (1, 2, 5, 8, 4), (1, 2, 5, 9, 2), (1, 2, 3, 12, 2), (2, 1, 3, 17, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_matches_pytorch(stride: int, dilation: int, kernel: int, side: int, padding: int,
                                   channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 6, side, side)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 1, kernel, kernel)
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ys = depthwise_conv2d(xs, ws, stride, dilation, padding)
    yr = F.conv2d(xr, wr, None, stride, padding, dilation, 6)
    torch.testing.assert_close(ys, yr)
    g = torch.randn_like(yr)
    (ys * g).sum().backward()
    (yr * g).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ws.grad, wr.grad, rtol=1e-4, atol=1e-4)


def test_depthwise_refuses_padding_beyond_the_kernel_reach() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        depthwise_conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 1, 3, 3), 1, 2, 5)


def test_depthwise_only_weight_grad_and_fp32_under_autocast() -> None:
    x = torch.randn(2, 4, 9, 9)
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_conv2d(x, w, 1, 2)
        dense = F.conv2d(torch.randn(2, 4, 9, 9), torch.randn(4, 4, 3, 3))
    assert y.dtype == torch.float32 and dense.dtype == torch.bfloat16  # depthwise kept fp32, the rest bf16
    y.sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape


def test_encoder_gradients_equal_with_and_without_the_fast_backward() -> None:
    """The dilated Lite0 encoder (output stride 16, as the demo) gives the same gradients both ways."""
    torch.manual_seed(0)
    model = EfficientNetLite0(dilate_from_stage=5)
    x = torch.randn(2, 3, 64, 64)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model.forward_stages(x)[-1].pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast = grads()
    with stock_kernels():
        stock = grads()
    assert fast.keys() == stock.keys()
    for name in stock:
        if name.endswith("_bn2.bias"):  # mathematically 0 (a BN follows through a linear map): rounding noise only
            continue
        torch.testing.assert_close(fast[name], stock[name], rtol=1e-3, atol=1e-5, msg=name)


def test_fast_path_auto(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    assert fast_path(cpu, "auto", "auto") == device_mod.FastPath(torch.bfloat16, True)
    assert fast_path(cpu, "off", "off") == device_mod.FastPath(None, False)
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    device_mod._log_cpu_fallback.cache_clear()
    with caplog.at_level("INFO", logger="pss.engine.device"):
        assert fast_path(cpu, "auto", "auto") == device_mod.FastPath(None, True)
    assert "no native bf16" in caplog.text
    with caplog.at_level("INFO", logger="pss.engine.device"):
        assert fast_path(cpu, "bf16", "off").autocast_dtype == torch.bfloat16  # asked for explicitly: honoured
    assert "slower than fp32" in caplog.text


def test_native_bf16_probe_falls_back_to_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    real_path = device_mod.Path
    monkeypatch.setattr(device_mod, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu avx2 sse", False)):
        cpuinfo.write_text(f"flags\t\t: {flags}\n")
        device_mod.cpu_has_native_bf16.cache_clear()
        assert device_mod.cpu_has_native_bf16() is expected
    device_mod.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("shape,size", [((2, 21, 8, 8), (128, 128)), ((1, 3, 7, 9), (50, 61)), ((2, 4, 20, 30), (10, 15)),
                                        ((1, 2, 1, 5), (4, 9))])
def test_bilinear_resize_equals_interpolate(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    from pss.ops.resize import bilinear_resize

    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    y = bilinear_resize(x, size)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    (grad,) = torch.autograd.grad((y * g).sum(), x)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), x)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)


def test_bilinear_resize_by_hand() -> None:
    """1x2 -> 1x4: source coordinates (o + 0.5)/2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (neighbour capped)."""
    from pss.ops.resize import bilinear_resize

    x = torch.tensor([[[[0.0, 4.0]]]])
    assert bilinear_resize(x, (1, 4)).view(-1).tolist() == [0.0, 1.0, 3.0, 4.0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bilinear_resize(x.bfloat16(), (1, 4)).dtype == torch.float32


def test_entropy_map_from_logits_matches_advent_formula() -> None:
    from pss.losses import entropy_map, entropy_map_from_logits

    torch.manual_seed(0)
    logits = (4 * torch.randn(2, 5, 6, 7)).requires_grad_()
    logits.data[0, 0, 0, 0] = 200.0  # the other classes' softmax underflows to 0 there: no NaN, zero gradient
    fast = entropy_map_from_logits(logits)
    ref = entropy_map(torch.softmax(logits, dim=1))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    (grad,) = torch.autograd.grad((fast * g).sum(), logits)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), logits)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-5)
    # by hand: two classes with p = (0.5, 0.5): I = 0.5·ln 2 / ln 2 = 0.5 each
    assert entropy_map_from_logits(torch.zeros(1, 2, 1, 1)).view(-1).tolist() == pytest.approx([0.5, 0.5])
    with stock_kernels():
        torch.testing.assert_close(entropy_map_from_logits(logits), ref)


@pytest.mark.parametrize("ignored", [0.0, 0.3, 1.0])
def test_seg_ce_fused_matches_pytorch_cross_entropy(ignored: float) -> None:
    """The fused CPU cross-entropy: the same loss and logit gradient as F.cross_entropy, ignored pixels included."""
    from pss.losses import seg_ce
    from pss.ops.kernels import stock_kernels

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7) * 4
    target = torch.randint(0, 5, (2, 6, 7))
    target[torch.rand(2, 6, 7) < ignored] = 255
    fast, stock = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss_fast = seg_ce(fast, target)
    with stock_kernels():
        loss_stock = seg_ce(stock, target)
    (3 * loss_fast).backward()
    (3 * loss_stock).backward()
    torch.testing.assert_close(loss_fast, loss_stock)
    torch.testing.assert_close(fast.grad, stock.grad)
    assert (fast.grad.abs().sum(1)[target == 255] == 0).all()  # ignored pixels get no gradient


def test_seg_ce_by_hand() -> None:
    """One pixel, two classes, logits (0, ln 3): loss = ln(1 + 3) - 0 for class 0, gradient (p0 - 1, p1) = (-3/4, 3/4)."""
    from pss.losses import seg_ce

    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).requires_grad_()
    loss = seg_ce(logits, torch.zeros(1, 1, 1, dtype=torch.long))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4.0))
    torch.testing.assert_close(logits.grad.view(2), torch.tensor([-0.75, 0.75]))
