"""Depthwise convolution with a backward pass that is fast on CPU, kept in fp32 under CPU bf16 autocast.

oneDNN's (PyTorch's CPU) depthwise convolution backward is slow on the small maps of a dilated segmentation encoder:
measured on this project's 2-core machine (1 thread, batch 8, 1152 channels, 5x5 kernel, dilation 2, an 8x8 output;
EfficientNet-Lite0's last stage at output stride 16) the forward takes 1.5 ms but the input gradient 26 ms and the
weight gradient 14 ms. Both gradients are themselves depthwise convolutions, and PyTorch's *forward* kernels compute
them quickly (``bench/train_step.py``, ``tests/test_ops.py``):

* input gradient = the forward convolution of the zero-padded output gradient with the flipped kernel (the adjoint
  of a stride-1 correlation): ``dx = conv(g, flip(w), padding=(k-1)d, dilation=d)``; ~6 ms on the shape above;
* weight gradient: ``dw[c, i, j] = sum_{n,y,x} g[n,c,y,x] · x[n,c,y+i·d,x+j·d]`` is a correlation of each image's
  input plane with its output-gradient plane taken at stride ``d``: one grouped convolution over the ``N·C`` planes,
  summed over the batch; 3-7 ms.

The values are those of ``F.conv2d``'s own backward up to floating-point summation order. The forward is plain
``F.conv2d``; strided convolutions keep PyTorch's own backward (fast enough in fp32: the early stages' stride-2
convolutions take 0.1-2 ms). Under CPU bf16 autocast the convolution runs in fp32: oneDNN's bf16 depthwise kernels
are slower than its fp32 ones on CPU (the 35x35 stride-2 layer's backward: 10 ms in bf16 against 0.4 ms). On CUDA
cuDNN's kernels are used unchanged (the function is only chosen for CPU tensors).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pss.ops.kernels import fast_kernels


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int,
                padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.dilation, ctx.padding = stride, dilation, padding
        return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        s, d, p, channels = ctx.stride, ctx.dilation, ctx.padding, weight.shape[0]
        if s != 1:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [s, s], [p, p], [d, d], False, [0, 0], channels,
                [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
            return grad_x, grad_w, None, None, None
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # the convolution's own zero padding: a padded copy of the gradient would be a fresh allocation each
            # step (page faults dominated its cost in the step profile). Only the unpadded input's gradient is
            # computed: with the padding inside the convolution, the kernel does not produce the border that a
            # separate F.pad's backward would crop away (3/4 of the map on the 8x8 last stage)
            padding = ((weight.shape[-2] - 1) * d - p, (weight.shape[-1] - 1) * d - p)
            grad_x = F.conv2d(grad, weight.flip(-2, -1), None, 1, padding, d, channels)
        if ctx.needs_input_grad[1]:
            n, c, h, w = x.shape
            planes = x.contiguous().reshape(1, n * c, h, w)
            kernels = grad.contiguous().reshape(n * c, 1, *grad.shape[-2:])
            per_image = F.conv2d(planes, kernels, None, d, p, 1, n * c)  # (1, N*C, kh, kw)
            grad_w = per_image.view(n, c, *per_image.shape[-2:]).sum(0).unsqueeze(1).to(weight.dtype)
        return grad_x, grad_w, None, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, dilation: int = 1,
                     padding: int = 0) -> torch.Tensor:
    """Depthwise convolution (one filter per channel), symmetric zero ``padding`` (at most ``(k-1)·d``), no bias; on
    CPU with the faster backward above.

    Shape:
        x: (N, C, H, W); weight: (C, 1, kh, kw) -> (N, C, floor((H + 2p - (kh-1)·d - 1) / s) + 1, same for W).
    """
    if padding > (min(weight.shape[-2:]) - 1) * dilation:  # the input gradient's padding (k-1)·d - p must be >= 0
        raise ValueError(f"depthwise padding {padding} exceeds "
                         f"(k-1)·dilation = {(min(weight.shape[-2:]) - 1) * dilation}")
    if x.device.type != "cpu" or not fast_kernels():
        return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])
    return _DepthwiseConv.apply(x, weight, stride, dilation, padding)
