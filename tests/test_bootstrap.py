"""The paired bootstrap behind each gain's interval, against cases computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from pss.experiments.stats import ImageScores, image_scores, paired_bootstrap


def _scores(fiou: list[float], matrices: list[list[list[int]]]) -> ImageScores:
    return ImageScores(tuple(f"im{i}" for i in range(len(fiou))), np.array(fiou), np.array(matrices))


EYE = [[2, 0], [0, 2]]     # both classes right: IoU 1, 1
HALF = [[2, 0], [2, 0]]    # class 1 predicted as 0: IoU(0) = 2/4, IoU(1) = 0


def test_fiou_gain_interval_by_hand() -> None:
    method = _scores([0.5, 0.7], [EYE, EYE])
    control = _scores([0.4, 0.4], [EYE, EYE])
    gain = paired_bootstrap([[(method, control)]], "FIoU", resamples=2000, seed=0)
    # per-image differences 0.1 and 0.3: resampled means are 0.1 (p 1/4), 0.2 (1/2), 0.3 (1/4)
    assert gain.estimate == pytest.approx(0.2)
    assert gain.low == pytest.approx(0.1) and gain.high == pytest.approx(0.3)
    assert gain.real and gain.text() == "+20.00 [+10.00, +30.00] *"


def test_miou_sums_the_resampled_confusion_matrices() -> None:
    method = _scores([0, 0], [EYE, HALF])
    control = _scores([0, 0], [HALF, HALF])
    # all images once: method matrix [[4,0],[2,2]] -> IoU 4/6, 2/4 -> MIoU 7/12; control [[4,0],[4,0]] -> 4/8, 0
    gain = paired_bootstrap([[(method, control)]], "MIoU", resamples=2000, seed=1)
    assert gain.estimate == pytest.approx(7 / 12 - 1 / 4)
    # resamples: {EYE, EYE} -> 1 - 1/4; {HALF, HALF} -> 0; the extremes bound the interval
    assert gain.low == pytest.approx(0.0, abs=1e-12) and gain.high == pytest.approx(0.75)
    assert not gain.real  # the interval touches 0


def test_identical_runs_gain_exactly_zero_and_seeds_users_average() -> None:
    a = _scores([0.3, 0.6, 0.9], [EYE, HALF, EYE])
    gain = paired_bootstrap([[(a, a)]], "MIoU", resamples=200)
    assert (gain.estimate, gain.low, gain.high, gain.real) == (0.0, 0.0, 0.0, False)
    b = _scores([0.2, 0.5, 0.8], [EYE, HALF, EYE])  # 0.1 below a on every image
    # two users x two seeds: user 1 gains 0.1 in both seeds, user 2 gains 0.1 and 0.3 (constant per image)
    c = _scores([0.0, 0.3, 0.6], [EYE, HALF, EYE])
    gain = paired_bootstrap([[(a, b), (a, b)], [(a, b), (a, c)]], "FIoU", resamples=500)
    assert gain.estimate == pytest.approx((0.1 + (0.1 + 0.3) / 2) / 2)
    assert gain.low == pytest.approx(gain.estimate) and gain.high == pytest.approx(gain.estimate)
    assert gain.pairs == 4


def test_image_scores_match_the_metrics_module() -> None:
    pred = np.array([[0, 1], [1, 1]])
    target = np.array([[0, 1], [0, 255]])
    scores = image_scores([("x", pred, target)], num_classes=2)
    # counted pixels: (0,0) right, (0,1) right, (1,0) gt 0 predicted 1; 255 ignored
    assert scores.confusion[0].tolist() == [[1, 1], [0, 1]]
    # FIoU: foreground predicted {(0,1),(1,0),(1,1)} | gt foreground {(0,1),(1,1)=255}: union 3, inter 1
    assert scores.fiou[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap([[(scores, _scores([0.1], [EYE]))]], "FIoU")


def test_silhouette_picks_the_planted_k_and_random_groups_keep_sizes() -> None:
    from pss.grouping import kmeans_groups, random_groups, silhouette_k

    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10  # three well-separated directions
    features = np.concatenate([c + rng.normal(0, 0.3, (20, 8)) for c in centres])
    choice = silhouette_k(features, (2, 3, 5, 8), seed=0)
    assert choice.k == 3 and set(choice.scores) == {2, 3, 5, 8} and choice.scores[3] == max(choice.scores.values())
    labels = kmeans_groups(features, 3)
    shuffled = random_groups(labels, seed=1)
    assert sorted(np.bincount(shuffled)) == sorted(np.bincount(labels)) and not np.array_equal(shuffled, labels)
