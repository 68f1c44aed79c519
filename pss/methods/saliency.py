"""Our own class-agnostic saliency model (issue 17): a segmenter trained on the source masks to tell foreground
(any VOC object class 1..20) from background, whose maps replace EPS's off-the-shelf PFAN saliency when a user has
no ``SALImages/``.

It is the ordinary segmenter trained by the one loop on source batches, with the label binarised
(``0 -> 0``, ``1..20 -> 1``, ``255`` kept). A 2-class model (``model.num_classes = 2``) is trained directly; a
21-class one is read as two classes by merging the object logits with log-sum-exp (``log Σ_{c≥1} e^{x_c}``, so
``softmax`` of the merged pair is exactly ``(p_bg, Σ_{c≥1} p_c)``). Loss: ``λ_main·CE(main) + λ_aux·CE(aux)`` on the
binary target (the PSS weights 1.0 / 0.4). The saliency of a pixel is its foreground probability
(:func:`saliency_from_logits`).

Engineering choice, not from a paper: EPS uses PFAN trained on DUTS; a user of this workbench has VOC's masks, so
the saliency model is learnt from them (the classes of the source are the salient things here).
"""
from __future__ import annotations

import torch

from pss.data.labels import IGNORE_INDEX
from pss.losses import seg_ce
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits
from pss.models.segmenter import Segmenter


def foreground_target(label: torch.Tensor) -> torch.Tensor:
    """Binary target of a VOC label map: 0 background, 1 any object class, 255 kept. Shape: (N, H, W) -> same."""
    label = label.long()
    return torch.where(label == IGNORE_INDEX, label, (label > 0).long())


def foreground_logits(logits: torch.Tensor) -> torch.Tensor:
    """(background, foreground) logits: unchanged for 2 channels, else ``[x_0, logsumexp(x_1..)]``.

    Shape: (N, C, h, w) -> (N, 2, h, w)."""
    if logits.shape[1] == 2:
        return logits
    return torch.cat([logits[:, :1], torch.logsumexp(logits[:, 1:], dim=1, keepdim=True)], dim=1)


def saliency_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability per pixel. Shape: (N, C, h, w) -> (N, h, w) in [0, 1]."""
    return torch.softmax(foreground_logits(logits.float()), dim=1)[:, 1]


class Saliency(Method):
    """Class-agnostic foreground segmentation on the source masks (binary CE on the main and aux outputs)."""

    name = "saliency"
    Config = SegLossWeights

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        out = model(batch.source["image"])
        target = foreground_target(batch.source["label"])
        size = tuple(target.shape[-2:])
        cfg: SegLossWeights = self.config
        losses = {"source_fg_main": cfg.lambda_seg_main * seg_ce(foreground_logits(resize_logits(out.logits, size)),
                                                                  target)}
        if cfg.lambda_seg_aux > 0:
            losses["source_fg_aux"] = cfg.lambda_seg_aux * seg_ce(
                foreground_logits(resize_logits(out.aux_logits, size)), target)
        return StepLosses(losses)
