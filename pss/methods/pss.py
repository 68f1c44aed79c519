"""PSS (Zhang et al., ICCV 2021): ADVENT + the group region context, in two steps.

* ``pss`` = OURS-S1: ADVENT adversarial entropy adaptation of a segmenter whose context module is
  the group region context (paper §4.1–4.2); every batch comes from one k-means group.
* ``pss_s2`` = OURS-S2: the same, started from an S1 model, plus a pseudo-label segmentation loss
  ``L_pse`` on the easiest (lowest mean entropy) ``select_rate`` of the user's images (paper §4.3).
  Pseudo labels are built once before training by ``pss.engine.pseudo``; the loop feeds a pseudo batch
  every ``pseudo_every`` steps (the released code: every 2nd iteration, weights 1.0 main + 0.4 aux).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pss.methods.advent import Advent, AdventConfig


class PSS(Advent):
    name = "pss"
    default_context = "group"


@dataclass
class EntropyRankedPseudoConfig:
    """How step 2 builds pseudo labels (paper §4.3, §5.2; methods.md §1.6 for the released code).

    select_rate: fraction r of the user's images, ranked by mean pixel entropy, used as pseudo-labelled
        (paper: r = 0.5; released code 0.6/0.67).
    pixel_keep_rate: inside a selected image, the fraction of pixels kept, lowest entropy first; the rest
        are set to 255 ("the masked pseudo label pixels are set to 255"). 1.0 = the released code's full
        argmax maps.
    pseudo_every: train a pseudo batch every this many steps (released code: 2).
    """

    select_rate: float = 0.5
    pixel_keep_rate: float = 0.8
    pseudo_every: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.select_rate <= 1 or not 0 < self.pixel_keep_rate <= 1:
            raise ValueError("select_rate and pixel_keep_rate must be in (0, 1]")
        if self.pseudo_every < 1:
            raise ValueError("pseudo_every must be >= 1")


@dataclass
class PSSStep2Config(AdventConfig):
    pseudo: EntropyRankedPseudoConfig = field(default_factory=EntropyRankedPseudoConfig)


class PSSStep2(PSS):
    name = "pss_s2"
    Config = PSSStep2Config
    uses_pseudo = True
