"""k-means groups (paper §3.3, methods.md §1.5) and a 2-D UMAP view of image features.

The official ``pre_cluster.py`` runs ``KMeans(n_clusters=K, random_state=0)`` with the n_init=10 default
of old scikit-learn; scikit-learn >= 1.4 defaults to ``n_init="auto"`` (one run with k-means++), so we
pin ``n_init=10``. K is 80 per user in the paper (users have ~700 photos) and 500 for VOC.

Example::

    k = effective_k(len(features), 80)
    groups = kmeans_groups(features, k, seed=0)     # (n,) ints in [0, k)
    xy = umap_embedding(features, seed=0)           # (n, 2)
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from pss.data.records import ImageRecord
from pss.errors import ConfigError

DEFAULT_K = 80  # groups per user in the paper
MIN_GROUP_SIZE = 4  # average images per group we keep at least (half the paper's batch of 8, one GPU's share)
UMAP_MIN_IMAGES = 10  # below this UMAP's spectral init fails or is meaningless: use PCA instead
UMAP_NEIGHBORS = 15  # umap-learn's default


def effective_k(n_images: int, k: int = DEFAULT_K, min_group_size: int = MIN_GROUP_SIZE) -> int:
    """The number of groups actually used for ``n_images`` images when ``k`` is requested.

    ``min(k, n_images // min_group_size)``, at least 1 (0 only when there are no images). Why the cap:
    the trainer fills a batch from one group and repeats small groups' images to fill it, and the group
    context module attends over the group; with K=80 on a 60-image user most groups would be singletons
    and the group context would collapse to per-image context. ``n // 4`` keeps an average group of at
    least 4 images (the paper's 700-image users with K=80 have ~9) and leaves large users uncapped.
    """
    if k < 1:
        raise ConfigError(f"the number of groups k must be >= 1, got {k}")
    if min_group_size < 1:
        raise ConfigError(f"min_group_size must be >= 1, got {min_group_size}")
    if n_images <= 0:
        return 0
    return max(1, min(k, n_images // min_group_size))


def _relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber groups 0, 1, ... in order of their first member, so ids do not depend on k-means internals."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    mapping = np.empty(labels.max() + 1, dtype=np.int64)
    mapping[np.unique(labels)[order]] = np.arange(order.size)
    return mapping[labels]


def kmeans_groups(features: np.ndarray, k: int, seed: int = 0, n_init: int = 10,
                  n_threads: int | None = 1) -> np.ndarray:
    """Group feature vectors with k-means (Lloyd, k-means++ init, best of ``n_init`` runs).

    ``k`` is used as given except that it never exceeds the number of *distinct* vectors (duplicate
    photos would otherwise leave empty clusters). Group ids are renumbered by first appearance.

    ``n_threads`` caps scikit-learn's OpenMP/BLAS threads (``None``: all cores). The default is 1 because
    a user's k-means (1,000 x 1280, K=80, n_init=10) needs only ~1.2-3 CPU-seconds, while on a 2-core box
    busy with other jobs (a training run) the 2-thread version was measured 3.5-13x slower in wall time
    (OpenMP threads spin-waiting on descheduled peers). Pass ``None`` for large sets (VOC, K=500).

    Shape:
        features: (n, d) float.
        returns: (n,) int64 group ids in [0, k_used).
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ConfigError(f"features must be a 2-D (n, d) array, got shape {features.shape}")
    if k < 1:
        raise ConfigError(f"the number of groups k must be >= 1, got {k}")
    n = features.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k_used = min(k, np.unique(features, axis=0).shape[0])
    if k_used == 1:
        return np.zeros(n, dtype=np.int64)
    # float64 on purpose: for float32 input, scikit-learn's k-means++ init re-upcasts the whole matrix for
    # every candidate centre (measured 40 % slower in total for 1,000 x 1280, K=80).
    with threadpool_limits(limits=n_threads):
        labels = KMeans(n_clusters=k_used, n_init=n_init, random_state=seed).fit_predict(features.astype(np.float64))
    return _relabel_by_first_appearance(labels.astype(np.int64))


def umap_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D embedding for the groups scatter plot: UMAP, or PCA for fewer than ``UMAP_MIN_IMAGES`` images.

    ``n_neighbors`` = min(15, n - 1). With a fixed ``random_state`` UMAP is deterministic but single-threaded.
    Note the first UMAP call in a process spends ~10 s compiling (numba); later calls take ~1 s for 700 images.

    Shape:
        features: (n, d) float.
        returns: (n, 2) float32.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ConfigError(f"features must be a 2-D (n, d) array, got shape {features.shape}")
    n = features.shape[0]
    if n < 2 or np.ptp(features, axis=0).max(initial=0.0) == 0.0:
        return np.zeros((n, 2), dtype=np.float32)  # nothing to spread out
    if n < UMAP_MIN_IMAGES:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(features)
        return xy.astype(np.float32)
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(UMAP_NEIGHBORS, n - 1), random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        # Small users often give a disconnected k-NN graph; UMAP handles it and says so, which is not news here.
        warnings.filterwarnings("ignore", message=".*disconnected.*")
        warnings.filterwarnings("ignore", message=".*not connected.*")
        xy = reducer.fit_transform(features)
    return np.asarray(xy, dtype=np.float32)


def group_images(records: Sequence[ImageRecord], features: np.ndarray, k: int, seed: int = 0,
                 min_group_size: int = MIN_GROUP_SIZE, n_threads: int | None = 1) -> dict[str, int]:
    """Group any image collection (a user's photos, or the VOC source: the official code uses 500 groups).

    Args:
        records: one record per feature row (``records[i]`` has ``features[i]``).
        features: (n, d) feature rows.
        k: requested number of groups; capped by ``effective_k``.
        n_threads: see ``kmeans_groups``; pass ``None`` (all cores) for VOC-sized sets.

    Returns:
        image name -> group id, the same mapping ``pss.data.pss_layout.write_cluster_list`` takes.
    """
    if len(records) != len(features):
        raise ConfigError(f"{len(records)} records but {len(features)} feature rows; they must match one to one")
    names = [record.name for record in records]
    if len(set(names)) != len(names):
        raise ConfigError("image names must be unique within a collection to be grouped")
    labels = kmeans_groups(features, effective_k(len(records), k, min_group_size), seed=seed, n_threads=n_threads)
    return {name: int(group) for name, group in zip(names, labels, strict=True)}
