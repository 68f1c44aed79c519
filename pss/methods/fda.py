"""FDA (Yang & Soatto, CVPR 2020): Fourier domain adaptation, and its self-training round.

``fda`` per step (methods.md §4): each source image gets the low-frequency amplitude spectrum of a target
image (``pss.ops.fourier.fda_source_to_target``, window half-size ``floor(min(H, W)·beta)``, beta 0.01) and
is trained with the source labels; the target predictions get the robust entropy penalty
``λ_ent · mean((ent² + 1e-8)^η)`` (entW 0.005, η = 2.0) on the stride-8 logits (FDA computes it before
upsampling). Images are the raw [0, 1] crops: FDA is applied before normalisation and the segmenter
normalises afterwards — the README's "use the original images for FDA, then do mean subtraction".

``fda_ssl`` = the SSL round: the same losses, started from an FDA model, plus a CE on target pseudo labels.
Pseudo labels (``ClassThresholdPseudoConfig``, ``pss.methods.pseudo``): argmax of the teacher's
softmax; per class c the threshold is the 66th percentile of the max-probabilities of the pixels
predicted c over the whole target set, capped at 0.9; pixels below their class threshold -> 255.
The teacher is the starting model; ``pseudo.extra_models`` (run ids or checkpoints of FDA models trained
with other betas, e.g. 0.05 and 0.09) makes it the multi-band transfer (MBT) average of their softmaxes.

Choices: source and pseudo CE use the PSS weights ``1.0·main + 0.4·aux`` (FDA's network is single-level);
the entropy term is on the main output only, as FDA has one; it is active from the first step (the
README's ``--switch2entropy 0`` example; the code default waits 50k steps, meaningless for short runs).
The FDA-stylised image is not clamped to [0, 1] (neither does the official code).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar
import torch

from pss.losses import robust_entropy
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, supervised_losses
from pss.methods.pseudo import ClassThresholdPseudoConfig
from pss.models.segmenter import Segmenter
from pss.ops.fourier import fda_source_to_target


@dataclass
class FDAConfig(SegLossWeights):
    beta: float = 0.01
    lambda_ent: float = 0.005
    eta: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 0.5:
            raise ValueError(f"beta must be in [0, 0.5] (paper: 0.01, 0.05, 0.09), got {self.beta}")


def stylise(source: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Source crops with the low-frequency amplitude of the target crops (pairs i, i; targets cycled when the
    target batch is smaller). No gradient flows through the images.

    Shape:
        source: (N, 3, H, W), target: (M, 3, H, W) in [0, 1] -> (N, 3, H, W).
    """
    if target.shape[0] != source.shape[0]:
        target = target[torch.arange(source.shape[0], device=target.device) % target.shape[0]]
    with torch.no_grad():
        return fda_source_to_target(source.float(), target.float(), beta).to(source.dtype)


class FDA(Method):
    """Fourier-stylised source supervision + robust entropy on target."""

    name = "fda"
    Config = FDAConfig
    streams: ClassVar[tuple[str, ...]] = ("source", "target")

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: FDAConfig = self.config
        if batch.target is None:  # no target batch: plain source supervision
            out = model(batch.source["image"])
            return StepLosses(supervised_losses(out, batch.source["label"], cfg, "source"))
        src_in_trg = stylise(batch.source["image"], batch.target["image"], cfg.beta)
        losses = supervised_losses(model(src_in_trg), batch.source["label"], cfg, "source")
        tgt_out = model(batch.target["image"])
        losses["target_ent"] = cfg.lambda_ent * robust_entropy(tgt_out.logits.float(), cfg.eta)
        if batch.pseudo is not None:
            losses.update(supervised_losses(model(batch.pseudo["image"]), batch.pseudo["label"], cfg, "pseudo"))
        return StepLosses(losses)


@dataclass
class FDASelfTrainingConfig(FDAConfig):
    pseudo: ClassThresholdPseudoConfig = field(default_factory=ClassThresholdPseudoConfig)


class FDASelfTraining(FDA):
    """FDA's SSL round: FDA losses + CE on class-thresholded pseudo labels of the target set."""

    name = "fda_ssl"
    Config = FDASelfTrainingConfig
    streams = ("source", "target", "pseudo")
    starts_from = "fda"

    def pseudo_policy(self) -> ClassThresholdPseudoConfig:
        return self.config.pseudo
