"""No-DA: supervised training on the labelled source only (the paper's "No-DA" row)."""
from __future__ import annotations

from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, supervised_losses
from pss.models.segmenter import Segmenter


class SourceOnly(Method):
    """``L = λ_main·CE(main) + λ_aux·CE(aux)`` on source batches (paper eq. 1; methods.md §1.3)."""

    name = "source_only"
    Config = SegLossWeights

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        out = model(batch.source["image"])
        return StepLosses(supervised_losses(out, batch.source["label"], self.config, "source"))
