"""L-Net's label transfer (issue 18; Xiao et al., AAAI 2018, methods.md §11): coarse pixel labels for an image
with image-level labels, from a class-agnostic object map M and class activation maps.

What the sources say: the abstract — L-Net "learns to transfer the segmentation knowledge from strong categories
to the images in the weak categories and produces coarse pixel-level semantic maps, by effectively exploiting the
similar appearance shared across categories"; a summary of the paper's Fig. 2 (methods.md §11) — L-Net gives a
class-agnostic map M, and class-wise activation maps are propagated within M by a "self-diffusion" algorithm.

Everything below is **our** reading of that, not the paper's (unavailable) algorithm:

* M is the foreground probability of a segmenter trained on strong-class pixels only (``pss.weak.transfer``);
  objectness transfers because objects of different classes look alike as "objects" (the abstract's shared
  appearance). Three regions: object ``O = {M >= object_threshold}``, background ``{M < background_threshold}``
  (label 0), the band between (255: neither region is sure).
* Seeds: a pixel of O whose largest tag-restricted CAM score (``pss.models.cam.multiscale_cam_scores``, each class
  max-normalised) is at least ``seed_threshold`` is a seed of that class. CAMs are peaky (they fire on the most
  discriminative parts) but say *which* class; M has the extent but no class: the seeds carry the class, M the
  extent.
* Self-diffusion (:func:`diffuse_within`): label propagation of the seeds' one-hot maps over the 8-neighbour pixel
  graph of O, edge weight ``exp(-|I_p - I_q|^2 / (2 sigma^2))`` on the RGB colour in [0, 1] (sigma 0.1), seeds
  clamped, ``iterations`` Jacobi steps of ``P_p <- sum_q w_pq P_q / sum_q w_pq`` (q over p's neighbours in O and
  p itself). Edges leaving O are cut, so a class never spreads into background; colour edges slow it across
  boundaries between two objects. Chosen over the CAMs' own argmax (which stops at the discriminative parts) and
  over a learnt random walk (AffinityNet, ``pss.models.affinity``: a further trained stage, and its labels would
  come from the very CAMs being propagated); the diffusion needs no training and no label.
* Assignment: a pixel of O takes the class with the most diffused mass when it was reached (mass > 0) and the top
  class leads the second by at least ``margin`` of the normalised mass; otherwise 255 (unreached: an object part
  no seed connects to; contested: between two classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pss.data.labels import IGNORE_INDEX

NEIGHBOURS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                                                if (dy, dx) != (0, 0))


@dataclass(frozen=True)
class DiffusionConfig:
    """The coarse-label settings (all ours, module docstring)."""

    object_threshold: float = 0.5
    background_threshold: float = 0.3
    seed_threshold: float = 0.5
    sigma: float = 0.1
    iterations: int | None = None  # None: the larger side of the map (enough to cross O along a straight path)
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_threshold <= self.object_threshold <= 1.0:
            raise ValueError("need 0 <= background_threshold <= object_threshold <= 1, got "
                             f"{self.background_threshold} and {self.object_threshold}")
        if not 0.0 < self.seed_threshold <= 1.0:
            raise ValueError(f"seed_threshold must be in (0, 1], got {self.seed_threshold}")
        if self.sigma <= 0 or (self.iterations is not None and self.iterations < 0) or not 0 <= self.margin < 1:
            raise ValueError("need sigma > 0, iterations >= 0 and 0 <= margin < 1")


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, 0 outside the map. Shape: (K, H, W) -> (K, H, W)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def diffuse_within(seeds: torch.Tensor, region: torch.Tensor, image: torch.Tensor, sigma: float = 0.1,
                   iterations: int = 10) -> torch.Tensor:
    """Self-diffusion of seed maps inside ``region`` (module docstring): clamped label propagation on the
    8-neighbour graph of the region, colour-weighted edges.

    Args:
        seeds: (K, H, W) one-hot seed maps (at most one class per pixel; all 0 where no seed).
        region: (H, W) bool, the pixels the labels may reach (seeds outside it are dropped).
        image: (3, H, W) RGB in [0, 1] (the edge weights).

    Shape: -> (K, H, W) float32 diffused mass, 0 outside ``region``; seed pixels keep their one-hot."""
    region_f = region.float()
    seeds = seeds.float() * region_f
    seeded = seeds.sum(dim=0) > 0
    image = image.float()
    weights = []
    for dy, dx in NEIGHBOURS:
        distance = (image - _shift(image, dy, dx)).pow(2).sum(dim=0)
        weights.append(torch.exp(-distance / (2 * sigma ** 2)) * region_f * _shift(region_f[None], dy, dx)[0])
    norm = 1.0 + torch.stack(weights).sum(dim=0)  # the self loop has weight 1
    mass = seeds.clone()
    for _ in range(iterations):
        total = mass.clone()
        for (dy, dx), weight in zip(NEIGHBOURS, weights, strict=True):
            total += weight * _shift(mass, dy, dx)
        mass = torch.where(seeded, seeds, total / norm * region_f)
    return mass


def coarse_labels(image: torch.Tensor, objectness: torch.Tensor, scores: torch.Tensor,
                  config: DiffusionConfig = DiffusionConfig()) -> torch.Tensor:
    """L-Net's coarse label map of one image (module docstring).

    Args:
        image: (3, H, W) RGB in [0, 1].
        objectness: (H, W) the class-agnostic object map M in [0, 1].
        scores: (20, H, W) tag-restricted, max-normalised class scores (``multiscale_cam_scores``; untagged
            classes 0 everywhere, so they never seed).

    Shape: -> (H, W) uint8: 0 background, c (1..20) a tagged class, 255 uncertain."""
    height, width = int(objectness.shape[0]), int(objectness.shape[1])
    objectness = objectness.float()
    label = torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8, device=objectness.device)
    label[objectness < config.background_threshold] = 0
    region = objectness >= config.object_threshold
    classes = torch.nonzero(scores.flatten(1).amax(dim=1) > 0).flatten()  # the tagged classes with any score
    if classes.numel() == 0 or not bool(region.any()):
        return label
    tagged = scores[classes].float()  # (K, H, W)
    peak, best = tagged.max(dim=0)
    is_seed = region & (peak >= config.seed_threshold)
    seeds = F.one_hot(best, int(classes.numel())).permute(2, 0, 1).float() * is_seed.float()
    steps = config.iterations if config.iterations is not None else max(height, width)
    mass = diffuse_within(seeds, region, image.to(objectness.device), config.sigma, steps)
    total = mass.sum(dim=0)
    share = mass / total.clamp_min(1e-12)
    if share.shape[0] > 1:
        top2 = share.topk(2, dim=0).values
        lead = top2[0] - top2[1]
    else:
        lead = share[0]
    winner = (classes[share.argmax(dim=0)] + 1).to(torch.uint8)  # scores channel i = class i + 1
    sure = region & (total > 1e-6) & (lead >= config.margin)
    label[sure] = winner[sure]
    return label
