"""ADVENT (Vu et al., CVPR 2019): adversarial alignment of entropy maps, with the MinEnt variant.

Per step (methods.md §2.3, §1.3): source CE; on target, the segmenter is trained to make a
discriminator on the weighted self-information maps ``I = -p·log2 p / log2 C`` (paper eq. 2) take
the target for source (eq. 3, generator side); two discriminators, on the main and aux outputs.
Then the discriminators learn source -> 0, target -> 1 on detached maps, each loss ×1/2.
``minent=True`` replaces the adversarial term with direct entropy minimisation (MinEnt).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pss.losses import bce_domain, entropy_loss, entropy_map
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits, supervised_losses
from pss.models.discriminator import build_discriminator
from pss.models.segmenter import SegOutput, Segmenter

SOURCE_DOMAIN, TARGET_DOMAIN = 0, 1


@dataclass
class AdventConfig(SegLossWeights):
    """Official weights: adversarial 0.001 (main) / 0.0002 (aux); MinEnt the same (methods.md §2.3)."""

    lambda_adv_main: float = 0.001
    lambda_adv_aux: float = 0.0002
    minent: bool = False
    lambda_ent_main: float = 0.001
    lambda_ent_aux: float = 0.0002
    ndf: int = 64  # discriminator width (official 64)
    lr_d: float = 1e-4  # Adam, betas (0.9, 0.99), poly-decayed like the segmenter


class Advent(Method):
    name = "advent"
    Config = AdventConfig
    uses_target = True

    def __init__(self, config: AdventConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        if not config.minent:
            self.d_main = build_discriminator(num_classes, config.ndf)
            self.d_aux = build_discriminator(num_classes, config.ndf) if config.lambda_adv_aux > 0 else None

    def _entropy_maps(self, out: SegOutput, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        main = entropy_map(torch.softmax(resize_logits(out.logits, size).float(), dim=1))
        aux = entropy_map(torch.softmax(resize_logits(out.aux_logits, size).float(), dim=1))
        return main, aux

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: AdventConfig = self.config
        src_out = model(batch.source["image"])
        losses = supervised_losses(src_out, batch.source["label"], cfg, "source")
        if batch.pseudo is not None:
            losses.update(supervised_losses(model(batch.pseudo["image"]), batch.pseudo["label"], cfg, "pseudo"))
        if batch.target is None:
            return StepLosses(losses)
        tgt_out = model(batch.target["image"])
        size = tuple(batch.target["image"].shape[-2:])
        if cfg.minent:
            losses["target_ent_main"] = cfg.lambda_ent_main * entropy_loss(torch.softmax(resize_logits(tgt_out.logits, size).float(), 1))
            losses["target_ent_aux"] = cfg.lambda_ent_aux * entropy_loss(torch.softmax(resize_logits(tgt_out.aux_logits, size).float(), 1))
            return StepLosses(losses)
        t_main, t_aux = self._entropy_maps(tgt_out, size)
        # Generator side of eq. 3: make target entropy maps look like source to D.
        losses["target_adv_main"] = cfg.lambda_adv_main * bce_domain(self.d_main(t_main), SOURCE_DOMAIN)
        if self.d_aux is not None:
            losses["target_adv_aux"] = cfg.lambda_adv_aux * bce_domain(self.d_aux(t_aux), SOURCE_DOMAIN)
        s_main, s_aux = self._entropy_maps(src_out, tuple(batch.source["image"].shape[-2:]))
        cache = {"source_main": s_main.detach(), "source_aux": s_aux.detach(),
                 "target_main": t_main.detach(), "target_aux": t_aux.detach()}
        return StepLosses(losses, cache)

    def auxiliary_losses(self, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.config.minent or not cache:
            return {}
        losses = {"d_main": 0.5 * (bce_domain(self.d_main(cache["source_main"]), SOURCE_DOMAIN)
                                   + bce_domain(self.d_main(cache["target_main"]), TARGET_DOMAIN))}
        if self.d_aux is not None:
            losses["d_aux"] = 0.5 * (bce_domain(self.d_aux(cache["source_aux"]), SOURCE_DOMAIN)
                                     + bce_domain(self.d_aux(cache["target_aux"]), TARGET_DOMAIN))
        return losses
