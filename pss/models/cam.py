"""The EPS classifier (Lee et al., CVPR 2021, "Railroad is not a Train"; the report ``papers/
eps_affinitynet_reproduction_zh.txt`` §3.1; official facts methods.md §9): a backbone, a 1x1
conv to C+1 class activation maps (the C object classes plus a background map) and global average pooling.

EPS (``network/resnet38_eps.py``): ``cam = fc8(feat)`` with ``fc8 = conv1x1(4096 -> C+1, bias=False)``, Xavier
init; ``pred = GAP(cam)`` are the classification logits. Channel order here is the VOC label space (channel 0 =
background, 1..20 = aeroplane..tvmonitor), where EPS puts the background last: only the order differs. The
backbone is any of ``pss.models.backbones`` (EPS: ResNet-38 at output stride 8); with ``frozen_bn`` every BatchNorm
stays in eval mode with frozen affine parameters, as EPS and psa train their ImageNet backbones.

Inference (:func:`multiscale_cam_scores`, EPS ``infer.py``): softmax over the C+1 maps, bilinear to the image size,
object maps times the image's tags, summed over scales (0.5, 1, 1.5, 2) x {identity, flip}, each class divided by
its maximum (+1e-5); :func:`cam_pseudo_mask` takes the argmax against a constant background score (0.20).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pss.models.backbones import Backbone, build_backbone
from pss.models.segmenter import ModelConfig

EPS_SCALES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # EPS infer.py, each with a horizontal flip
EPS_BG_THRESHOLD: float = 0.20  # EPS infer.py --thr: the constant background score of the pseudo masks
NORM_EPS: float = 1e-5  # per-class max normalisation guard (EPS / psa)


@dataclass
class CAMOutput:
    """Result of :meth:`CAMNet.forward` at the backbone's output stride s (h = ceil(H/s)).

    Shape:
        cams: (N, C+1, h, w) raw class activation maps (channel 0 = background).
        logits: (N, C+1) = GAP(cams); EPS classifies with the C object columns ``logits[:, 1:]``.
    """

    cams: torch.Tensor
    logits: torch.Tensor


class CAMNet(nn.Module):
    """Backbone -> conv1x1 (out_channels -> C+1, no bias, Xavier) -> CAMs; GAP -> logits. Build with
    :func:`build_cam_net`. Inputs are RGB images in [0, 1] (normalised inside, as ``Segmenter``)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: Backbone, num_classes: int, frozen_bn: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.output_stride = backbone.output_stride
        self.frozen_bn = frozen_bn
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        if frozen_bn:
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    for p in module.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True) -> CAMNet:
        super().train(mode)
        if self.frozen_bn:  # EPS/psa ``Net.train``: the backbone's BatchNorm statistics are never updated
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> CAMOutput:
        """Shape: x (N, 3, H, W) in [0, 1] -> cams (N, C+1, ceil(H/s), ceil(W/s)), logits (N, C+1)."""
        _, out = self.backbone((x - self.mean) / self.std)
        cams = self.classifier(out)
        return CAMOutput(cams, cams.mean(dim=(2, 3)))


def build_cam_net(cfg: ModelConfig, frozen_bn: bool = False) -> CAMNet:
    """A CAM classifier on ``cfg.backbone`` with ``cfg.num_classes`` (= C+1, background included) maps."""
    return CAMNet(build_backbone(cfg.backbone, cfg.pretrained, cfg.weights_path, cfg.output_stride),
                  cfg.num_classes, frozen_bn)


@torch.no_grad()
def multiscale_cam_scores(model: CAMNet, image: torch.Tensor, tags: torch.Tensor,
                          scales: Sequence[float] = EPS_SCALES, flip: bool = True) -> torch.Tensor:
    """EPS's pseudo-mask scores of one image: per object class, the sum over scales x flips of
    ``softmax(cams)_c`` (bilinear, ``align_corners=False``, to the image size) times the class's tag, divided by its
    maximum over the image (+1e-5). Untagged classes are 0 everywhere.

    Args:
        image: (3, H, W) RGB in [0, 1], on the model's device.
        tags: (C,) multi-hot object-class tags (the 20-dim vector of ``pss.data.tags``).

    Shape:
        returns (C, H, W) float32 in [0, 1] (C = 20 object classes, no background channel).
    """
    model.eval()
    height, width = int(image.shape[1]), int(image.shape[2])
    total = torch.zeros(model.num_classes - 1, height, width, device=image.device)
    batch = image.unsqueeze(0).float()
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = batch if size == (height, width) else F.interpolate(batch, size=size, mode="bilinear",
                                                                      align_corners=False)
        views = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        prob = torch.softmax(model(views).cams.float(), dim=1)
        if flip:
            prob = torch.cat([prob[:1], prob[1:].flip(-1)])
        prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)
        total += prob[:, 1:].sum(dim=0)
    total *= tags.to(total).view(-1, 1, 1)
    return total / (total.amax(dim=(1, 2), keepdim=True) + NORM_EPS)


def cam_pseudo_mask(scores: torch.Tensor, bg_threshold: float = EPS_BG_THRESHOLD) -> torch.Tensor:
    """EPS pseudo mask: argmax over [constant background score, class scores] (0 = background, c = class c).

    Shape:
        scores: (C, H, W) normalised class scores (:func:`multiscale_cam_scores`) -> (H, W) uint8 label map.
    """
    background = torch.full_like(scores[:1], bg_threshold)
    return torch.cat([background, scores]).argmax(dim=0).to(torch.uint8)
