"""One switch between the project's own CPU kernels and PyTorch's stock ones (the baseline of ``bench/train_step.py``).

The fast versions compute the same values as the stock operations up to floating-point rounding (each is tested
against them): the depthwise convolution with its padding inside and a border-free backward (``pss.ops.depthwise``,
used by ``pss.models.efficientnet_lite.SameConv2d``), bilinear resizing as matrix products (``pss.ops.resize``), the
fused entropy map (``pss.losses.entropy_map_from_logits``), the fused pixel cross-entropy (``pss.losses.seg_ce``) and
one discriminator pass over the source and target batches together (``pss.methods.adversarial``). This switch
exists so that a benchmark can time the step exactly as it ran before them, in the same process.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

_fast = True


def fast_kernels() -> bool:
    """Whether the project's fast kernels are in use (True unless inside :func:`stock_kernels`)."""
    return _fast


@contextlib.contextmanager
def stock_kernels() -> Iterator[None]:
    """Use PyTorch's stock operations inside this block."""
    global _fast
    previous, _fast = _fast, False
    try:
        yield
    finally:
        _fast = previous
