"""AdaptSegNet (Tsai et al., CVPR 2018): multi-level adversarial alignment in the output space.

Per step (methods.md §3): source CE; on target, the segmenter is trained so that two fully convolutional
discriminators — one on the softmax of the main output, one on the softmax of the aux output — take
the target predictions for source (generator side, weights 0.001 main / 0.0002 aux); then the
discriminators learn source -> 0, target -> 1 on the detached softmax maps, each loss ×1/2.
The scheme is :class:`~pss.methods.adversarial.OutputSpaceAdversarial`; the difference from ADVENT is only
the discriminator input: softmax probabilities (output space) instead of weighted self-information (entropy) maps.

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

from pss.methods.adversarial import AdversarialConfig, OutputSpaceAdversarial


@dataclass
class AdaptSegConfig(AdversarialConfig):
    """Official multi-level weights (methods.md §3): adversarial 0.001 on the main output, 0.0002 on the aux
    output (``lambda_adv_aux = 0`` gives the single-level variant). The README notes that with its PyTorch-0.4
    code the multi-level model needs smaller weights (0.0005 / 0.00005); we keep the paper's values."""


class AdaptSeg(OutputSpaceAdversarial):
    """Output-space adversarial adaptation (AdaptSegNet eq. 4-5, multi-level)."""

    name = "adaptseg"
    Config = AdaptSegConfig

    def discriminator_input(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)
