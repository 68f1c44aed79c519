"""MaxSquare (Chen et al., ICCV 2019): maximise the squared target probabilities.

Per step (methods.md §5): source CE; on target, ``λ_target · L_MS(softmax(main))`` with
``L_MS = -mean(p²)/2`` (eq. 6) or, with ``image_wise``, the image-wise class-balanced weighting (eq. 9,
``IW_MaxSquareloss``, ratio 0.2). Predictions are upsampled to the crop size first, as the official
code does. No discriminator.

``multi_level`` adds the official multi-level term: the aux output gets a hard CE towards
``argmax((p_main + p_aux) / 2)`` on the pixels where either head is confident
(``max p > threshold``, 0.95), others ignored, with weight ``lambda_aux_hard``
(official ``λ_seg · λ_target`` = 0.1 · 0.09 ≈ 0.01).

Choices: source CE uses the PSS weights ``1.0·main + 0.4·aux`` (official ``λ_seg = 0.1``) so the rows of
Tables 1-2 share one supervised loss; ``λ_target`` = 0.1 (the README's single-level value; 0.09 multi).
The official recipe pretrains on source first — the experiment runner starts every adaptation run from the
shared No-DA model (``train.init_from``), so that holds for every method here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pss.data.labels import IGNORE_INDEX
from pss.losses import iw_max_square_loss, max_square_loss, seg_ce
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits, supervised_losses
from pss.models.segmenter import Segmenter


@dataclass
class MaxSquareConfig(SegLossWeights):
    lambda_target: float = 0.1
    image_wise: bool = False
    iw_ratio: float = 0.2
    multi_level: bool = False
    threshold: float = 0.95
    lambda_aux_hard: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.iw_ratio <= 1.0:
            raise ValueError(f"iw_ratio must be in [0, 1] (official 0.2), got {self.iw_ratio}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1) (official 0.95), got {self.threshold}")


def confident_fused_labels(prob_main: torch.Tensor, prob_aux: torch.Tensor, threshold: float) -> torch.Tensor:
    """Hard labels for the multi-level aux term: ``argmax((p_main + p_aux)/2)`` where ``max p_main > t`` or
    ``max p_aux > t``, else 255 (MaxSquare ``solve_gta5.py`` with ``--multi``).

    Shape:
        prob_main, prob_aux: (N, C, H, W) probabilities -> (N, H, W) long.
    """
    fused = (prob_main + prob_aux) / 2
    confident = (prob_main.amax(dim=1) > threshold) | (prob_aux.amax(dim=1) > threshold)
    return torch.where(confident, fused.argmax(dim=1), torch.full_like(confident, IGNORE_INDEX, dtype=torch.long))


class MaxSquare(Method):
    """Max-square loss on target predictions, optionally image-wise weighted and multi-level."""

    name = "maxsquare"
    Config = MaxSquareConfig
    streams = ("source", "target")

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: MaxSquareConfig = self.config
        src_out = model(batch.source["image"])
        losses = supervised_losses(src_out, batch.source["label"], cfg, "source")
        if batch.target is None:
            return StepLosses(losses)
        tgt_out = model(batch.target["image"])
        size = tuple(batch.target["image"].shape[-2:])
        main_logits = resize_logits(tgt_out.logits, size).float()
        prob_main = torch.softmax(main_logits, dim=1)
        square = iw_max_square_loss(prob_main, cfg.iw_ratio) if cfg.image_wise else max_square_loss(prob_main)
        losses["target_maxsquare"] = cfg.lambda_target * square
        if cfg.multi_level:
            aux_logits = resize_logits(tgt_out.aux_logits, size).float()
            with torch.no_grad():
                labels = confident_fused_labels(prob_main, torch.softmax(aux_logits, dim=1), cfg.threshold)
            losses["target_aux_hard"] = cfg.lambda_aux_hard * seg_ce(aux_logits, labels)
        return StepLosses(losses)
