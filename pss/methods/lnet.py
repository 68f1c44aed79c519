"""L-Net's class activation maps without a saliency map (issue 18): a ``pss.models.cam.CAMNet`` trained on the
image-level tags alone, ``λ_cls·L_cls`` = multi-label soft margin on the GAP of the C object maps (the CAM of Zhou
et al. 2016 with EPS's C+1-map network, ``pss.methods.eps`` without its saliency term).

Used by ``pss.weak.transfer`` when there is no class-agnostic object map to act as EPS's saliency (no strong object
class: the abstract's 0 % setting); otherwise the transfer pipeline trains EPS with L-Net's object map as the
saliency (our choice: the object map is the class-agnostic foreground EPS's saliency stands for). The batches are
the split source images with their complete tags (``pss.data.strong_weak``), drawn as the loop's ``source`` stream.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pss.data.tags import batch_tags20
from pss.losses import multilabel_soft_margin
from pss.methods.base import Method, StepBatch, StepLosses


@dataclass
class CAMClsConfig:
    lambda_cls: float = 1.0


class CAMCls(Method):
    """Multi-label classification of a ``CAMNet`` from the ``tags`` batch field."""

    name = "cam_cls"
    Config = CAMClsConfig
    streams = ("source",)
    fields = ("tags",)

    def segmenter_losses(self, model: nn.Module, batch: StepBatch) -> StepLosses:
        out = model(batch.source["image"])
        tags = batch_tags20(batch.source["tags"]).float()
        return StepLosses({"cam_cls": self.config.lambda_cls * multilabel_soft_margin(out.logits[:, 1:], tags)})
