"""MRNet (Zheng & Yang, IJCAI 2020) and its variance-rectified pseudo-label stage (IJCV 2021).

``mrnet`` = stage I (methods.md §6): AdaptSegNet's multi-level output-space adversarial training (weights
0.001 main / 0.0002 aux on softmax maps, ``pss.methods.adaptseg``) plus the memory regularisation on target:
both heads are pulled towards their detached fused prediction ``softmax(0.5·aux + main)`` with
``λ_kl · (KL(m‖p_main) + KL(m‖p_aux))`` per pixel (``pss.losses.memory_kl``, λ_kl = 0.1). The official
code turns the KL term on only after iteration 15000 of 100000; ``kl_start`` keeps that as a fraction of
``train.steps`` (0.15) so short runs follow the same schedule.

``mrnet_s2`` = stage II: pseudo labels from the stage-I model (``FusedArgmaxPseudoConfig``: argmax of
``softmax(main + 0.5·aux)`` over every target image, no threshold, as ``generate_plabel_cityscapes.py``),
trained with the rectified loss ``rect(main, aux) + 0.5·rect(aux, main)`` (``pss.losses.rectified_ce``:
CE weighted by ``exp(-KL)`` between the heads, plus the mean KL). No adversarial or KL term (λ_adv = λ_kl = 0
in stage II). The PSS paper (§5.3) adds VOC supervision to such pseudo-label-only methods because a
person's collection is small, so the source CE stays.

Choices: the source CE uses the PSS weights ``1.0·main + 0.4·aux`` (MRNet: class-balanced CE, ``λ_seg 0.5``,
``only_hard_label 80``), the discriminators are ADVENT/AdaptSegNet's FC discriminators with BCE (MRNet uses
a multi-scale LS-GAN discriminator with gradient penalty), and pseudo labels come from one scale without
flipping (the official generator averages 2 scales × flips). Our heads are the PSS heads, not MRNet's
modified ASPP heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pss.losses import memory_kl, rectified_ce
from pss.methods.adaptseg import AdaptSeg, AdaptSegConfig
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits, supervised_losses
from pss.methods.pseudo import FusedArgmaxPseudoConfig
from pss.models.segmenter import SegOutput, Segmenter


@dataclass
class MRNetConfig(AdaptSegConfig):
    """``kl_start``: fraction of ``train.steps`` before the KL term is on (official 15k of 100k = 0.15)."""

    lambda_kl: float = 0.1
    kl_start: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 <= self.kl_start <= 1.0:
            raise ValueError(f"kl_start is a fraction of train.steps in [0, 1], got {self.kl_start}")


class MRNet(AdaptSeg):
    """Output-space adversarial training + memory regularisation (KL between main, aux and their fusion)."""

    name = "mrnet"
    Config = MRNetConfig

    def __init__(self, config: MRNetConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.kl_start_step = 0  # set by on_train_start; 0 = on from the first step

    def on_train_start(self, total_steps: int) -> None:
        """``kl_start`` (a fraction of the run) becomes a step number."""
        self.kl_start_step = int(round(self.config.kl_start * total_steps))

    def extra_target_losses(self, tgt_out: SegOutput, batch: StepBatch) -> dict[str, torch.Tensor]:
        cfg: MRNetConfig = self.config
        if cfg.lambda_kl <= 0 or batch.step < self.kl_start_step:
            return {}
        size = tuple(batch.target["image"].shape[-2:])  # type: ignore[index]
        main = resize_logits(tgt_out.logits, size).float()
        aux = resize_logits(tgt_out.aux_logits, size).float()
        return {"target_kl": cfg.lambda_kl * memory_kl(main, aux)}


@dataclass
class MRNetStage2Config(SegLossWeights):
    """Rectified pseudo-label loss weights (official ``1·rect(main) + 0.5·rect(aux)``) and the pseudo labels."""

    lambda_rect_main: float = 1.0
    lambda_rect_aux: float = 0.5
    pseudo: FusedArgmaxPseudoConfig = field(default_factory=FusedArgmaxPseudoConfig)


class MRNetStage2(Method):
    """Source CE + variance-rectified CE on the stage-I model's pseudo labels (IJCV21 eq. 9)."""

    name = "mrnet_s2"
    Config = MRNetStage2Config
    streams = ("source", "pseudo")
    starts_from = "mrnet"

    def pseudo_policy(self) -> FusedArgmaxPseudoConfig:
        return self.config.pseudo

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: MRNetStage2Config = self.config
        losses = supervised_losses(model(batch.source["image"]), batch.source["label"], cfg, "source")
        if batch.pseudo is None:
            return StepLosses(losses)
        out = model(batch.pseudo["image"])
        label = batch.pseudo["label"]
        size = tuple(label.shape[-2:])
        main = resize_logits(out.logits, size).float()
        aux = resize_logits(out.aux_logits, size).float()
        losses["pseudo_main"] = cfg.lambda_rect_main * rectified_ce(main, aux, label)
        if cfg.lambda_rect_aux > 0:
            losses["pseudo_aux"] = cfg.lambda_rect_aux * rectified_ce(aux, main, label)
        return StepLosses(losses)
