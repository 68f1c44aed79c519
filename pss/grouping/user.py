"""Group one user's photos: features (cached per image) -> k-means -> 2-D embedding, cached per user.

A second ``group_user`` call on unchanged photos only hashes the files and reads one JSON file; a changed
or added photo re-extracts that photo's features and re-runs k-means and UMAP (k-means + UMAP take ~2-4 s
for 700 images on two CPU cores, plus ~10 s for UMAP's first call in a process).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from pss.data.pss_layout import read_user, write_cluster_list
from pss.data.records import ImageRecord
from pss.errors import DatasetError
from pss.grouping.cache import combined_key, file_sha1, grouping_path, read_json, write_json
from pss.grouping.cluster import DEFAULT_K, MIN_GROUP_SIZE, effective_k, kmeans_groups, umap_embedding
from pss.grouping.features import Progress, extract_features, feature_namespace
from pss.grouping.result import GroupingResult

log = logging.getLogger(__name__)

_ALGORITHM = "kmeans-n_init10+umap v1"  # part of the cache key: bump when clustering or embedding changes


def _scaled(progress: Progress | None, start: float, stop: float) -> Progress | None:
    """A progress callback mapping [0, 1] onto [start, stop] of the caller's bar."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (stop - start) * fraction, message)


def _inputs_key(records: Sequence[ImageRecord], namespace: str, k: int, seed: int) -> str:
    lines = [_ALGORITHM, namespace, f"k={k}", f"seed={seed}", f"min_group_size={MIN_GROUP_SIZE}"]
    for record in records:  # collection order matters: it is the order of names (and k-means' input)
        try:
            sha = file_sha1(record.image_path)
        except DatasetError:
            sha = "unreadable"
        lines.append(f"{record.name}\t{sha}")
    return combined_key(lines)


def load_grouping(cache_dir: Path, user: str, k: int = DEFAULT_K, seed: int = 0,
                  feature_model: str | None = None) -> GroupingResult | None:
    """The cached grouping of ``user`` for requested ``k`` and ``seed``, or ``None`` if none is usable.

    Does not check that the photos are unchanged (that is ``group_user``'s job); use it to show the last
    grouping instantly. ``feature_model`` (a namespace such as ``"lite0-p1"``), when given, must match.
    """
    payload = read_json(grouping_path(cache_dir, user, k, seed))
    if payload is None:
        return None
    try:
        result = GroupingResult.from_dict(payload)
    except DatasetError as exc:
        log.warning("ignoring cached grouping of %s: %s", user, exc)
        return None
    if result.user != user or (feature_model is not None and result.feature_model != feature_model):
        return None
    return result


def group_records(user: str, records: Sequence[ImageRecord], k: int = DEFAULT_K, cache_dir: Path | None = None,
                  device: torch.device | None = None, seed: int = 0, feature_model: str = "lite0",
                  progress: Progress | None = None, batch_size: int = 16) -> GroupingResult:
    """Group a list of image records (the body of ``group_user``; usable on any collection).

    Unreadable images are skipped and listed in ``GroupingResult.skipped``. With ``cache_dir`` the
    features and the result are cached (see ``pss.grouping.cache``); without it everything is recomputed.

    Raises:
        DatasetError: there are no records, or none of the images is readable.
    """
    if not records:
        raise DatasetError(f"user {user!r} has no images to group; check its JPEGImages folder")
    namespace = feature_namespace(feature_model)
    key = _inputs_key(records, namespace, k, seed)
    if cache_dir is not None:
        cached = load_grouping(cache_dir, user, k, seed, namespace)
        if cached is not None and cached.key == key:
            if progress is not None:
                progress(1.0, f"grouping of {user} loaded from the cache")
            return cached
    features = extract_features([r.image_path for r in records], feature_model, device, batch_size,
                                _scaled(progress, 0.0, 0.8), cache_dir)
    by_path = {path: i for i, path in enumerate(features.paths)}
    kept = [r for r in records if r.image_path in by_path]
    reasons = {s.path: s.reason for s in features.skipped}
    skip_reasons = {r.name: reasons[r.image_path] for r in records if r.image_path in reasons}
    if not kept:
        raise DatasetError(f"none of the {len(records)} images of user {user!r} could be read; "
                           f"first problem: {next(iter(skip_reasons.values()), 'unknown')}")
    rows = features.features[[by_path[r.image_path] for r in kept]]
    k_used = effective_k(len(kept), k)
    if progress is not None:
        progress(0.8, f"k-means with {k_used} groups on {len(kept)} images")
    groups = kmeans_groups(rows, k_used, seed=seed)  # ids 0..m-1, m <= k_used (fewer if photos are duplicates)
    if progress is not None:
        progress(0.9, "2-D embedding (UMAP)")
    result = GroupingResult(user=user, names=[r.name for r in kept], groups=groups,
                            embedding=umap_embedding(rows, seed=seed), k=int(groups.max()) + 1, k_requested=k,
                            feature_model=namespace, skipped=list(skip_reasons), skip_reasons=skip_reasons,
                            seed=seed, key=key)
    if cache_dir is not None:
        write_json(grouping_path(cache_dir, user, k, seed), result.to_dict())
    if progress is not None:
        progress(1.0, f"{user}: {len(kept)} images in {k_used} groups, {len(skip_reasons)} skipped")
    return result


def group_user(personal_root: Path, user: str, k: int = DEFAULT_K, cache_dir: Path | None = None,
               device: torch.device | None = None, seed: int = 0, progress: Progress | None = None,
               feature_model: str = "lite0") -> GroupingResult:
    """Group the photos of PSS user ``personal_root/<user>`` into ``effective_k(n, k)`` k-means groups.

    Paper §3.3: ImageNet features -> k-means with K = 80 per user. See ``group_records`` for caching and
    skipping; ``progress(fraction, message)`` is called as the work advances.
    """
    collection = read_user(Path(personal_root), user)
    return group_records(user, collection.records, k=k, cache_dir=cache_dir, device=device, seed=seed,
                         feature_model=feature_model, progress=progress)


def export_cluster_list(result: GroupingResult, user_dir: Path) -> Path:
    """Write ``user_dir/train_cluster<K>.txt`` (K = the requested k) in the official format.

    Lines: ``/JPEGImages/<name>.jpg /SegmentationClass/<name>.png <group>`` (the image's real extension);
    skipped images are left out. K in the file name is the requested K, so ``read_user(..., k=80)`` finds it
    even when a small user was grouped into fewer groups.
    """
    return write_cluster_list(Path(user_dir), result.as_mapping(), result.k_requested)
