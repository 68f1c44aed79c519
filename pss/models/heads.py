"""Decoder pieces of the PSS network (methods.md §1.1): PSP pyramid pooling, the aux head, the 1x1 classifier.

Shapes stay at the backbone's output stride (8); upsampling to the image size is the caller's job
(:func:`pss.models.segmenter.upsample`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1) -> nn.Sequential:
    """Bias-free conv + BN + ReLU (the HRNet/PSS ``BNReLU`` pattern; the BN makes a conv bias redundant)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class PSPModule(nn.Module):
    """Pyramid pooling (PSPNet), as the official ``_PSPModule``.

    Each bin b: AdaptiveAvgPool(b) -> conv1x1(in -> in/len(bins), no bias) -> BN -> ReLU -> bilinear upsample
    (align_corners=False); the input and the upsampled bins are concatenated and fused by conv3x3 -> ``out_channels``
    (no bias) -> BN -> ReLU. With ResNet-50: 2048 + 4*512 -> 512.

    Note: in training mode the bin-1 branch has one value per channel and image, so BN needs a batch of >= 2.
    """

    def __init__(self, in_channels: int, out_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        bin_channels = max(in_channels // len(bins), 1)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *conv_bn_relu(in_channels, bin_channels)) for b in bins)
        self.bottleneck = conv_bn_relu(in_channels + len(bins) * bin_channels, out_channels, kernel=3)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: x (N, in_channels, h, w) -> (N, out_channels, h, w)."""
        size = x.shape[-2:]
        pyramid = [x] + [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
                         for stage in self.stages]
        return self.bottleneck(torch.cat(pyramid, dim=1))


class AuxHead(nn.Module):
    """Aux classifier on the ``mid`` features: conv1x1(no bias) -> BN -> ReLU -> conv1x1 -> classes (with bias).

    Its logits are supervised (weight 0.4 in PSS) and define the soft object regions of the context module (eq. 4).
    ``hidden_channels`` defaults to ``in_channels`` (1024 -> 1024 in the official ResNet-50 model).
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int | None = None) -> None:
        super().__init__()
        hidden = hidden_channels or in_channels
        self.block = conv_bn_relu(in_channels, hidden)
        self.classifier = nn.Conv2d(hidden, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: x (N, in_channels, h, w) -> logits (N, num_classes, h, w)."""
        return self.classifier(self.block(x))


def make_classifier(in_channels: int, num_classes: int) -> nn.Conv2d:
    """The main classifier: conv1x1 -> classes without bias, as the official ``MainDecoder``."""
    return nn.Conv2d(in_channels, num_classes, 1, bias=False)
