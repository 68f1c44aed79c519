"""Per-collection plans of the embedded demo: ids and names, which images are labelled, rotated, from which scene.

A plan is computed from the seed alone (``np.random.default_rng([seed, STREAM_PLAN, user_index])``), so any
image can be rendered on its own, in any order or process, and still come out byte-identical.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from pss.data.demo_scenes import SceneSpec, sample_scene
from pss.data.demo_styles import STREAM_PLAN, STREAM_SPLIT, user_style

ROTATED_FRACTION = 0.05  # share of user photos stored rotated with an EXIF Orientation tag
FRESH_FRACTION = 0.12  # share of user photos that are one-off scenes rather than a recurring one
VAL_FRACTION = 0.15  # share of source ids held out in ImageSets/Segmentation/val.txt


@dataclass(frozen=True)
class UserPlan:
    """Everything about one user's collection that is decided before drawing any image."""

    names: list[str]  # file stems: 10 random lowercase letters, like the PSS dataset
    labelled: frozenset[int]  # image indices that get a SegmentationClass mask
    orientation: list[int]  # EXIF orientation per image (1 = upright, 6/8/3 = stored rotated)
    scene_of: list[int]  # recurring-scene index per image, -1 for a one-off scene
    scenes: list[SceneSpec]


def image_shape(rng: np.random.Generator, long_side: int, portrait_p: float, phone: bool) -> tuple[int, int]:
    """(H, W) of one image: phones shoot 4:3 (sometimes 16:9), the source mixes 4:3, 3:2, 5:4, 1:1."""
    ratios = (4 / 3, 4 / 3, 4 / 3, 16 / 9) if phone else (4 / 3, 3 / 2, 5 / 4, 1.0)
    short = int(round(long_side / ratios[int(rng.integers(len(ratios)))] / 2) * 2)
    return (long_side, short) if rng.random() < portrait_p else (short, long_side)


def source_ids(count: int) -> list[str]:
    """VOC-style ids ``2008_000123`` (year cycles 2007..2012), unique and sorted."""
    return sorted(f"{2007 + i % 6}_{i:06d}" for i in range(count))


def split_source(seed: int, ids: list[str]) -> tuple[list[str], list[str]]:
    """(train ids, held-out val ids): ~15 % of ids, at least one when there are two or more ids."""
    n_val = min(len(ids) - 1, max(1, int(round(VAL_FRACTION * len(ids))))) if len(ids) > 1 else 0
    order = np.random.default_rng([seed, STREAM_SPLIT]).permutation(len(ids))
    val = {ids[int(i)] for i in order[:n_val]}
    return [i for i in ids if i not in val], sorted(val)


def _names(rng: np.random.Generator, count: int) -> list[str]:
    letters = np.array(list(string.ascii_lowercase))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = "".join(rng.choice(letters, 10))
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def plan_user(seed: int, user_index: int, count: int, labelled_fraction: float) -> UserPlan:
    """Plan user ``id<user_index>``: 5-10 recurring scenes with uneven sizes, labelled and rotated images.

    At least one rotated image is labelled, so that mask orientation is always exercised by readers.
    """
    rng = np.random.default_rng([seed, STREAM_PLAN, user_index])
    style = user_style(user_index, seed)
    names = _names(rng, count)
    scenes = [sample_scene(rng, style) for _ in range(int(rng.integers(5, 11)))]
    weights = rng.dirichlet(np.full(len(scenes), 2.0))
    scene_of = [int(rng.choice(len(scenes), p=weights)) if rng.random() >= FRESH_FRACTION else -1
                for _ in range(count)]
    order = rng.permutation(count)
    n_labelled = min(count, max(1, int(round(labelled_fraction * count))))
    labelled = frozenset(int(i) for i in order[:n_labelled])
    orientation = [1] * count
    n_rotated = max(1, int(round(ROTATED_FRACTION * count))) if count >= 10 else 0
    rest = [int(i) for i in rng.permutation(count) if i != order[0]]
    for index in ([int(order[0])] + rest)[:n_rotated]:
        orientation[index] = int(rng.choice([6, 6, 8, 3]))
    return UserPlan(names=names, labelled=labelled, orientation=orientation, scene_of=scene_of, scenes=scenes)
