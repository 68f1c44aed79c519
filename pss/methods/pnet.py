"""P-Net, the prediction transfer network of transferable semi-supervised segmentation (issue 18; Xiao et al., AAAI
2018, methods.md §11): the segmenter trained on the strong classes' pixel labels and L-Net's coarse labels of the
weak-class images, refined by "a carefully designed adversarial learning strategy" (the abstract; nothing more of
the strategy is known here).

Our design (every item an engineering choice, not the paper's):

* **Data**: one stream, the split source images (``pss.weak.transfer``): ``label`` = the strong labels where known
  and L-Net's coarse labels on the weak-class images (255 where L-Net was unsure); ``tags`` (declared field) = the
  full image-level tags, which tell a weak-class image (a tag outside the strong classes) from a strong one.
* **Segmenter loss**: ``λ_main·CE + λ_aux·CE`` on that label (the PSS weights 1.0 / 0.4, ``supervised_losses``)
  plus, on the weak-class images of the batch, the generator term ``λ_adv·BCE(D(image, softmax), real)``.
* **Discriminator** (a mask discriminator on (image, mask) pairs, as Luc et al. 2016, "Semantic Segmentation using
  Adversarial Networks"): the ADVENT fully convolutional discriminator (``pss.models.discriminator``) on the
  concatenation of the RGB image in [0, 1] and a C-channel mask, so ``C + 3`` input channels. Real: the one-hot
  ground-truth masks of the batch's strong images (every class in them is strong, so their labels are complete);
  fake: the softmax predictions on its weak-class images, detached. ``L_D = (BCE(D(real), 1) + BCE(D(fake), 0)) / 2``
  (:func:`mask_discriminator_loss`); a batch without both kinds trains D on the kind it has, halved (never on an
  empty set). Weights of Hung et al. 2018 ("Adversarial Learning for Semi-Supervised Semantic Segmentation"):
  ``λ_adv = 0.01``, Adam lr 1e-4, betas (0.9, 0.99), poly-decayed like the segmenter (the loop does).
* **Ignored pixels of a real mask** (VOC's 255 object boundaries, the crop's padding): one-hot has no value there;
  a zero vector would tell D "real" by itself. They take the prediction's detached softmax instead
  (:func:`real_masks`), so D judges only the labelled pixels.

Not registered alone in ``pss.methods.METHODS``: it needs the split's labels, which the engine's streams cannot
give; the registered pipeline ``transfer`` (``pss.methods.transfer``, a subclass) builds them in its earlier stages
and trains this loss as its final stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pss.data.strong_weak import StrongWeakConfig
from pss.data.tags import batch_tags20
from pss.losses import bce_domain
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, resize_logits, supervised_losses
from pss.models.discriminator import build_discriminator
from pss.models.segmenter import Segmenter

if TYPE_CHECKING:
    from pss.config import TrainConfig

REAL, FAKE = 1, 0  # the discriminator's labels (Hung et al.: ground truth 1, prediction 0)


@dataclass
class PNetConfig(SegLossWeights, StrongWeakConfig):
    """P-Net settings: the split (``strong_classes`` / ``strong_fraction`` / ``split_seed`` / ``hide``), the
    segmentation weights and the adversarial ones (ours, after Hung et al. 2018; module docstring)."""

    lambda_adv: float = 0.01
    ndf: int = 64
    lr_d: float = 1e-4

    def __post_init__(self) -> None:
        StrongWeakConfig.__post_init__(self)
        if self.lambda_adv < 0 or self.lr_d <= 0 or self.ndf < 1:
            raise ValueError("need lambda_adv >= 0, lr_d > 0 and ndf >= 1")


def real_masks(label: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """One-hot ground-truth masks for the discriminator; pixels without a class (255, or any value >= C) take
    ``prob`` there (module docstring).

    Shape: label (N, H, W) long, prob (N, C, H, W) -> (N, C, H, W) float32."""
    num_classes = int(prob.shape[1])
    valid = label < num_classes
    one_hot = F.one_hot(torch.where(valid, label, torch.zeros_like(label)).long(), num_classes)
    one_hot = one_hot.permute(0, 3, 1, 2).to(prob.dtype)
    return torch.where(valid[:, None], one_hot, prob).float()


def pair_input(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The discriminator's (image, mask) pair. Shape: (N, 3, H, W), (N, C, H, W) -> (N, C + 3, H, W)."""
    return torch.cat([image.float(), mask.float()], dim=1)


def mask_discriminator_loss(discriminator: nn.Module, real: torch.Tensor | None,
                            fake: torch.Tensor | None) -> torch.Tensor:
    """``(BCE(D(real), 1) + BCE(D(fake), 0)) / 2`` over the (image, mask) pairs that are given (a missing side
    contributes nothing; at least one must be given)."""
    terms = []
    if real is not None and len(real):
        terms.append(bce_domain(discriminator(real), REAL))
    if fake is not None and len(fake):
        terms.append(bce_domain(discriminator(fake), FAKE))
    if not terms:
        raise ValueError("the mask discriminator needs real or fake pairs")
    return 0.5 * torch.stack(terms).sum()


class PNet(Method):
    """Strong + coarse-label CE, and a mask discriminator on (image, mask) pairs (module docstring)."""

    name = "pnet"
    Config = PNetConfig
    streams = ("source",)
    fields = ("tags",)
    weak_tags: torch.Tensor  # (C-1,) bool buffer: which of the 20 tag columns are weak classes

    def __init__(self, config: PNetConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.strong = config.strong(num_classes)
        weak = torch.zeros(num_classes - 1, dtype=torch.bool)
        for c in range(1, num_classes):
            weak[c - 1] = c not in self.strong
        self.register_buffer("weak_tags", weak, persistent=False)
        self.discriminator = build_discriminator(num_classes + 3, config.ndf)

    def build_optimizers(self, model: Segmenter, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        optimizers = super().build_optimizers(model, train)
        optimizers["critic"] = torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr_d,
                                                betas=(0.9, 0.99))
        return optimizers

    def weak_images(self, tags: torch.Tensor) -> torch.Tensor:
        """Which images of a batch have a weak-class tag. Shape: tags (N, 21) or (N, 20) -> (N,) bool."""
        return (batch_tags20(tags).to(self.weak_tags.device) > 0)[:, self.weak_tags].any(dim=1)

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: PNetConfig = self.config
        image, label = batch.source["image"], batch.source["label"]
        out = model(image)
        losses = supervised_losses(out, label, cfg, "source")
        weak = self.weak_images(batch.source["tags"]).to(image.device)
        strong = ~weak
        if cfg.lambda_adv <= 0:
            return StepLosses(losses)
        prob = torch.softmax(resize_logits(out.logits, tuple(label.shape[-2:])), dim=1)
        cache: dict[str, torch.Tensor] = {}
        if bool(weak.any()):
            fake = pair_input(image[weak], prob[weak])
            losses["weak_adv"] = cfg.lambda_adv * bce_domain(self.discriminator(fake), REAL)
            cache["fake"] = fake.detach()
        if bool(strong.any()):
            cache["real"] = pair_input(image[strong], real_masks(label[strong], prob[strong].detach()))
        return StepLosses(losses, cache)

    def critic_losses(self, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not cache:
            return {}
        return {"d_mask": mask_discriminator_loss(self.discriminator, cache.get("real"), cache.get("fake"))}

    def set_critics_trainable(self, trainable: bool) -> None:
        for p in self.discriminator.parameters():
            p.requires_grad_(trainable)
