"""The method contract: a method declares what it needs and owns what is specific to it; the loop owns the rest.

The one training loop (``pss.engine.trainer``) owns backward, AMP, devices, the LR schedule, checkpoints and
logging (code_examples.md P1). A method declares the batch streams and fields it needs (so the data path provides
them) and owns its losses, its optimizers, its own networks (critics: discriminators, an ``nn.Module`` part of the
method, so they are saved in checkpoints; the loop freezes them during the segmenter step and runs
``critic_losses`` on detached outputs afterwards, P2), its pseudo-label policy and its start/step hooks. Adding a
method is one file and one line in the registry (``pss.methods.METHODS``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from pss.losses import seg_ce
from pss.models.segmenter import SegOutput, Segmenter, param_groups, upsample

if TYPE_CHECKING:
    from pss.config import TrainConfig
    from pss.methods.pseudo import PseudoPolicy


@dataclass
class StepBatch:
    """The batches of one training step. Each batch is a dict with ``image`` (N,3,H,W) in [0,1] and
    ``label`` (N,H,W) long (255 = ignore; all 255 for unlabelled target images), on the training device."""

    step: int
    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor] | None = None
    pseudo: dict[str, torch.Tensor] | None = None
    annotated: dict[str, torch.Tensor] | None = None  # the user's annotated training images (train.annotated_weight)


@dataclass
class StepLosses:
    """Named, already-weighted segmenter losses (summed by the loop) and what the critic step needs."""

    losses: dict[str, torch.Tensor]
    cache: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class SegLossWeights:
    """Weights of the supervised segmentation loss: ``main·CE(main) + aux·CE(aux)`` (methods.md §1.3: 1.0 / 0.4)."""

    lambda_seg_main: float = 1.0
    lambda_seg_aux: float = 0.4


STREAMS = ("source", "target", "pseudo", "annotated")  # the batch streams the loop can draw
# ``annotated`` is the loop's own: drawn for every method when ``train.annotated_weight`` > 0, never declared


class Method(nn.Module):
    """Base class: a method turns a step's batches into named, already-weighted losses. Subclasses set ``name`` and
    ``Config`` and implement ``segmenter_losses``; everything else has a default that fits most methods.

    Declared (class attributes, read by the engine and the app before anything is built):
        streams: the batch streams the loop draws (``source`` always; ``target``: unlabelled target images;
            ``pseudo``: target images with the labels of :meth:`pseudo_policy`, built before training).
        fields: extra per-image batch fields the method needs besides ``image`` and ``label``
            (``pss.data.datasets.EXTRA_FIELDS``: ``tags``, the multi-hot image-level tags).
        default_context: the context mode (``none``/``global``/``group``) when the config leaves it unset.
        starts_from: for a second stage, the method whose run it starts from (``train.init_from``).
        stages: for a multi-stage pipeline (the weak-supervision systems), its stage names in order; its runner
            (``pss.weak.runners.PIPELINES``) trains each stage's networks and returns the final segmenter, which is
            evaluated like any run. Empty (every other method): the run is one training loop of this method.

    Owned (called by the loop, in this order):
        :meth:`on_train_start` once; :meth:`build_optimizers` once; per step :meth:`draws` per stream, then
        :meth:`segmenter_losses` with the method's critics frozen (and, when the run trains on the user's annotated
        images, :meth:`annotated_losses`, whose default fits every method), then :meth:`critic_losses` on the
        detached ``cache`` with them unfrozen, every optimizer steps, then :meth:`after_step`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = SegLossWeights
    streams: ClassVar[tuple[str, ...]] = ("source",)
    fields: ClassVar[tuple[str, ...]] = ()
    default_context: ClassVar[str] = "none"
    starts_from: ClassVar[str | None] = None
    stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes

    # -- declared needs ----------------------------------------------------------------------------------------------
    @classmethod
    def uses(cls, stream: str) -> bool:
        """Whether the loop must feed this method ``stream`` batches."""
        return stream in cls.streams

    def stage_steps(self, train_steps: int) -> dict[str, int]:
        """A pipeline's training stages and their steps, in order (the run's progress is their sum; the last one,
        the final segmenter, usually trains ``train_steps``). Empty for a one-loop method."""
        return {}

    def skipped_stages(self, config: Any) -> frozenset[str]:
        """Stages of ``stage_steps`` that will not train for this run's data (``config``: the run's
        ``ExperimentConfig``), so the progress total leaves them out. None by default."""
        return frozenset()

    def pseudo_policy(self) -> PseudoPolicy | None:
        """How the ``pseudo`` stream's labels are built (``None`` for methods without one)."""
        return None

    def draws(self, stream: str, step: int) -> bool:
        """Whether step ``step`` gets a ``stream`` batch; pseudo batches come every ``pseudo_every`` steps."""
        if stream == "pseudo":
            policy = self.pseudo_policy()
            return policy is not None and step % policy.pseudo_every == 0
        return True

    # -- owned by the method -----------------------------------------------------------------------------------------
    def on_train_start(self, total_steps: int) -> None:
        """Once, before the first step (and on resume): schedules given as fractions of the run become steps."""

    def build_optimizers(self, model: Segmenter, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by name (saved in checkpoints under these names). Default: the segmenter's SGD (methods.md
        §1.3: momentum 0.9, weight decay 5e-4, the heads at ``head_lr_mult`` x LR). Every optimizer's LR follows
        the loop's poly schedule from its ``initial_lr``."""
        return {"segmenter": torch.optim.SGD(param_groups(model, train.lr, train.head_lr_mult), lr=train.lr,
                                             momentum=train.momentum, weight_decay=train.weight_decay)}

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        raise NotImplementedError

    def annotated_losses(self, model: Segmenter, batch: dict[str, torch.Tensor], weight: float
                         ) -> dict[str, torch.Tensor]:
        """The supervised loss on a batch of the user's annotated training images (``train.annotated_weight`` =
        ``weight`` > 0; the loop calls it for every method, next to :meth:`segmenter_losses`):
        ``{"annotated": weight · CE(logits, mask)}``, the main head's logits upsampled to the mask, pixels 255
        ignored (the supervised term of paper eq. 1 on target images with labels). A method whose forward needs
        more (e.g. group ids) overrides this; none does."""
        return {"annotated": annotated_loss(model(batch["image"]), batch["label"], weight)}

    def critic_losses(self, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of the method's own networks (critics: discriminators) on detached outputs; none by default."""
        return {}

    def set_critics_trainable(self, trainable: bool) -> None:
        """Freeze the method's networks during the segmenter step so the generator loss does not train them."""
        for p in self.parameters():
            p.requires_grad_(trainable)

    def after_step(self, model: Segmenter, step: int) -> None:
        """After every optimizer step (e.g. an EMA teacher's update); nothing by default."""


def resize_logits(logits: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear upsampling of stride-8 logits to the label size before losses (as ADVENT/PSS do); float32 out
    (:func:`pss.models.segmenter.upsample`)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.float()
    return upsample(logits, (size[0], size[1]))


def supervised_losses(out: SegOutput, label: torch.Tensor, weights: SegLossWeights,
                      prefix: str) -> dict[str, torch.Tensor]:
    """``λ_main·CE(main) + λ_aux·CE(aux)`` (paper eq. 1, official weights 1.0 / 0.4), as two named losses."""
    size = tuple(label.shape[-2:])
    losses = {f"{prefix}_main": weights.lambda_seg_main * seg_ce(resize_logits(out.logits, size), label)}
    if weights.lambda_seg_aux > 0:
        losses[f"{prefix}_aux"] = weights.lambda_seg_aux * seg_ce(resize_logits(out.aux_logits, size), label)
    return losses


def annotated_loss(out: SegOutput, label: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight · CE(upsampled main logits, label)``, mean over the pixels whose label is not 255.

    Shape: ``out.logits`` (N, C, h, w), ``label`` (N, H, W) long -> a scalar.
    """
    return weight * seg_ce(resize_logits(out.logits, tuple(label.shape[-2:])), label)
