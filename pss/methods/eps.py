"""EPS, explicit pseudo-pixel supervision (Lee et al., CVPR 2021, "Railroad is not a Train: Saliency as
Pseudo-pixel Supervision for WSSS"; official facts methods.md §9): a CAM classifier with C+1 maps trained on the
user's image tags and saliency maps.

``L = λ_cls·L_cls + λ_sal·L_sal`` (``L_total = L_cls + L_sal``, the report
``papers/eps_affinitynet_reproduction_zh.txt`` §3.3; official weights 1 and 1): ``L_cls`` = multi-label soft
margin on the GAP of the C object maps (the report's eq. 4), ``L_sal`` = the saliency loss of its eq. 1-3
(``pss.losses.eps_saliency_loss``: τ = 0.4, λ = 0.5).

The model is a :class:`pss.models.cam.CAMNet` (not the segmenter). The batches are the user's tagged images with
the declared ``tags`` and ``saliency`` batch fields (``pss.data.datasets.SegDataset``), drawn as the loop's
``source`` stream: the loop's one mandatory stream is the set a stage is supervised on, and for this stage that
is the user's tagged images, not VOC (``pss.weak.pipeline.train_stage``). Untagged images must not be in it
(``pss.data.tags.user_tag_report`` lists them).

Optimiser choice: the loop's SGD over ``param_groups`` (backbone at LR, the 1x1 classifier at ``head_lr_mult`` x LR:
EPS uses 10x for fc8, set ``train.head_lr_mult=10``). EPS's ``PolyOptimizer`` passes its weight decay into SGD's
momentum slot (momentum 5e-4, methods.md §9 quirk); the loop's momentum is ``train.momentum``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pss.data.tags import batch_tags20
from pss.losses import EPS_LAMBDA, EPS_TAU, eps_saliency_loss, multilabel_soft_margin
from pss.methods.base import Method, StepBatch, StepLosses


@dataclass
class EPSConfig:
    tau: float = EPS_TAU
    lam: float = EPS_LAMBDA
    lambda_cls: float = 1.0
    lambda_sal: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau < 1.0:
            raise ValueError(f"tau (overlap ratio) must be in [0, 1) (official 0.4), got {self.tau}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1] (official 0.5), got {self.lam}")


class EPS(Method):
    """Classification + saliency loss on a C+1-map CAM classifier (``model`` is a ``CAMNet``)."""

    name = "eps"
    Config = EPSConfig
    streams = ("source",)  # the stage's own training set (module docstring)
    fields = ("tags", "saliency")

    def segmenter_losses(self, model: nn.Module, batch: StepBatch) -> StepLosses:
        cfg: EPSConfig = self.config
        out = model(batch.source["image"])
        tags = batch_tags20(batch.source["tags"]).float()
        terms = eps_saliency_loss(out.cams, tags, batch.source["saliency"], cfg.tau, cfg.lam)
        return StepLosses({"eps_cls": cfg.lambda_cls * multilabel_soft_margin(out.logits[:, 1:], tags),
                           "eps_sal": cfg.lambda_sal * terms.loss})
