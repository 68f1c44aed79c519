"""AffinityNet (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity with Image-level Supervision";
facts of the official psa code in methods.md §10) and its random walk, used here as the reproduction report
(``papers/eps_affinitynet_reproduction_zh.txt`` §4.1, "the report" below; its eq. 5-6) does: to refine the EPS
pseudo masks.

* Pairs (the report's eq. 6, psa ``get_indices_of_pairs``): on the stride-8 feature grid, every pixel i and the
  neighbours j at Euclidean distance < radius (5) in the "forward" half-plane (same row to the right, or a lower
  row), so that each unordered pair appears once: 34 offsets for radius 5. For training, psa takes as "from" pixels
  only those whose 34 neighbours all lie inside the grid (rows ``0..h-r``, columns ``r-1..w-r``): ``34·(h-4)·(w-8)``
  pairs for radius 5 (:func:`pair_indices`, ``interior_only=True``). The random walk uses every in-grid pair.
* Affinity (the report's eq. 5, psa ``resnet38_aff``): ``W_ij = exp(-mean_c |f_i - f_j|)`` over the head's
  feature channels (psa takes the channel mean of the L1 distance; eq. 5 writes the L1 norm).
* Head (psa): 1x1 convs reduce backbone levels (psa: 512->64, 1024->128, 4096->256; here the backbone's ``mid`` and
  ``out`` maps), ELU each, concatenated, then a 1x1 conv + ELU: the affinity features f.
* Random walk (AffinityNet's CAM revision, psa ``infer_aff.py``): ``T = D^-1 W^beta`` with W the dense affinity
  matrix (symmetric, identity on the diagonal), normalised per column, ``vec(cam_rw) = vec(cam) · T^t`` with
  ``beta = 8`` and ``t = 2^logt = 256`` (psa squares T ``logt = 8`` times).

Memory bound of the random walk (:func:`random_walk`): the dense transition matrix of an h x w grid holds n² floats
(n = h·w); squaring it needs three such matrices, ``12·n²`` bytes (n = 2961 for a 500x375 image: 105 MB). It is
built only for grids of at most ``max_dense_nodes`` nodes (default 4096: ≤ 201 MB); otherwise (and whenever it is
cheaper, which for t = 256 is almost always) a sparse T (≤ 2·K+1 non-zeros per column, K = 34 offsets for radius
5) is applied t times: ``O(n·(2K+1) + n·classes)`` memory, the same result up to rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pss.models.backbones import Backbone, build_backbone
from pss.models.segmenter import ModelConfig

PSA_RADIUS: int = 5
PSA_BETA: float = 8.0
PSA_LOGT: int = 8  # t = 2 ** 8 = 256
MAX_DENSE_NODES: int = 4096


def pair_offsets(radius: int = PSA_RADIUS) -> list[tuple[int, int]]:
    """The (dy, dx) offsets of the forward half-neighbourhood: ``0 < dy² + dx² < radius²`` with ``dy > 0``, or
    ``dy == 0`` and ``dx > 0`` (each unordered pair once). 34 offsets for radius 5."""
    if radius < 2:
        raise ValueError(f"radius must be >= 2 (a pixel and its direct neighbour), got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        offsets += [(dy, dx) for dx in range(-radius + 1, radius) if dx * dx + dy * dy < radius * radius]
    return offsets


def pair_indices(height: int, width: int, radius: int = PSA_RADIUS,
                 interior_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (row-major) indices ``(from, to)`` of the pixel pairs of an h x w grid within ``radius``.

    ``interior_only`` (psa, training): only "from" pixels whose every offset stays inside the grid, i.e. rows
    ``0 .. h-radius`` and columns ``radius-1 .. w-radius``: ``len(pair_offsets(radius)) · (h-radius+1) ·
    (w-2·radius+2)`` pairs, grouped by offset. Otherwise every pair with both ends inside the grid.

    Shape: returns two (P,) int64 tensors.
    """
    r1 = radius - 1
    grid = torch.arange(height * width).view(height, width)
    froms, tos = [], []
    for dy, dx in pair_offsets(radius):
        if interior_only:
            rows, cols = slice(0, max(height - r1, 0)), slice(r1, max(width - r1, r1))
        else:
            rows, cols = slice(0, max(height - dy, 0)), slice(max(-dx, 0), max(width - max(dx, 0), 0))
        source = grid[rows, cols]
        target = grid[rows.start + dy:rows.stop + dy, cols.start + dx:cols.stop + dx]
        froms.append(source.reshape(-1))
        tos.append(target.reshape(-1))
    return torch.cat(froms), torch.cat(tos)


class AffinityHead(nn.Module):
    """Affinity features from the backbone's two levels: 1x1 conv + ELU on each, concatenated, 1x1 conv + ELU."""

    def __init__(self, mid_channels: int, out_channels: int, reduced: tuple[int, int] = (64, 128),
                 channels: int | None = None) -> None:
        super().__init__()
        self.reduce_mid = nn.Conv2d(mid_channels, reduced[0], 1, bias=False)
        self.reduce_out = nn.Conv2d(out_channels, reduced[1], 1, bias=False)
        joint = reduced[0] + reduced[1]
        self.fuse = nn.Conv2d(joint, channels or joint, 1, bias=False)
        for conv in (self.reduce_mid, self.reduce_out, self.fuse):
            nn.init.kaiming_normal_(conv.weight)

    def forward(self, mid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Shape: mid (N, Cm, h, w), out (N, Co, h, w) -> (N, channels, h, w)."""
        x = torch.cat([F.elu(self.reduce_mid(mid)), F.elu(self.reduce_out(out))], dim=1)
        return F.elu(self.fuse(x))


@dataclass
class AffinityOutput:
    """Shape: features (N, D, h, w) at the backbone's output stride."""

    features: torch.Tensor


class AffinityNet(nn.Module):
    """Backbone + :class:`AffinityHead`; inputs RGB in [0, 1]. Build with :func:`build_affinity_net`."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: Backbone, reduced: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        self.output_stride = backbone.output_stride
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.backbone = backbone
        self.head = AffinityHead(backbone.mid_channels, backbone.out_channels, reduced)

    def forward(self, x: torch.Tensor) -> AffinityOutput:
        """Shape: x (N, 3, H, W) in [0, 1] -> features (N, D, ceil(H/s), ceil(W/s))."""
        mid, out = self.backbone((x - self.mean) / self.std)
        return AffinityOutput(self.head(mid, out))


def build_affinity_net(cfg: ModelConfig, reduced: tuple[int, int] = (64, 128)) -> AffinityNet:
    return AffinityNet(build_backbone(cfg.backbone, cfg.pretrained, cfg.weights_path, cfg.output_stride), reduced)


def pair_affinities(features: torch.Tensor, index_from: torch.Tensor, index_to: torch.Tensor) -> torch.Tensor:
    """``W_ij = exp(-mean_c |f_i - f_j|)`` for each pair (the report's eq. 5 with psa's channel mean).

    Shape: features (N, D, h, w), indices (P,) -> (N, P) in (0, 1].
    """
    flat = features.float().flatten(2)  # (N, D, n)
    return torch.exp(-(flat[:, :, index_from] - flat[:, :, index_to]).abs().mean(dim=1))


def _transition_parts(features: torch.Tensor, radius: int, beta: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, columns and values of W^beta (both directions of every pair and the identity) and its column sums."""
    _, height, width = features.shape
    n = height * width
    index_from, index_to = pair_indices(height, width, radius, interior_only=False)
    index_from, index_to = index_from.to(features.device), index_to.to(features.device)
    aff = pair_affinities(features.unsqueeze(0), index_from, index_to)[0].pow(beta)
    diagonal = torch.arange(n, device=features.device)
    rows = torch.cat([index_from, index_to, diagonal])
    cols = torch.cat([index_to, index_from, diagonal])
    values = torch.cat([aff, aff, torch.ones(n, device=features.device)])
    column_sum = torch.zeros(n, device=features.device).index_add_(0, cols, values)
    return rows, cols, values, column_sum


WalkMethod = Literal["auto", "dense", "sparse"]


def random_walk(scores: torch.Tensor, features: torch.Tensor, beta: float = PSA_BETA, logt: int = PSA_LOGT,
                radius: int = PSA_RADIUS, max_dense_nodes: int = MAX_DENSE_NODES,
                method: WalkMethod = "auto") -> torch.Tensor:
    """Propagate score maps on the affinity graph: ``vec(s_rw) = vec(s) · T^(2^logt)``, ``T = W^beta`` with each
    column divided by its sum (AffinityNet's random walk, methods.md §10; psa ``infer_aff.py``).

    W is the affinity of every in-grid pair within ``radius``, both directions, plus 1 on the diagonal.
    ``method``: ``dense`` builds T and squares it ``logt`` times (psa; refused above ``max_dense_nodes`` nodes, the
    memory bound of the module docstring); ``sparse`` applies a sparse T ``2^logt`` times; ``auto`` takes the dense
    path only within the bound and when its ``logt·2n³`` multiply-adds are fewer than the sparse path's
    ``2^logt·2·nnz·K`` (small grids or short walks; for psa's t = 256 on a 500x375 image the sparse path is ~200x
    cheaper). Both give the same result up to rounding.

    Shape:
        scores: (K, h, w) on the feature grid; features: (D, h, w) affinity features -> (K, h, w).
    """
    k, height, width = scores.shape
    if tuple(features.shape[1:]) != (height, width):
        raise ValueError(f"scores grid {(height, width)} differs from the feature grid {tuple(features.shape[1:])}")
    if logt < 0:
        raise ValueError(f"logt must be >= 0, got {logt}")
    n = height * width
    if method == "dense" and n > max_dense_nodes:
        raise ValueError(f"a dense random walk on {height}x{width} = {n} nodes needs {12 * n * n / 2 ** 20:.0f} MiB; "
                         f"the bound is max_dense_nodes={max_dense_nodes}: use method='sparse' or 'auto'")
    rows, cols, values, column_sum = _transition_parts(features.float(), radius, beta)
    values = values / column_sum[cols]
    vec = scores.float().reshape(k, n)
    dense_cost = logt * 2.0 * n ** 3
    sparse_cost = 2.0 ** logt * 2.0 * len(values) * k
    if method == "dense" or (method == "auto" and n <= max_dense_nodes and dense_cost <= sparse_cost):
        transition = torch.zeros(n, n, device=features.device).index_put_((rows, cols), values, accumulate=True)
        for _ in range(logt):
            transition = transition @ transition
        return (vec @ transition).view(k, height, width)
    # transposed sparse T: (T^T @ v^T)^T = v @ T, one sparse product per step
    transposed = torch.sparse_coo_tensor(torch.stack([cols, rows]), values, (n, n),
                                         check_invariants=True).coalesce()
    out = vec.t().contiguous()
    for _ in range(2 ** logt):
        out = torch.sparse.mm(transposed, out)
    return out.t().reshape(k, height, width)


def to_grid(maps: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """Average-pool image-size maps onto the feature grid as psa does (zero-pad to ``stride·grid``, then
    ``avg_pool(stride)``).

    Shape: maps (K, H, W) -> (K, h, w) with (h, w) = grid.
    """
    height, width = grid[0] * stride, grid[1] * stride
    if maps.shape[1] > height or maps.shape[2] > width:
        raise ValueError(f"maps {tuple(maps.shape[1:])} exceed the grid {grid} at stride {stride}")
    padded = F.pad(maps.float(), (0, width - maps.shape[2], 0, height - maps.shape[1]))
    return F.avg_pool2d(padded.unsqueeze(0), stride)[0]


def from_grid(maps: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Bilinear upsampling of grid maps by ``stride`` (psa), cropped to the image ``size`` = (H, W).

    Shape: (K, h, w) -> (K, H, W)."""
    up = F.interpolate(maps.unsqueeze(0), scale_factor=stride, mode="bilinear", align_corners=False)[0]
    return up[:, : size[0], : size[1]]


def grid_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """(ceil(H/s), ceil(W/s)): the backbones' output grid for an H x W input."""
    return math.ceil(height / stride), math.ceil(width / stride)
