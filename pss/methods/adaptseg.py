"""AdaptSegNet (Tsai et al., CVPR 2018): multi-level adversarial alignment in the output space.

Per step (methods.md §3): source CE; on target, the segmenter is trained so that two fully convolutional
discriminators — one on the softmax of the main output, one on the softmax of the aux output — take
the target predictions for source (generator side, weights 0.001 main / 0.0002 aux); then the
discriminators learn source -> 0, target -> 1 on the detached softmax maps, each loss ×1/2.
The difference from ADVENT is only the discriminator input: softmax probabilities (output space)
instead of weighted self-information (entropy) maps.

Choices (documented, not accidental):

* Source CE uses the PSS weights ``1.0·main + 0.4·aux`` (AdaptSegNet uses ``λ_seg = 0.1`` for aux) so every
  row of Tables 1-2 shares one supervised loss; only the adaptation term differs.
* The official classifier has an early-``return`` bug that sums only 2 of its 4 ASPP branches
  (AdaptSegNet issues #4/#20/#21/#73/#84, methods.md §13). We do NOT reproduce it: our heads are the
  PSS heads (PSP + 1×1 classifier, aux head on the stride-8 mid features), with no ASPP classifier at all.
* BCE (vanilla GAN) as in the paper's main results; the LS-GAN variant is not provided.
* Predictions are upsampled to the crop size before the discriminator (the official code feeds input-size maps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pss.losses import bce_domain
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits, supervised_losses
from pss.models.discriminator import build_discriminator
from pss.models.segmenter import SegOutput, Segmenter

SOURCE_DOMAIN, TARGET_DOMAIN = 0, 1


@dataclass
class AdaptSegConfig(SegLossWeights):
    """Official multi-level weights (methods.md §3): adversarial 0.001 on the main output, 0.0002 on the aux
    output (``lambda_adv_aux = 0`` gives the single-level variant). The README notes that with its PyTorch-0.4
    code the multi-level model needs smaller weights (0.0005 / 0.00005); we keep the paper's values."""

    lambda_adv_main: float = 0.001
    lambda_adv_aux: float = 0.0002
    ndf: int = 64  # discriminator width (official 64)
    lr_d: float = 1e-4  # Adam, betas (0.9, 0.99), poly-decayed like the segmenter


class AdaptSeg(Method):
    """Output-space adversarial adaptation (AdaptSegNet eq. 4-5, multi-level)."""

    name = "adaptseg"
    Config = AdaptSegConfig
    uses_target = True

    def __init__(self, config: AdaptSegConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.d_main = build_discriminator(num_classes, config.ndf)
        self.d_aux = build_discriminator(num_classes, config.ndf) if config.lambda_adv_aux > 0 else None

    @staticmethod
    def output_maps(out: SegOutput, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminators' inputs: softmax of the main and aux outputs at ``size``.

        Shape:
            out tensors (N, C, h, w) -> two (N, C, H, W) probability maps.
        """
        main = torch.softmax(resize_logits(out.logits, size).float(), dim=1)
        aux = torch.softmax(resize_logits(out.aux_logits, size).float(), dim=1)
        return main, aux

    def adversarial_losses(self, src_out: SegOutput, tgt_out: SegOutput, src_size: tuple[int, int],
                           tgt_size: tuple[int, int]) -> StepLosses:
        """Generator side of the adversarial game and the detached maps the discriminator step needs."""
        cfg: AdaptSegConfig = self.config
        t_main, t_aux = self.output_maps(tgt_out, tgt_size)
        losses = {"target_adv_main": cfg.lambda_adv_main * bce_domain(self.d_main(t_main), SOURCE_DOMAIN)}
        if self.d_aux is not None:
            losses["target_adv_aux"] = cfg.lambda_adv_aux * bce_domain(self.d_aux(t_aux), SOURCE_DOMAIN)
        with torch.no_grad():
            s_main, s_aux = self.output_maps(src_out, src_size)
        cache = {"source_main": s_main, "source_aux": s_aux, "target_main": t_main.detach(),
                 "target_aux": t_aux.detach()}
        return StepLosses(losses, cache)

    def target_losses(self, tgt_out: SegOutput, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Extra target terms of subclasses (MRNet's memory regularisation); none here."""
        return {}

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: AdaptSegConfig = self.config
        src_out = model(batch.source["image"])
        losses = supervised_losses(src_out, batch.source["label"], cfg, "source")
        if batch.target is None:
            return StepLosses(losses)
        tgt_out = model(batch.target["image"])
        adv = self.adversarial_losses(src_out, tgt_out, tuple(batch.source["image"].shape[-2:]),
                                      tuple(batch.target["image"].shape[-2:]))
        losses.update(adv.losses)
        losses.update(self.target_losses(tgt_out, batch))
        return StepLosses(losses, adv.cache)

    def auxiliary_losses(self, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not cache:
            return {}
        losses = {"d_main": 0.5 * (bce_domain(self.d_main(cache["source_main"]), SOURCE_DOMAIN)
                                   + bce_domain(self.d_main(cache["target_main"]), TARGET_DOMAIN))}
        if self.d_aux is not None:
            losses["d_aux"] = 0.5 * (bce_domain(self.d_aux(cache["source_aux"]), SOURCE_DOMAIN)
                                     + bce_domain(self.d_aux(cache["target_aux"]), TARGET_DOMAIN))
        return losses
