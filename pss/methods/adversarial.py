"""The output-space adversarial scheme shared by AdaptSegNet and ADVENT (and MRNet stage I, PSS S1/S2).

Per step (methods.md §1.3, §2.3, §3): source CE (and a pseudo-label CE when the loop feeds one); on target,
the segmenter is trained so that two fully convolutional discriminators — one on a map of the main output,
one on a map of the aux output — take the target for source (generator side, weights ``lambda_adv_main`` /
``lambda_adv_aux``); then the discriminators learn source -> 0, target -> 1 on the detached maps, each loss
×1/2. The methods differ only in the map the discriminators see: :meth:`discriminator_input`
(AdaptSegNet: softmax probabilities; ADVENT: weighted self-information, i.e. entropy maps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from pss.losses import bce_domain
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits, supervised_losses
from pss.models.discriminator import build_discriminator
from pss.models.segmenter import SegOutput, Segmenter
from pss.ops.kernels import fast_kernels

if TYPE_CHECKING:
    from pss.config import TrainConfig

SOURCE_DOMAIN, TARGET_DOMAIN = 0, 1


@dataclass
class AdversarialConfig(SegLossWeights):
    """Official multi-level weights (AdaptSegNet and ADVENT alike): adversarial 0.001 on the main output, 0.0002
    on the aux output (``lambda_adv_aux = 0``: single-level, no aux discriminator)."""

    lambda_adv_main: float = 0.001
    lambda_adv_aux: float = 0.0002
    ndf: int = 64  # discriminator width (official 64)
    lr_d: float = 1e-4  # Adam, betas (0.9, 0.99), poly-decayed like the segmenter


class OutputSpaceAdversarial(Method):
    """Base of the adversarial methods; subclasses define :meth:`discriminator_input`."""

    Config = AdversarialConfig
    streams: ClassVar[tuple[str, ...]] = ("source", "target")

    def __init__(self, config: AdversarialConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        if self.uses_discriminators():
            self.d_main = build_discriminator(num_classes, config.ndf)
            self.d_aux = build_discriminator(num_classes, config.ndf) if config.lambda_adv_aux > 0 else None

    def build_optimizers(self, model: Segmenter, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """The segmenter's SGD and, when there are discriminators, their Adam (lr ``lr_d``, betas (0.9, 0.99),
        poly-decayed like the segmenter: methods.md §2.3)."""
        optimizers = super().build_optimizers(model, train)
        if self.uses_discriminators():
            optimizers["critic"] = torch.optim.Adam(self.parameters(), lr=self.config.lr_d, betas=(0.9, 0.99))
        return optimizers

    def uses_discriminators(self) -> bool:
        """False for variants that replace the adversarial term (ADVENT's MinEnt)."""
        return True

    def discriminator_input(self, logits: torch.Tensor) -> torch.Tensor:
        """The map a discriminator sees, from the upsampled float32 logits (softmax probabilities for AdaptSegNet,
        their entropy map for ADVENT). Shape: (N, C, H, W) -> (N, C, H, W)."""
        raise NotImplementedError

    def output_maps(self, out: SegOutput, size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminators' inputs for the main and aux outputs, upsampled to ``size``, in float32."""
        return tuple(self.discriminator_input(resize_logits(logits, size))
                     for logits in (out.logits, out.aux_logits))  # type: ignore[return-value]

    def extra_target_losses(self, tgt_out: SegOutput, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Target terms besides the adversarial one (MRNet's memory regularisation, ADVENT's MinEnt); none here."""
        return {}

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg = self.config
        src_out = model(batch.source["image"])
        losses = supervised_losses(src_out, batch.source["label"], cfg, "source")
        if batch.pseudo is not None:
            losses.update(supervised_losses(model(batch.pseudo["image"]), batch.pseudo["label"], cfg, "pseudo"))
        if batch.target is None:
            return StepLosses(losses)
        tgt_out = model(batch.target["image"])
        cache: dict[str, torch.Tensor] = {}
        if self.uses_discriminators():
            t_main, t_aux = self.output_maps(tgt_out, tuple(batch.target["image"].shape[-2:]))
            # Generator side: make the target maps look like source to the discriminators.
            losses["target_adv_main"] = cfg.lambda_adv_main * bce_domain(self.d_main(t_main), SOURCE_DOMAIN)
            if self.d_aux is not None:
                losses["target_adv_aux"] = cfg.lambda_adv_aux * bce_domain(self.d_aux(t_aux), SOURCE_DOMAIN)
            with torch.no_grad():
                s_main, s_aux = self.output_maps(src_out, tuple(batch.source["image"].shape[-2:]))
            cache = {"source_main": s_main, "source_aux": s_aux,
                     "target_main": t_main.detach(), "target_aux": t_aux.detach()}
        losses.update(self.extra_target_losses(tgt_out, batch))
        return StepLosses(losses, cache)

    def critic_losses(self, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not cache:
            return {}
        losses = {"d_main": _domain_loss(self.d_main, cache["source_main"], cache["target_main"])}
        if self.d_aux is not None:
            losses["d_aux"] = _domain_loss(self.d_aux, cache["source_aux"], cache["target_aux"])
        return losses


def _domain_loss(discriminator: torch.nn.Module, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(BCE(D(source), 0) + BCE(D(target), 1)) / 2``, with one discriminator pass over both batches.

    The discriminator has no normalisation layer, so each image's logits do not depend on the rest of the batch: one
    pass over the concatenation gives the same values as two, with fewer, larger convolutions (on CPU the demo's
    discriminator step took 2 x 75 ms one batch at a time, 128 ms at once).
    """
    if source.shape[1:] != target.shape[1:] or not fast_kernels():  # different crop sizes (or the bench baseline)
        return 0.5 * (bce_domain(discriminator(source), SOURCE_DOMAIN)
                      + bce_domain(discriminator(target), TARGET_DOMAIN))
    logits = discriminator(torch.cat([source, target]))
    return 0.5 * (bce_domain(logits[:len(source)], SOURCE_DOMAIN) + bce_domain(logits[len(source):], TARGET_DOMAIN))
