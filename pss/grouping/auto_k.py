"""Label-free choices of a user's groups: K by silhouette (Table 4 "auto") and size-matched random groups (the
Table 3 control for "the k-means groups carry information").

The paper fixes K = 80 for every user and leaves choosing K per user open (§5.4, Table 4). ``silhouette_k`` picks,
for one user, the K of a grid whose k-means groups have the highest mean silhouette on the grouping features
(cosine distance, the geometry of L2-normalised ImageNet features): no label is used.

Example::

    choice = silhouette_k(features, (2, 4, 8, 16, 32, 80), seed=0)
    choice.k, choice.scores          # the chosen K and the silhouette of every K tried
    random_groups(kmeans_groups(features, choice.k), seed=0)   # same group sizes, members at random
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pss.errors import ConfigError
from pss.grouping.cluster import effective_k, kmeans_groups

DEFAULT_K_GRID: tuple[int, ...] = (2, 3, 5, 8, 12, 20, 35, 80)


@dataclass(frozen=True)
class KChoice:
    """The K chosen for one collection and the mean silhouette of every K tried (after the ``effective_k`` cap)."""

    k: int
    scores: dict[int, float]


def silhouette_k(features: np.ndarray, grid: Sequence[int] = DEFAULT_K_GRID, seed: int = 0) -> KChoice:
    """The K of ``grid`` (each capped by ``effective_k``; K >= 2) whose k-means groups have the highest mean
    silhouette (cosine); ties go to the smaller K. Fewer than 2 usable K: K = 1 with no score.

    Shape:
        features: (n, d) float.
    """
    from sklearn.metrics import silhouette_score

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ConfigError(f"features must be a 2-D (n, d) array, got shape {features.shape}")
    if not grid or min(grid) < 1:
        raise ConfigError(f"grouping.k_grid must list numbers of groups >= 1, got {list(grid)}")
    n = features.shape[0]
    candidates = sorted({effective_k(n, k) for k in grid} - {0, 1})
    scores: dict[int, float] = {}
    for k in candidates:
        labels = kmeans_groups(features, k, seed=seed)
        if 2 <= len(np.unique(labels)) < n:  # silhouette needs 2 <= groups < images
            scores[k] = float(silhouette_score(features, labels, metric="cosine"))
    if not scores:
        return KChoice(1, {})
    best = max(scores.values())
    return KChoice(min(k for k, v in scores.items() if v == best), scores)


def random_groups(labels: np.ndarray, seed: int) -> np.ndarray:
    """Groups with exactly the sizes of ``labels`` whose members are drawn at random (a permutation of the ids).

    Shape:
        labels: (n,) int group ids -> (n,) int group ids with the same count per id.
    """
    labels = np.asarray(labels)
    return labels[np.random.default_rng(seed).permutation(labels.shape[0])]
