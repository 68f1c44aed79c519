"""Fully convolutional domain discriminator of ADVENT / AdaptSegNet (methods.md §2.2; PSS uses it unchanged).

Five 4x4 stride-2 convolutions (padding 1): C -> ndf -> 2ndf -> 4ndf -> 8ndf -> 1, LeakyReLU(0.2) between them, no
normalisation and no sigmoid (the loss is ``BCEWithLogitsLoss``). Each conv maps a side s to floor((s + 2 - 4) / 2) + 1
= floor(s / 2), so the output side is floor(s / 32): 320 -> 10. Inputs need sides >= 32.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

from pss.errors import ModelError

MIN_INPUT_SIDE = 32


class FCDiscriminator(nn.Module):
    """ADVENT FC discriminator; ``ndf`` = 64 in the official code (smaller values suit CPU runs)."""

    def __init__(self, in_channels: int, ndf: int = 64) -> None:
        super().__init__()
        widths = [in_channels, ndf, 2 * ndf, 4 * ndf, 8 * ndf]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=2, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Domain logits (source = 0, target = 1 in ADVENT's labelling).

        Shape: x (N, in_channels, H, W), H, W >= 32 -> (N, 1, floor(H/32), floor(W/32)).
        """
        if min(x.shape[-2:]) < MIN_INPUT_SIDE:
            raise ModelError(f"discriminator input {tuple(x.shape[-2:])} is smaller than {MIN_INPUT_SIDE} pixels per "
                             "side: feed it the predictions upsampled to the crop size (e.g. 320x320).")
        if cast(nn.Conv2d, self.layers[0]).weight.is_contiguous(memory_format=torch.channels_last):
            # the trainer's channels_last: the maps arrive NCHW from the loss's upsampling; oneDNN's NHWC kernels
            # are faster only with the input in the weights' format (CPU bf16: D step 92 -> 75 ms on the demo)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x)


def build_discriminator(in_channels: int, ndf: int = 64) -> FCDiscriminator:
    """Build the FC discriminator (input: C-channel softmax or entropy maps); validates the sizes."""
    if in_channels < 1 or ndf < 1:
        raise ModelError(f"discriminator needs in_channels >= 1 and ndf >= 1, got in_channels={in_channels}, "
                         f"ndf={ndf}; ndf=64 is the official width.")
    return FCDiscriminator(in_channels, ndf)
