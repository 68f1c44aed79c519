"""AffinityNet training (Ahn & Kwak, CVPR 2018; psa facts in methods.md §10) on confident pseudo-mask regions.

The batches (the loop's ``source`` stream: the set this stage is supervised on, as for ``pss.methods.eps``) are
the user's tagged images whose ``label`` is the affinity label map of their
pseudo mask (``pss.weak.pipeline.affinity_label_map``: confident background 0, confident class c, uncertain 255),
augmented with the image like any label. The labels go to the feature grid by nearest-neighbour sampling (psa
pools the score maps by 8 before the argmax; sampling a label map at the cell centres is the hard-label analogue),
the pairs are psa's (radius 5, interior "from" pixels: ``pss.models.affinity.pair_indices``) and the loss is
``bg/4 + fg/4 + neg/2`` (``pss.losses.affinity_loss``). ``model`` is a ``pss.models.affinity.AffinityNet``.

The pair index tensors of a grid size are cached on the method (not saved: they are a function of the size).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pss.losses import affinity_loss, affinity_pair_labels
from pss.methods.base import Method, StepBatch, StepLosses
from pss.models.affinity import PSA_RADIUS, pair_affinities, pair_indices


@dataclass
class AffinityConfig:
    radius: int = PSA_RADIUS
    lambda_aff: float = 1.0

    def __post_init__(self) -> None:
        if self.radius < 2:
            raise ValueError(f"radius must be >= 2 (official 5), got {self.radius}")


def labels_on_grid(label: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour sampling of (N, H, W) label maps onto an (h, w) grid. Shape: -> (N, h, w) long."""
    return F.interpolate(label[:, None].float(), size=grid, mode="nearest")[:, 0].long()


class Affinity(Method):
    """psa's three-part affinity loss on the pairs within ``radius`` of the stride-8 grid."""

    name = "affinity"
    Config = AffinityConfig
    streams = ("source",)  # the stage's own training set (module docstring)

    def __init__(self, config: AffinityConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self._pairs: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def pairs(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (grid[0], grid[1], str(device))
        if key not in self._pairs:
            index_from, index_to = pair_indices(grid[0], grid[1], self.config.radius, interior_only=True)
            if index_from.numel() == 0:
                raise ValueError(f"a {grid[0]}x{grid[1]} feature grid has no interior pair for radius "
                                 f"{self.config.radius}: it needs at least {self.config.radius} rows and "
                                 f"{2 * self.config.radius - 1} columns; use a larger crop (data.crop)")
            self._pairs[key] = (index_from.to(device), index_to.to(device))
        return self._pairs[key]

    def segmenter_losses(self, model: nn.Module, batch: StepBatch) -> StepLosses:
        features = model(batch.source["image"]).features
        grid = (int(features.shape[2]), int(features.shape[3]))
        index_from, index_to = self.pairs(grid, features.device)
        labels = affinity_pair_labels(labels_on_grid(batch.source["label"], grid), index_from, index_to)
        terms = affinity_loss(pair_affinities(features, index_from, index_to), labels)
        return StepLosses({"affinity": self.config.lambda_aff * terms.loss})
