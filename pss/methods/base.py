"""The method interface: a method turns a step's batches into named, already-weighted losses.

The one training loop (``pss.engine.trainer``) owns backward, optimizers, AMP, devices and logging
(code_examples.md P1). The method's own networks (critics: discriminators) belong to the method, which is an
``nn.Module`` so they are saved in checkpoints; the loop freezes them during the segmenter step and
runs ``critic_losses`` on detached outputs afterwards (P2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pss.losses import seg_ce
from pss.models.segmenter import SegOutput, Segmenter, upsample


@dataclass
class StepBatch:
    """The batches of one training step. Each batch is a dict with ``image`` (N,3,H,W) in [0,1] and
    ``label`` (N,H,W) long (255 = ignore; all 255 for unlabelled target images), on the training device."""

    step: int
    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor] | None = None
    pseudo: dict[str, torch.Tensor] | None = None


@dataclass
class StepLosses:
    """Named, already-weighted segmenter losses (summed by the loop) and what the auxiliary step needs."""

    losses: dict[str, torch.Tensor]
    cache: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class SegLossWeights:
    """Weights of the supervised segmentation loss: ``main·CE(main) + aux·CE(aux)`` (methods.md §1.3: 1.0 / 0.4)."""

    lambda_seg_main: float = 1.0
    lambda_seg_aux: float = 0.4


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``Config`` and implement ``segmenter_losses``.

    Class attributes:
        uses_target: the loop must feed unlabelled target batches.
        uses_pseudo: the loop must build pseudo labels before training and feed pseudo batches.
        default_context: the context mode (``none``/``global``/``group``) when the config leaves it unset.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = SegLossWeights
    uses_target: ClassVar[bool] = False
    uses_pseudo: ClassVar[bool] = False
    default_context: ClassVar[str] = "none"

    def __init__(self, config: Any, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        raise NotImplementedError

    def critic_losses(self, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of the method's own networks on detached outputs (empty for methods without any)."""
        return {}

    def has_critics(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def set_critics_trainable(self, trainable: bool) -> None:
        """Freeze the method's networks during the segmenter step so the generator loss does not train them."""
        for p in self.parameters():
            p.requires_grad_(trainable)


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of stride-8 logits to the label size before losses (as ADVENT/PSS do); float32 out
    (:func:`pss.models.segmenter.upsample`)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.float()
    return upsample(logits, size)


def supervised_losses(out: SegOutput, label: torch.Tensor, weights: SegLossWeights, prefix: str) -> dict[str, torch.Tensor]:
    """``λ_main·CE(main) + λ_aux·CE(aux)`` (paper eq. 1, official weights 1.0 / 0.4), as two named losses."""
    size = tuple(label.shape[-2:])
    losses = {f"{prefix}_main": weights.lambda_seg_main * seg_ce(resize_logits(out.logits, size), label)}
    if weights.lambda_seg_aux > 0:
        losses[f"{prefix}_aux"] = weights.lambda_seg_aux * seg_ce(resize_logits(out.aux_logits, size), label)
    return losses
