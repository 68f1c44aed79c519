"""ADVENT (Vu et al., CVPR 2019): adversarial alignment of entropy maps, with the MinEnt variant.

The adversarial scheme is :class:`~pss.methods.adversarial.OutputSpaceAdversarial` (methods.md §2.3, §1.3);
ADVENT's discriminators see the weighted self-information maps ``I = -p·log2 p / log2 C`` (paper eq. 2) of
the main and aux outputs. ``minent=True`` replaces the adversarial term with direct entropy minimisation
(MinEnt, weights 0.001 / 0.0002) and builds no discriminator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pss.losses import entropy_loss, entropy_map_from_logits
from pss.methods.adversarial import AdversarialConfig, OutputSpaceAdversarial
from pss.methods.base import StepBatch, resize_logits
from pss.models.segmenter import SegOutput


@dataclass
class AdventConfig(AdversarialConfig):
    """Official weights: adversarial 0.001 (main) / 0.0002 (aux); MinEnt the same (methods.md §2.3)."""

    minent: bool = False
    lambda_ent_main: float = 0.001
    lambda_ent_aux: float = 0.0002


class Advent(OutputSpaceAdversarial):
    name = "advent"
    Config = AdventConfig

    def uses_discriminators(self) -> bool:
        return not self.config.minent

    def discriminator_input(self, logits: torch.Tensor) -> torch.Tensor:
        return entropy_map_from_logits(logits)

    def extra_target_losses(self, tgt_out: SegOutput, batch: StepBatch) -> dict[str, torch.Tensor]:
        cfg: AdventConfig = self.config
        if not cfg.minent or batch.target is None:
            return {}
        size = tuple(batch.target["image"].shape[-2:])
        return {f"target_ent_{name}": weight * entropy_loss(torch.softmax(resize_logits(logits, size).float(), 1))
                for name, weight, logits in (("main", cfg.lambda_ent_main, tgt_out.logits),
                                             ("aux", cfg.lambda_ent_aux, tgt_out.aux_logits))}
