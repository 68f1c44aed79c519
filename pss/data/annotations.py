"""The user's annotated training set (one extra list file in the PSS layout) and the "annotate next" queue order.

Layout addition, readable by every PSS reader (the file is simply one more list file they may ignore)::

    personal/id<N>/annotated.txt    # images annotated in the app and used for TRAINING, val_all.txt's list format:
                                    # "/JPEGImages/<n>.jpg /SegmentationClass/<n>.png", one per line

Their masks are written to ``SegmentationClass/<n>.png`` like every mask. The splits stay honest:

* the **evaluation set** is ``val_all.txt`` (when it is absent: every masked image *not* listed in
  ``annotated.txt``); it is never trained on;
* the **annotated training set** is ``annotated.txt`` minus the evaluation set: an evaluation image that is
  (re-)annotated stays an evaluation image and is never listed for training (``write_annotated`` refuses it).
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pss.data.labels import CLASS_NAMES, NUM_CLASSES
from pss.data.problems import Problem
from pss.data.voc_layout import read_list_file
from pss.errors import DatasetError
from pss.fileio import write_text_atomic

ANNOTATED_LIST = "annotated.txt"
QueueOrder = Literal["uncertainty", "random"]
QUEUE_ORDERS: tuple[str, ...] = ("uncertainty", "random")


def read_annotated(user_dir: Path, stems: set[str] | None = None, problems: list[Problem] | None = None) -> set[str]:
    """Names listed in ``annotated.txt`` (empty when the file is absent). A line naming no image in
    ``stems`` (when given) is reported in ``problems`` and skipped."""
    path = Path(user_dir) / ANNOTATED_LIST
    if not path.is_file():
        return set()
    names: set[str] = set()
    for number, entry in read_list_file(path, problems):
        if stems is not None and entry.name not in stems:
            if problems is not None:
                problems.append(Problem(path, "missing_file", f"{entry.image or entry.name} is not in JPEGImages; "
                                        "restore the image or delete the line", line=number))
            continue
        names.add(entry.name)
    return names


def write_annotated(user_dir: Path, names: Iterable[str], eval_names: set[str] | None = None,
                    suffixes: Mapping[str, str] | None = None) -> Path:
    """Write ``annotated.txt`` atomically (sorted, one line per name). Raises ``DatasetError`` if a name is an
    evaluation image (``eval_names``): those are never trained on. ``suffixes``: image suffix per name (default
    ``.jpg``)."""
    wanted = sorted(set(names))
    leaked = sorted(set(wanted) & (eval_names or set()))
    if leaked:
        raise DatasetError(f"{', '.join(leaked[:5])} {'is' if len(leaked) == 1 else 'are'} in val_all.txt (the "
                           "evaluation set) and cannot be listed for training; annotate an unlabelled image instead")
    lines = [f"/JPEGImages/{n}{(suffixes or {}).get(n, '.jpg')} /SegmentationClass/{n}.png\n" for n in wanted]
    path = Path(user_dir) / ANNOTATED_LIST
    write_text_atomic(path, "".join(lines))
    return path


@dataclass(frozen=True)
class QueueItem:
    """One image of the "annotate next" queue: ``score`` = its mean prediction entropy (nats; ``nan`` in random
    order or without a run), ``reason`` = why it is at this place, in words."""

    name: str
    score: float
    reason: str
    group: int | None = None


def rank_queue(candidates: Sequence[str], order: QueueOrder = "uncertainty", *,
               entropy: Mapping[str, float] | None = None, groups: Mapping[str, int] | None = None,
               tag_mismatch: Mapping[str, str] | None = None, seed: int = 0) -> list[QueueItem]:
    """Order the images to annotate next.

    ``uncertainty``: images whose prediction disagrees with their tags come first (``tag_mismatch`` maps a name to
    what disagrees, e.g. "tag dog not predicted"), then by mean entropy, highest first; spread across k-means
    ``groups`` by taking the best remaining image of each group in turn (round-robin, groups in the order of their
    best image), so near-duplicates of one scene are not queued together. Needs ``entropy`` (from a finished run).
    ``random``: a seeded shuffle, the baseline.
    """
    names = list(dict.fromkeys(candidates))
    if order == "random":
        rng = random.Random(seed)
        rng.shuffle(names)
        return [QueueItem(n, float("nan"), "random order (baseline)", (groups or {}).get(n)) for n in names]
    if order != "uncertainty":
        raise DatasetError(f"unknown queue order {order!r}; use one of {', '.join(QUEUE_ORDERS)}")
    if entropy is None:
        raise DatasetError("the uncertainty order needs a finished run's entropies; pick a run, or use random order")
    mismatch = tag_mismatch or {}
    missing = [n for n in names if n not in entropy]
    if missing:
        raise DatasetError(f"no entropy for {', '.join(missing[:5])}: the run did not predict these images; "
                           "pick a run of this user")

    def key(name: str) -> tuple[bool, float]:
        return (name in mismatch, entropy[name])

    by_group: dict[int | None, list[str]] = {}
    for name in sorted(names, key=key, reverse=True):
        by_group.setdefault((groups or {}).get(name), []).append(name)
    ranked_entropy = sorted(names, key=lambda n: entropy[n], reverse=True)
    entropy_rank = {n: i + 1 for i, n in enumerate(ranked_entropy)}
    out: list[QueueItem] = []
    depth = 0
    while by_group:
        # this round: the best remaining image of every group, best first
        round_names = sorted((members.pop(0) for members in by_group.values()), key=key, reverse=True)
        by_group = {g: m for g, m in by_group.items() if m}
        for name in round_names:
            group = (groups or {}).get(name)
            parts = [f"mean entropy {entropy[name]:.3f} (rank {entropy_rank[name]} of {len(names)})"]
            if name in mismatch:
                parts.insert(0, mismatch[name])
            if group is not None:
                parts.append(f"group {group}: {'its most uncertain image' if depth == 0 else f'#{depth + 1} of it'}")
            out.append(QueueItem(name, float(entropy[name]), "; ".join(parts), group))
        depth += 1
    return out


TAG_MIN_FRACTION = 0.01  # a class covering less of a prediction than this does not count as predicted


def tag_mismatch(tags: Iterable[int], predicted: np.ndarray, min_fraction: float = TAG_MIN_FRACTION) -> str | None:
    """What disagrees between an image's tags and its predicted label map, in words (``None`` when they agree):
    tagged classes the prediction does not show, and predicted classes the tags do not name. A class counts as
    predicted when it covers at least ``min_fraction`` of the pixels (a few stray pixels are not a claim).

    Shape: ``predicted`` (H, W) class ids (255 = ignore, not counted).
    """
    counts = np.bincount(predicted[predicted < NUM_CLASSES].ravel().astype(np.int64), minlength=NUM_CLASSES)
    shown = {c for c in range(1, NUM_CLASSES) if counts[c] >= min_fraction * max(int(predicted.size), 1)}
    tagged = {int(t) for t in tags if 0 < int(t) < NUM_CLASSES}
    parts = [f"tag {CLASS_NAMES[c]} not predicted" for c in sorted(tagged - shown)]
    parts += [f"{CLASS_NAMES[c]} predicted, not tagged" for c in sorted(shown - tagged)]
    return "; ".join(parts) or None
