"""Grouping of a user's photos (paper §3.3): ImageNet features -> k-means (K per user) -> 2-D UMAP view.

Everything is cached by content hash under a workspace's ``cache/`` folder (see ``pss.grouping.cache``).

Example::

    from pss.grouping import group_user
    result = group_user(Path("WS/data/personal"), "id1", k=80, cache_dir=Path("WS/cache"))
    result.k, result.sizes(), result.members(0), result.embedding.shape   # (n, 2)
"""
from __future__ import annotations

from pss.grouping.auto_k import DEFAULT_K_GRID, KChoice, random_groups, silhouette_k
from pss.grouping.cluster import (DEFAULT_K, MIN_GROUP_SIZE, effective_k, group_images, kmeans_groups,
                                  umap_embedding)
from pss.grouping.features import (FEATURE_MODELS, INPUT_SIZE, PREP_VERSION, FeatureSet, SkippedImage,
                                   extract_features, feature_namespace)
from pss.grouping.result import GroupingResult
from pss.grouping.user import export_cluster_list, group_records, group_user, load_grouping

__all__ = [
    "DEFAULT_K", "DEFAULT_K_GRID", "FEATURE_MODELS", "KChoice", "random_groups", "silhouette_k", "INPUT_SIZE",
    "MIN_GROUP_SIZE", "PREP_VERSION", "FeatureSet", "GroupingResult",
    "SkippedImage", "effective_k", "export_cluster_list", "extract_features", "feature_namespace", "group_images",
    "group_records", "group_user", "kmeans_groups", "load_grouping", "umap_embedding",
]
