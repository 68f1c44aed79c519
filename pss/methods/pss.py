"""PSS (Zhang et al., ICCV 2021): ADVENT + the group region context, in two steps.

* ``pss`` = OURS-S1: ADVENT adversarial entropy adaptation of a segmenter whose context module is
  the group region context (paper §4.1–4.2); every batch comes from one k-means group.
* ``pss_s2`` = OURS-S2: the same, started from an S1 model, plus a pseudo-label segmentation loss
  ``L_pse`` on the easiest (lowest mean entropy) ``select_rate`` of the user's images (paper §4.3).
  Pseudo labels are built once before training (``pss.methods.pseudo.EntropyRankedPseudoConfig``); the loop feeds
  a pseudo batch
  every ``pseudo_every`` steps (the released code: every 2nd iteration, weights 1.0 main + 0.4 aux).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pss.methods.advent import Advent, AdventConfig
from pss.methods.pseudo import EntropyRankedPseudoConfig


class PSS(Advent):
    name = "pss"
    default_context = "group"


@dataclass
class PSSStep2Config(AdventConfig):
    pseudo: EntropyRankedPseudoConfig = field(default_factory=EntropyRankedPseudoConfig)


class PSSStep2(PSS):
    name = "pss_s2"
    Config = PSSStep2Config
    streams = ("source", "target", "pseudo")
    starts_from = "pss"

    def pseudo_policy(self) -> EntropyRankedPseudoConfig:
        return self.config.pseudo
