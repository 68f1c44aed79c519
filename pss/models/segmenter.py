"""The PSS segmentation network (official ``PSPGroupOCROnBase``, methods.md §1.1): backbone -> aux head on ``mid``,
PSP on ``out`` -> context module (none / global / group, driven by the aux logits) -> 1x1 classifier.

Inputs are RGB images in [0, 1]; the model normalises them with its backbone's mean/std (buffers, so they follow
``.to(device)``), which lets image-space methods (FDA) work on raw images. Outputs stay at the backbone's output
stride (8, or 16 for the CPU demo); use :func:`upsample` for the image size.

Example::

    model = build_segmenter(ModelConfig(backbone="tiny", context=ContextConfig(key_channels=16)))
    out = model(torch.rand(2, 3, 64, 64))            # SegOutput
    out.logits.shape                                 # (2, 21, 8, 8)
    upsample(out.logits, (64, 64)).argmax(1)          # (2, 64, 64) label map
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch import nn

from pss.errors import ConfigError, ModelError
from pss.models.backbones import BACKBONES, Backbone, build_backbone
from pss.models.context import CONTEXT_MODES, ContextConfig, ContextModule, GroupAttention
from pss.models.heads import AuxHead, PSPModule, make_classifier
from pss.ops.resize import bilinear_resize


@dataclass
class ModelConfig:
    """Segmenter settings. ``psp_channels=None`` takes the backbone's default (resnet50 512, lite0 256, tiny 32)."""

    backbone: str = "lite0"
    pretrained: bool = True
    weights_path: str | None = None
    psp_channels: int | None = None
    output_stride: int = 8
    num_classes: int = 21
    context: ContextConfig = field(default_factory=ContextConfig)


@dataclass
class SegOutput:
    """Result of :meth:`Segmenter.forward`, all at the output stride s (8 or 16; h = ceil(H/s)).

    Shape:
        logits: (N, C, h, w) main prediction.
        aux_logits: (N, C, h, w) aux head prediction (supervised with weight 0.4 in PSS; defines the soft regions).
        features: (N, ch, h, w) context-enhanced features that feed the classifier (ch = psp_channels).
        attention: group attention (float32, detached) when asked for in ``group`` mode, else None.
    Under autocast the three tensors are in the autocast dtype.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor
    features: torch.Tensor
    attention: GroupAttention | None = None


class Segmenter(nn.Module):
    """Backbone + aux head + PSP + context + classifier. Build it with :func:`build_segmenter`."""

    mean: torch.Tensor  # (1, 3, 1, 1) buffers registered in __init__
    std: torch.Tensor

    def __init__(self, backbone: Backbone, num_classes: int, psp_channels: int, context: ContextConfig) -> None:
        super().__init__()
        self.output_stride = backbone.output_stride
        self.num_classes = num_classes
        self.context_mode = context.mode
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.backbone = backbone
        self.aux_head = AuxHead(backbone.mid_channels, num_classes)
        self.psp = PSPModule(backbone.out_channels, psp_channels)
        self.context = ContextModule(psp_channels, num_classes, context)
        self.classifier = make_classifier(psp_channels, num_classes)

    def forward(self, x: torch.Tensor, group_ids: torch.Tensor | None = None,
                return_attention: bool = False) -> SegOutput:
        """Segment a batch.

        Args:
            x: RGB images in [0, 1].
            group_ids: group id per image; None = the whole batch is one group (training batches are one group).
                Only the ``global`` and ``group`` contexts use it.
            return_attention: also return the group attention (``group`` mode only; None otherwise).

        Shape:
            x: (N, 3, H, W) float, group_ids: (N,) integer -> SegOutput tensors (N, *, ceil(H/s), ceil(W/s)),
            s = output stride.
        """
        if self.training and x.shape[0] < 2:
            # BN in the PSP bin-1 branch sees one value per channel and image: PyTorch refuses a batch of one.
            raise ModelError("a training-mode forward needs a batch of at least 2 images (BatchNorm statistics); "
                             "call model.eval() to predict single images.")
        x = (x - self.mean) / self.std
        mid, out = self.backbone(x)
        aux_logits = self.aux_head(mid)
        ctx = self.context(self.psp(out), aux_logits, group_ids, return_attention)
        return SegOutput(self.classifier(ctx.features), aux_logits, ctx.features, ctx.attention)


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of stride-8 maps to ``size`` = (H, W), in float32.

    ``align_corners=False`` (pixel-centre geometry, torchvision's convention, consistent with the PSP upsampling)
    where the official PSS/ADVENT code uses ``align_corners=True``; the difference is a sub-pixel shift. Computed as
    two small matrix products (:func:`pss.ops.resize.bilinear_resize`: the values of ``F.interpolate``, with a
    forward and backward several times faster on CPU).

    Shape: (N, C, h, w) -> (N, C, H, W) float32.
    """
    return bilinear_resize(logits, size)


def param_groups(model: Segmenter, lr: float, head_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: backbone at ``lr``, everything else (heads, PSP, context) at ``lr * head_lr_mult``.

    The released PSS code uses one group (``head_lr_mult=1``); ADVENT/DeepLab use 10x for the head. Frozen parameters
    (``requires_grad=False``) are left out. Each group carries a ``name`` ('backbone' / 'head').
    """
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    return [{"params": backbone, "lr": lr, "name": "backbone"},
            {"params": head, "lr": lr * head_lr_mult, "name": "head"}]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError (naming the key and the options) for an invalid model config."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone {cfg.backbone!r} is unknown: choose one of {sorted(BACKBONES)}.")
    if not isinstance(cfg.pretrained, bool):
        raise ConfigError(f"model.pretrained must be true or false, got {cfg.pretrained!r}.")
    if cfg.weights_path is not None and not isinstance(cfg.weights_path, (str, os.PathLike)):
        raise ConfigError(f"model.weights_path must be a path string or null, got {cfg.weights_path!r}.")
    _check_int("model.num_classes", cfg.num_classes, 2)
    if cfg.psp_channels is not None:
        _check_int("model.psp_channels", cfg.psp_channels, 1)
    ctx = cfg.context
    if not isinstance(ctx, ContextConfig):
        raise ConfigError(f"model.context must be a ContextConfig, got {type(ctx).__name__}.")
    if ctx.mode not in CONTEXT_MODES:
        raise ConfigError(f"model.context.mode {ctx.mode!r} is unknown: choose one of {list(CONTEXT_MODES)}.")
    _check_int("model.context.key_channels", ctx.key_channels, 1)
    if isinstance(ctx.group_temperature, bool) or not isinstance(ctx.group_temperature, Real) \
            or not ctx.group_temperature > 0:
        raise ConfigError(f"model.context.group_temperature must be a number > 0 (released code: 8), "
                          f"got {ctx.group_temperature!r}.")
    if isinstance(ctx.dropout, bool) or not isinstance(ctx.dropout, Real) or not 0 <= ctx.dropout < 1:
        raise ConfigError(f"model.context.dropout must be in [0, 1) (official 0.05), got {ctx.dropout!r}.")


def build_segmenter(cfg: ModelConfig) -> Segmenter:
    """Validate ``cfg`` and build the segmenter (loads backbone weights; never downloads).

    Raises:
        ConfigError: invalid config values (the message names the key and the options).
        ModelError: pretrained weights missing or unreadable (the message says where to put them).
    """
    validate_model_config(cfg)
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.weights_path, cfg.output_stride)
    psp_channels = cfg.psp_channels or backbone.default_psp_channels
    return Segmenter(backbone, cfg.num_classes, psp_channels, cfg.context)
