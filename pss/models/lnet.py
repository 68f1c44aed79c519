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
* Self-diffusion, our form (:func:`propagate_within`): each seed class spreads through O along the cheapest
  path, a geodesic distance on the 8-neighbour pixel graph of O with step cost
  ``|I_p - I_q|^2 / (2 sigma^2) + step_cost * |p - q|`` (RGB in [0, 1], sigma 0.1, step_cost 0.01), computed by
  Bellman-Ford relaxation to convergence. Edges leaving O are cut, so a class never spreads into background; colour
  edges make crossing from one object into a touching one expensive; the small length term breaks ties inside a
  uniform region by proximity. Chosen over (a) the CAMs' own argmax, which stops at the discriminative parts; (b) an
  averaging diffusion (label propagation, ``P <- W P``: its mass falls by the averaging factor at every step, so a
  seed's reach into a large object depends on the number of iterations and a float threshold: on 24 demo source
  images with M = the true foreground and one seed pixel per class, max(H, W) Jacobi steps decided 46 % of the
  object pixels (sigma 0.1; 69 % ignoring colour), the geodesic propagation 96 %, every pixel 8-connected to a
  seed, at a coarse-label mIoU of 0.92); (c) a learnt random walk
  (AffinityNet, ``pss.models.affinity``: a further trained stage whose labels would come from the very CAMs being
  propagated). It needs no training and no label.
* Assignment: a pixel of O takes the class of the nearest seed (geodesic) when one reaches it and the second
  nearest class is at least ``margin`` further (in cost units: a likelihood ratio of ``e^margin`` under
  ``exp(-distance)``); otherwise 255 (unreached: an object part no seed connects to; contested: between two classes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pss.data.labels import IGNORE_INDEX

NEIGHBOURS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                                                if (dy, dx) != (0, 0))


@dataclass(frozen=True)
class DiffusionConfig:
    """The coarse-label settings (all ours, module docstring). ``iterations``: the most relaxation sweeps (None: as
    many as O has pixels, always enough; the sweeps stop as soon as nothing changes)."""

    object_threshold: float = 0.5
    background_threshold: float = 0.3
    seed_threshold: float = 0.5
    sigma: float = 0.1
    step_cost: float = 0.01
    iterations: int | None = None
    margin: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_threshold <= self.object_threshold <= 1.0:
            raise ValueError("need 0 <= background_threshold <= object_threshold <= 1, got "
                             f"{self.background_threshold} and {self.object_threshold}")
        if not 0.0 < self.seed_threshold <= 1.0:
            raise ValueError(f"seed_threshold must be in (0, 1], got {self.seed_threshold}")
        if self.sigma <= 0 or self.step_cost < 0 or self.margin < 0 or (
                self.iterations is not None and self.iterations < 0):
            raise ValueError("need sigma > 0, step_cost >= 0, margin >= 0 and iterations >= 0")


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, ``fill`` outside the map. Shape: (K, H, W) -> (K, H, W)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    padded = F.pad(x, (1, 1, 1, 1), value=fill)
    return padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def propagate_within(seeds: torch.Tensor, region: torch.Tensor, image: torch.Tensor, sigma: float = 0.1,
                     step_cost: float = 0.01, iterations: int | None = None) -> torch.Tensor:
    """Geodesic distance of every pixel of ``region`` to each class's seeds (module docstring): the cheapest
    8-neighbour path inside the region, step cost ``|I_p - I_q|^2 / (2 sigma^2) + step_cost * |p - q|``.

    Args:
        seeds: (K, H, W) bool seed maps (seeds outside ``region`` are dropped).
        region: (H, W) bool, the pixels the labels may reach.
        image: (3, H, W) RGB in [0, 1] (the step costs).
        iterations: the most relaxation sweeps (None: the region's pixel count, enough for any path).

    Shape: -> (K, H, W) float32, 0 on a class's seeds, ``inf`` where no seed of the class reaches (and outside)."""
    inf = float("inf")
    seeds = seeds.bool() & region
    image = image.float()
    costs = []
    for dy, dx in NEIGHBOURS:
        colour = (image - _shift(image, dy, dx)).pow(2).sum(dim=0) / (2 * sigma ** 2)
        step = colour + step_cost * math.hypot(dy, dx)
        both = region & _shift(region[None].float(), dy, dx)[0].bool()
        costs.append(torch.where(both, step, torch.full_like(step, inf)))
    distance = torch.where(seeds, torch.zeros(seeds.shape, device=image.device), torch.full(seeds.shape, inf,
                                                                                              device=image.device))
    sweeps = int(region.sum()) if iterations is None else iterations
    for _ in range(sweeps):
        best = distance
        for (dy, dx), cost in zip(NEIGHBOURS, costs, strict=True):
            best = torch.minimum(best, _shift(distance, dy, dx, inf) + cost)
        if torch.equal(best, distance):
            break
        distance = best
    return distance


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
    seeds = F.one_hot(best, int(classes.numel())).permute(2, 0, 1).bool() & is_seed
    distance = propagate_within(seeds, region, image.to(objectness.device), config.sigma, config.step_cost,
                                config.iterations)
    if distance.shape[0] > 1:
        two = distance.topk(2, dim=0, largest=False)
        nearest, index = two.values[0], two.indices[0]
        lead = two.values[1] - nearest  # inf when only one class reaches
    else:
        nearest, index = distance[0], torch.zeros_like(label, dtype=torch.long)
        lead = torch.full_like(nearest, float("inf"))
    winner = (classes[index] + 1).to(torch.uint8)  # scores channel i = class i + 1
    sure = region & torch.isfinite(nearest) & (lead >= config.margin)
    label[sure] = winner[sure]
    return label
