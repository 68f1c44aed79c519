"""Context modules applied to the PSP features (paper §4.2, Table 3): ``none``, ``global`` and ``group`` (PSS).

``group`` is the PSS group region context as the released code computes it (methods.md §1.2, HRNet-OCR plus a group
branch). Mapping to the paper's equations (Shape: X (N, ch, h, w), aux logits P (N, C, h, w), K = key_channels):

- eq. 4, soft regions ``f_c = sum_i r_ci X_i``: the code, and this module, take
  ``r = softmax(P.view(N, C, hw), dim=2)``, a softmax over the *spatial positions* of each class map (every region is
  a weighted mean of its image's pixels), not over the C classes of each pixel as the paper's text says.
  Each image gives C regions; a group of N images N*C.
- eq. 6, weights ``w = softmax_(i,j)(phi(X)^T varphi(f))``: phi = ``pixel_query`` (two 1x1 conv+BN+ReLU, HRNet's
  f_pixel), varphi = ``region_value`` (1x1 conv+BN+ReLU, HRNet's f_down; the code does not use f_object here), logits
  scaled by ``K^-0.5 * group_temperature`` (8 in the released code), softmax over all regions of the pixel's group.
- eq. 5, ``c = rho(sum w sigma(f))``: sigma = ``region_value`` (the same projection as varphi), rho = identity (HRNet's
  f_up is not applied in the group mode of the released code).
- eq. 7, ``X_hat = psi([X, c])``: psi = ``fuse`` = conv1x1(2K + ch -> ch, no bias) + BN + ReLU + Dropout2d(0.05),
  and its input additionally holds the per-image OCR context (query ``pixel_query``, key ``region_key`` = f_object,
  value ``region_value``, softmax over the C regions of the same image): ``fuse(cat[c_image, c_group, X])``.

Groups: ``group_ids`` (N,) says which images of the batch form a group; ``None`` = the whole batch is one group
(training batches are drawn from one k-means group). A pixel attends only to regions of images with its own id (the
other logits are set to -inf before the softmax), so a mixed inference batch gives each group's result exactly.
The softmax / attention math runs in float32 even under autocast (bf16 logits over 168 regions lose too much).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pss.errors import ModelError
from pss.models.heads import conv_bn_relu

CONTEXT_MODES: tuple[str, ...] = ("none", "global", "group")


@dataclass
class ContextConfig:
    """Context module settings (paper Table 3 rows: None / Global / OURS = group)."""

    mode: Literal["none", "global", "group"] = "group"
    key_channels: int = 256
    group_temperature: float = 8.0  # multiplies the group attention logits (released code: 8)
    dropout: float = 0.05
    # gate: X_hat = X + gamma * psi([X, c]) with a learned scalar gamma = 0 at the start (not the paper's X_hat =
    # psi([X, c]), eq. 7), so that a context model starts exactly as the context-free model whose weights it
    # loads (train.init_from a context-free No-DA): the new layers cannot scramble the features it was trained on.
    gate: bool = False


@dataclass
class GroupAttention:
    """What the group context attends to, detached, float32, for inspection (the app's soft-region view).

    Shape:
        weights: (N, h*w, N*C) post-softmax group attention of every pixel over every region of the batch;
            exactly 0 for regions of other groups; each row sums to 1 over its group's regions.
        region_masks: (N, C, h, w) soft region weights (the spatial softmax of the aux logits, eq. 4);
            each (n, c) map sums to 1.
        region_image: (N*C,) image index of each region (regions are image-major: index = n*C + c).
        region_class: (N*C,) class index of each region.
    """

    weights: torch.Tensor
    region_masks: torch.Tensor
    region_image: torch.Tensor
    region_class: torch.Tensor


@dataclass
class ContextOutput:
    """Context-enhanced features (N, ch, h, w) and, in group mode when asked, the attention."""

    features: torch.Tensor
    attention: GroupAttention | None = None


def same_group_matrix(group_ids: torch.Tensor | None, num_images: int, device: torch.device) -> torch.Tensor:
    """(N, N) bool: ``[n, m]`` is True when images n and m belong to the same group (all True when ids are None)."""
    if group_ids is None:
        return torch.ones(num_images, num_images, dtype=torch.bool, device=device)
    if group_ids.shape != (num_images,) or group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ModelError(f"group_ids must be an integer tensor of shape ({num_images},) (one id per image), got "
                         f"{group_ids.dtype} {tuple(group_ids.shape)}; pass None when the whole batch is one group.")
    group_ids = group_ids.to(device)
    return group_ids[:, None] == group_ids[None, :]


def _float32(device: torch.device) -> torch.autocast:
    """Disable autocast so the softmax/attention math stays in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def _two_layers(in_channels: int, out_channels: int) -> nn.Sequential:
    """2 x (conv1x1 no bias + BN + ReLU): HRNet-OCR's f_pixel / f_object."""
    return nn.Sequential(*conv_bn_relu(in_channels, out_channels), *conv_bn_relu(out_channels, out_channels))


def gated(feats: torch.Tensor, fused: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    """``psi([X, c])`` (paper eq. 7) without a gate; ``X + gamma * psi([X, c])`` with one (``ContextConfig.gate``)."""
    return fused if gamma is None else feats + gamma.to(fused.dtype) * fused


class GroupRegionContext(nn.Module):
    """PSS group region context (+ per-image OCR context); see the module docstring for the equations."""

    def __init__(self, in_channels: int, key_channels: int, temperature: float, dropout: float,
                 gate: bool = False) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.temperature = temperature
        self.pixel_query = _two_layers(in_channels, key_channels)  # phi (HRNet f_pixel)
        self.region_key = _two_layers(in_channels, key_channels)   # f_object: key of the per-image attention only
        self.region_value = conv_bn_relu(in_channels, key_channels)  # sigma = varphi (HRNet f_down)
        self.fuse = nn.Sequential(*conv_bn_relu(2 * key_channels + in_channels, in_channels), nn.Dropout2d(dropout))
        self.gamma = nn.Parameter(torch.zeros(1)) if gate else None

    @staticmethod
    def soft_regions(feats: torch.Tensor, aux_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4 as implemented: spatial softmax per class and the weighted-mean region features, in float32.

        Shape: feats (N, ch, h, w), aux_logits (N, C, h, w) -> masks (N, C, h*w), regions (N, C, ch).
        """
        with _float32(feats.device):
            masks = torch.softmax(aux_logits.float().flatten(2), dim=2)
            regions = masks @ feats.float().flatten(2).transpose(1, 2)
        return masks, regions

    def forward(self, feats: torch.Tensor, aux_logits: torch.Tensor, group_ids: torch.Tensor | None = None,
                return_attention: bool = False) -> ContextOutput:
        """Shape: feats (N, ch, h, w), aux_logits (N, C, h, w), group_ids (N,) or None -> features (N, ch, h, w)."""
        n, num_classes, h, w = aux_logits.shape
        masks, regions = self.soft_regions(feats, aux_logits)
        proxy = regions.transpose(1, 2).unsqueeze(-1)  # (N, ch, C, 1): 1x1 convs act per region
        query, key, value = self.pixel_query(feats), self.region_key(proxy), self.region_value(proxy)
        same = same_group_matrix(group_ids, n, feats.device) if group_ids is not None else None
        with _float32(feats.device):
            q = query.float().flatten(2).transpose(1, 2)            # (N, hw, K)
            k = key.float().flatten(2)                              # (N, K, C)
            v = value.float().flatten(2).transpose(1, 2)            # (N, C, K)
            scale = self.key_channels ** -0.5
            w_image = torch.softmax(scale * (q @ k), dim=-1)        # (N, hw, C): regions of the same image
            v_all = v.reshape(n * num_classes, self.key_channels)   # (N*C, K), image-major
            logits = (scale * self.temperature) * (q @ v_all.t())   # (N, hw, N*C)
            if same is not None:  # regions of other groups get weight exactly 0
                allowed = same.repeat_interleave(num_classes, dim=1)  # (N, N*C)
                logits = logits.masked_fill(~allowed[:, None, :], float("-inf"))
            w_group = torch.softmax(logits, dim=-1)
            context = torch.cat([w_image @ v, w_group @ v_all], dim=-1)  # (N, hw, 2K)
        context = context.transpose(1, 2).reshape(n, 2 * self.key_channels, h, w).to(feats.dtype)
        out = gated(feats, self.fuse(torch.cat([context, feats], dim=1)), self.gamma)
        attention = None
        if return_attention:
            attention = GroupAttention(
                weights=w_group.detach(), region_masks=masks.detach().reshape(n, num_classes, h, w),
                region_image=torch.arange(n, device=feats.device).repeat_interleave(num_classes),
                region_class=torch.arange(num_classes, device=feats.device).repeat(n))
        return ContextOutput(out, attention)


class GlobalGroupContext(nn.Module):
    """Table 3 "Global": one representation per group (mean feature of its images, as in object co-segmentation),
    projected, broadcast to every pixel, concatenated and fused: ``fuse([g, X])``.

    The projection is conv1x1 + bias + ReLU without BN: all images of a training batch share one group vector, so a
    BN over the batch would normalise it to zero.
    """

    def __init__(self, in_channels: int, key_channels: int, dropout: float, gate: bool = False) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_channels, key_channels, 1), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(*conv_bn_relu(key_channels + in_channels, in_channels), nn.Dropout2d(dropout))
        self.gamma = nn.Parameter(torch.zeros(1)) if gate else None

    def forward(self, feats: torch.Tensor, group_ids: torch.Tensor | None = None) -> ContextOutput:
        """Shape: feats (N, ch, h, w), group_ids (N,) or None -> features (N, ch, h, w)."""
        n = feats.shape[0]
        same = same_group_matrix(group_ids, n, feats.device).float()
        with _float32(feats.device):
            image_means = feats.float().mean(dim=(2, 3))                      # (N, ch)
            group_means = (same @ image_means) / same.sum(dim=1, keepdim=True)  # mean over the image's group
        g = self.project(group_means[:, :, None, None].to(feats.dtype))
        g = g.expand(-1, -1, *feats.shape[-2:]).to(feats.dtype)
        return ContextOutput(gated(feats, self.fuse(torch.cat([g, feats], dim=1)), self.gamma))


class ContextModule(nn.Module):
    """Dispatch to the configured context: ``none`` (identity), ``global`` or ``group`` (see module docstring)."""

    def __init__(self, in_channels: int, num_classes: int, config: ContextConfig) -> None:
        super().__init__()
        self.mode = config.mode
        self.num_classes = num_classes
        self.block: nn.Module | None = None
        if config.mode == "group":
            self.block = GroupRegionContext(in_channels, config.key_channels, config.group_temperature, config.dropout,
                                            config.gate)
        elif config.mode == "global":
            self.block = GlobalGroupContext(in_channels, config.key_channels, config.dropout, config.gate)
        elif config.mode != "none":
            raise ModelError(f"unknown context mode {config.mode!r}: choose one of {list(CONTEXT_MODES)}.")

    def forward(self, feats: torch.Tensor, aux_logits: torch.Tensor, group_ids: torch.Tensor | None = None,
                return_attention: bool = False) -> ContextOutput:
        """Enhance ``feats`` with context; attention is returned only in ``group`` mode when asked.

        Shape: feats (N, ch, h, w), aux_logits (N, C, h, w), group_ids (N,) or None -> features (N, ch, h, w).
        """
        if isinstance(self.block, GroupRegionContext):
            return self.block(feats, aux_logits, group_ids, return_attention)
        if isinstance(self.block, GlobalGroupContext):
            return self.block(feats, group_ids)
        return ContextOutput(feats)
