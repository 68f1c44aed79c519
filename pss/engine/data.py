"""The data of one experiment: source records, the target collection, groups, and the batch streams."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pss.config import ExperimentConfig, GroupingConfig
from pss.data.datasets import SegDataset
from pss.data.loaders import BatchStream, collate_skip_none, group_batches, shuffled_batches
from pss.data.pss_layout import list_users, read_user
from pss.data.records import ImageRecord
from pss.data.voc_layout import read_voc
from pss.engine.distributed import SINGLE, DistContext, per_rank_batch, shard_plan
from pss.errors import DatasetError
from pss.grouping import effective_k, extract_features, kmeans_groups, random_groups, silhouette_k

log = logging.getLogger(__name__)


@dataclass
class ExperimentData:
    """``target`` = what adaptation trains on, without labels (the user, or the Table 5 mixes; every mask
    stripped, so no evaluation mask can reach a target batch); ``evaluation`` = the user's images (all of them: the
    group context uses unlabelled ones too; metrics score only the evaluation set, ``ImageRecord.eval_mask``);
    ``annotated`` = the user's images annotated for training (``UserCollection.annotated_train``, never evaluation
    images), the supervised stream of ``train.annotated_weight``."""

    source: list[ImageRecord]
    target: list[ImageRecord]
    evaluation: list[ImageRecord]
    source_groups: dict[str, int] | None
    target_groups: dict[str, int] | None
    evaluation_groups: dict[str, int] | None
    source_val: list[ImageRecord] = field(default_factory=list)
    annotated: list[ImageRecord] = field(default_factory=list)


DEFAULT_SOURCE_VAL = Path("ImageSets/Segmentation/val.txt")  # VOC2012 val; the demo writes its held-out ids there


def read_source_val(config: ExperimentConfig) -> list[ImageRecord]:
    """The source's held-out split (``data.voc_val_list``; default VOC's ``ImageSets/Segmentation/val.txt`` when
    present, "" = none): labelled source images no run trains on, scored to see how far source training is."""
    listed = config.data.voc_val_list
    if listed == "":
        return []
    path = Path(listed) if listed else DEFAULT_SOURCE_VAL
    root = config.data.voc_path()
    if listed is None and not (root / path).is_file():
        return []
    return [r for r in read_voc(root, path) if r.mask_path is not None]


def _grouping_features(records: Sequence[ImageRecord], feature_model: str, cache_dir: Path | None,
                       device: torch.device) -> tuple[list[ImageRecord], np.ndarray]:
    """The readable records and their ImageNet feature rows (from the content-hash cache when present)."""
    features = extract_features([r.image_path for r in records], feature_model, device, cache_dir=cache_dir)
    by_path = {p: i for i, p in enumerate(features.paths)}
    kept = [r for r in records if r.image_path in by_path]
    if not kept:
        raise DatasetError("no readable image to group; run `pss doctor` on the data root")
    return kept, features.features[[by_path[r.image_path] for r in kept]]


def compute_groups(records: Sequence[ImageRecord], k: int, seed: int, feature_model: str, cache_dir: Path | None,
                   device: torch.device) -> dict[str, int]:
    """k-means groups of ImageNet features (paper §4.2), the same groups ``pss group`` and the app compute
    for the same (images, K, seed); features come from the content-hash cache when present."""
    kept, rows = _grouping_features(records, feature_model, cache_dir, device)
    labels = kmeans_groups(rows, effective_k(len(kept), k), seed=seed)
    return {r.name: int(g) for r, g in zip(kept, labels, strict=True)}


@dataclass(frozen=True)
class UserGroups:
    """A collection's groups under a ``GroupingConfig``: ``k`` = the K used (after the cap, or chosen by the
    silhouette rule, whose ``scores`` per K are kept)."""

    groups: dict[str, int]
    k: int
    scores: dict[int, float]


def user_groups(records: Sequence[ImageRecord], grouping: GroupingConfig, cache_dir: Path | None,
                device: torch.device) -> UserGroups:
    """The groups a run uses for a user's collection: k-means with ``grouping.k`` (capped by ``effective_k``) or
    with the K the silhouette rule picks (``k_rule``), then, with ``grouping.random``, the same sizes filled at
    random (``pss.grouping.auto_k``)."""
    kept, rows = _grouping_features(records, grouping.feature_model, cache_dir, device)
    scores: dict[int, float] = {}
    if grouping.k_rule == "silhouette":
        choice = silhouette_k(rows, grouping.k_grid, seed=grouping.seed)
        k, scores = choice.k, choice.scores
    else:
        k = effective_k(len(kept), grouping.k)
    labels = kmeans_groups(rows, k, seed=grouping.seed)
    if grouping.random:
        labels = random_groups(labels, grouping.seed)
    return UserGroups({r.name: int(g) for r, g in zip(kept, labels, strict=True)}, k, scores)


def _unique_names(records: list[ImageRecord]) -> list[ImageRecord]:
    """Mixed sets join several users: prefix names so they stay unique."""
    return [replace(r, name=f"{r.user}/{r.name}") for r in records]


def load_experiment_data(config: ExperimentConfig, device: torch.device, cache_dir: Path | None,
                         need_groups: bool) -> ExperimentData:
    data = config.data
    source = read_voc(data.voc_path(), Path(data.voc_list) if data.voc_list else None)
    user = read_user(data.personal_path(), data.user)
    evaluation = list(user.records)
    annotated = user.annotated_train
    if data.target == "personal":
        target = evaluation
    else:
        everyone = [r for u in list_users(data.personal_path()) for r in read_user(data.personal_path(), u).records]
        target = _unique_names(everyone)
        if data.target == "mix_sample":
            rng = np.random.default_rng(config.train.seed)
            target = [target[i] for i in sorted(rng.choice(len(target), size=len(evaluation), replace=False))]
    # adaptation sees the target images unlabelled: the masks (evaluation ground truth) stay out of target batches
    # (no method reads them, but the `tags` field falls back on a mask's classes when an image has no tags)
    target = [replace(r, mask_path=None) for r in target]
    source_val = read_source_val(config)
    held_out = {r.name for r in source_val}
    overlap = sum(r.name in held_out for r in source)
    if overlap:  # e.g. a custom train list that contains val ids: never train on what the source val scores
        log.warning("%d source val image(s) are also in the source training list; they are left out of training",
                    overlap)
        source = [r for r in source if r.name not in held_out]
    if not source:
        raise DatasetError(f"no source images found under {data.voc_path()}")
    if not need_groups:
        return ExperimentData(source, target, evaluation, None, None, None, source_val, annotated)
    g = config.grouping
    args = (g.seed, g.feature_model, cache_dir, device)
    source_groups = compute_groups(source, config.data.source_groups, *args) if config.data.source_groups else None
    evaluation_groups = user_groups(evaluation, g, cache_dir, device).groups
    target_groups = (evaluation_groups if data.target == "personal"
                     else user_groups(target, g, cache_dir, device).groups)
    return ExperimentData(source, target, evaluation, source_groups, target_groups, evaluation_groups, source_val,
                          annotated)


def make_stream(records: Sequence[ImageRecord], groups: dict[str, int] | None, config: ExperimentConfig,
                seed: int, pin_memory: bool = False, fields: Sequence[str] = (),
                dist: DistContext = SINGLE) -> BatchStream:
    """Training batches of ``records``: one k-means group per batch when ``groups`` is given (methods.md §1.4);
    ``fields``: the extra per-image fields the method declares (``pss.data.datasets.EXTRA_FIELDS``). In a
    multi-process run (``dist``) this rank's slice of every batch (``pss.engine.distributed.shard_plan``)."""
    dataset = SegDataset(list(records), train=True, crop=config.data.crop, seed=seed, fields=fields)
    bs = config.train.batch_size
    if groups is not None:
        plan = group_batches([groups.get(r.name, -1) for r in records], bs, seed)
    else:
        plan = shuffled_batches(len(records), bs, seed)
    if dist.active:
        per_rank_batch(bs, dist)  # the global batch must split evenly (ConfigError otherwise)
        plan = shard_plan(plan, dist)
    return BatchStream(dataset, plan, collate_skip_none, config.data.num_workers, pin_memory)


def make_annotated_stream(records: Sequence[ImageRecord], config: ExperimentConfig, seed: int,
                          pin_memory: bool = False, fields: Sequence[str] = ()) -> BatchStream:
    """Training batches of the user's annotated training images (``train.annotated_weight``), with the source
    stream's crop and augmentation (``SegDataset(train=True)``).

    Batches are drawn across the whole annotated set (one group for ``group_batches``: reshuffled every epoch and
    wrapped around so that every batch is full), not one k-means group per batch as the unlabelled target batches:
    the set is small and the "annotate next" queue spreads it over the k-means groups (``rank_queue``), so a group
    holds one or two annotated images and one-group batches would be one image repeated (BatchNorm statistics of a
    single image, and its gradient counted batch-size times). A batch of several annotated images from different
    groups is what the source stream is on the demo (plain shuffled batches: one attention group of unrelated
    images for a group context). Wrapping also makes a single annotated image a usable batch (``MIN_BATCH``).
    """
    if not records:
        raise DatasetError("no annotated training image: annotate images in the Annotate tab or list them in "
                           "annotated.txt (or set train.annotated_weight=0)")
    dataset = SegDataset(list(records), train=True, crop=config.data.crop, seed=seed, fields=fields)
    plan = group_batches([0] * len(records), config.train.batch_size, seed)
    return BatchStream(dataset, plan, collate_skip_none, config.data.num_workers, pin_memory)
