"""The batch plans and BatchStream (pss.data.loaders): fixed batches per seed, resume, prefetch, bad data."""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from pss.data.loaders import MIN_BATCH, BatchPlan, BatchStream, collate_skip_none, group_batches, shuffled_batches
from pss.errors import DatasetError

GROUPS = [0] * 10 + [1] * 3 + [2] * 1 + [5] * 7  # indices 0-9, 10-12, 13, 14-20


class Numbers(Dataset):
    """Item i of epoch e is {"index": i, "value": 100·e + i}; ``broken`` items are skipped (None). Records which
    thread loaded each item."""

    def __init__(self, size: int, broken: frozenset[int] = frozenset()) -> None:
        self.size, self.broken, self.epoch = size, broken, 0
        self.threads: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        self.threads.add(threading.current_thread().name)
        if index in self.broken:
            return None
        return {"index": torch.tensor(index), "value": torch.tensor(100 * self.epoch + index), "image": torch.zeros(1)}


def _values(stream: BatchStream, n: int, key: str = "value") -> list[list[int]]:
    return [next(stream)[key].tolist() for _ in range(n)]


def _planned(plan: BatchPlan, n: int) -> list[list[int]]:
    """The first ``n`` batches of ``plan``, epoch after epoch."""
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < n:
        batches += plan(epoch)
        epoch += 1
    return batches[:n]


# ---------------------------------------------------------------- the batches of a seed never change
# Fixed-seed training runs (and their checkpoints) depend on these exact batches. The lists were drawn from the
# previous implementation (pss.engine.streams + GroupBatchSampler, commit 77b25c4) before it was replaced.
SHUFFLED_21_BY_4_SEED_5 = [  # 5 batches an epoch (drop_last), 6 epochs
    [12, 7, 15, 3], [20, 6, 9, 1], [17, 11, 16, 19], [2, 4, 18, 10], [13, 0, 5, 14],
    [16, 5, 12, 13], [18, 14, 2, 20], [9, 15, 7, 11], [10, 4, 6, 8], [0, 1, 19, 3],
    [8, 5, 18, 13], [12, 15, 6, 10], [2, 4, 1, 19], [0, 3, 16, 7], [9, 20, 11, 17],
    [20, 2, 0, 12], [19, 7, 9, 8], [4, 17, 10, 1], [16, 3, 15, 13], [11, 18, 14, 6],
    [4, 9, 19, 1], [15, 10, 3, 11], [5, 7, 16, 20], [18, 14, 17, 13], [0, 8, 2, 6],
    [17, 10, 14, 6], [1, 3, 11, 13], [0, 20, 15, 19], [8, 18, 7, 5], [4, 12, 2, 9],
]
GROUPS_BY_4_SEED_3 = [  # 7 batches an epoch: groups of 10, 3, 1, 7 -> 3 + 1 + 1 + 2
    [3, 8, 9, 6], [1, 4, 7, 5], [20, 16, 15, 19], [13, 13, 13, 13], [9, 6, 0, 2], [19, 18, 14, 17], [11, 10, 12, 11],
    [16, 19, 18, 14], [10, 11, 12, 10], [6, 3, 4, 1], [17, 20, 15, 16], [4, 1, 2, 8], [5, 0, 7, 9], [13, 13, 13, 13],
    [18, 19, 15, 16], [3, 5, 7, 4], [6, 0, 2, 9], [10, 11, 12, 10], [16, 17, 20, 14], [7, 4, 1, 8], [13, 13, 13, 13],
    [19, 16, 18, 17], [15, 14, 20, 19], [3, 2, 4, 6], [11, 10, 12, 11], [13, 13, 13, 13], [8, 7, 0, 1],
    [0, 1, 9, 5], [13, 13, 13, 13], [1, 5, 7, 2],
]


def _digest(batches: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(batches).encode()).hexdigest()


def test_plans_give_the_stored_batches() -> None:
    assert _planned(shuffled_batches(21, 4, seed=5), 30) == SHUFFLED_21_BY_4_SEED_5
    assert _planned(shuffled_batches(3, 4, seed=0), 4) == [[2, 0, 1], [2, 0, 1], [2, 1, 0], [2, 1, 0]]  # one short
    assert _planned(group_batches(GROUPS, 4, seed=3), 30) == GROUPS_BY_4_SEED_3
    # At the demo's scale (320 source images, batch 8; a user's 120 images in groups, -1 = ungrouped), as digests.
    assert _digest(_planned(shuffled_batches(320, 8, seed=1), 200)) == (
        "4015171d21c7ff558b120baaa39cb95030d519235b16e6553311e74f893b52fd")
    user_groups = np.random.default_rng(123).integers(-1, 6, 120).tolist()
    assert _digest(_planned(group_batches(user_groups, 8, seed=2), 200)) == (
        "48e8ffbf271db287afb41ddd4e7a90a0048feb26f5d98e049e221d89554e23a6")


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_stream_returns_its_plan_across_epochs(prefetch: bool) -> None:
    for plan, expected in ((shuffled_batches(21, 4, seed=5), SHUFFLED_21_BY_4_SEED_5),
                           (group_batches(GROUPS, 4, seed=3), GROUPS_BY_4_SEED_3)):
        stream = BatchStream(Numbers(21), plan, prefetch=prefetch)
        assert _values(stream, 30, key="index") == expected
        stream.close()


# ---------------------------------------------------------------- the plans
@pytest.mark.parametrize("batch_size", [1, 3, 4, 11])
def test_group_plan_invariants(batch_size: int) -> None:
    plan = group_batches(GROUPS, batch_size, seed=3)
    for epoch in range(3):
        batches = plan(epoch)
        assert all(len(b) == batch_size for b in batches)  # small groups are repeated to fill a batch
        assert all(len({GROUPS[i] for i in b}) == 1 for b in batches)  # one group per batch
        assert set().union(*map(set, batches)) == set(range(len(GROUPS)))  # every item each epoch
        for group in set(GROUPS):  # each group fills ceil(n / batch) batches, its items repeated evenly
            size = GROUPS.count(group)
            slots = -(-size // batch_size) * batch_size
            own = [i for b in batches if GROUPS[b[0]] == group for i in b]
            low, extra = divmod(slots, size)  # the wrap-around repeats the first `extra` items once more
            assert len(own) == slots
            assert sorted(own.count(i) for i in set(own)) == [low] * (size - extra) + [low + 1] * extra


def test_plans_depend_on_seed_and_epoch_only() -> None:
    for make in (lambda seed: group_batches(GROUPS, 4, seed), lambda seed: shuffled_batches(21, 4, seed)):
        assert make(0)(1) == make(0)(1) == make(0)(1)  # replayable: a plan keeps no state between epochs
        assert make(0)(1) != make(0)(2)
        assert make(0)(1) != make(1)(1)


def test_plans_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        shuffled_batches(5, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        group_batches([0, 1], 2, seed=-1)


# ---------------------------------------------------------------- the stream
def test_resume_at_any_position_equals_the_uninterrupted_stream() -> None:
    def stream() -> BatchStream:
        return BatchStream(Numbers(9), shuffled_batches(9, 3, seed=1), prefetch=False)

    reference = stream()
    expected, positions = [], [reference.state_dict()]
    for _ in range(10):
        expected.append(next(reference)["value"].tolist())
        positions.append(reference.state_dict())
    # 3 batches an epoch: the position after the third is the end of epoch 0, a place (1, 0) also names
    assert positions[3] == {"epoch": 0, "batch": 3} and positions[4] == {"epoch": 1, "batch": 1}
    for k, position in [*enumerate(positions[:-1]), (3, {"epoch": 1, "batch": 0})]:
        resumed = stream()
        resumed.load_state_dict(position)
        assert _values(resumed, 10 - k) == expected[k:], f"resumed at {position}"


@pytest.mark.parametrize("broken", [frozenset(), frozenset({3})])  # a batch that lost item 3 is shorter
def test_prefetch_gives_the_same_batches_and_positions(broken: frozenset[int]) -> None:
    plain = BatchStream(Numbers(7, broken), shuffled_batches(7, 3, seed=5), collate_skip_none, prefetch=False)
    ahead = BatchStream(Numbers(7, broken), shuffled_batches(7, 3, seed=5), collate_skip_none)
    assert ahead.prefetch and not plain.prefetch
    for _ in range(8):  # 2 batches an epoch (drop_last): crosses epochs
        a, b = next(plain), next(ahead)
        assert a["value"].tolist() == b["value"].tolist()
        assert plain.state_dict() == ahead.state_dict()  # the position of what was returned, not what was loaded
    assert any(name.startswith("pss-batch") for name in ahead.dataset.threads)
    ahead.close()


def test_resume_with_prefetch_continues_exactly() -> None:
    reference = BatchStream(Numbers(9), shuffled_batches(9, 3, seed=1), collate_skip_none)
    expected = _values(reference, 7)
    first = BatchStream(Numbers(9), shuffled_batches(9, 3, seed=1), collate_skip_none)
    assert _values(first, 4) == expected[:4]
    saved = first.state_dict()
    assert saved == {"epoch": 1, "batch": 1}
    resumed = BatchStream(Numbers(9), shuffled_batches(9, 3, seed=1), collate_skip_none)
    resumed.load_state_dict(saved)
    assert _values(resumed, 3) == expected[4:]
    first.load_state_dict(saved)  # restoring a stream mid-prefetch drops the batch it had loaded ahead
    assert _values(first, 3) == expected[4:]
    for stream in (reference, first, resumed):
        stream.close()


def test_every_group_batch_comes_from_one_group() -> None:
    stream = BatchStream(Numbers(len(GROUPS)), group_batches(GROUPS, 3, seed=7))
    for indices in _values(stream, 40, key="index"):
        assert len(indices) == 3 and len({GROUPS[i] for i in indices}) == 1
    stream.close()


def test_batches_shrunk_below_min_batch_are_passed_over() -> None:
    # In order, batches are [0, 1, 2] [3, 4, 5] [6, 7, 8]: with 3, 4 and 6 unreadable, only one image is left of
    # the second batch (too few for BatchNorm) and two of the third.
    stream = BatchStream(Numbers(9, frozenset({3, 4, 6})), lambda epoch: [[0, 1, 2], [3, 4, 5], [6, 7, 8]],
                         prefetch=False)
    assert MIN_BATCH == 2
    assert next(stream)["index"].tolist() == [0, 1, 2] and stream.state_dict() == {"epoch": 0, "batch": 1}
    assert next(stream)["index"].tolist() == [7, 8] and stream.state_dict() == {"epoch": 0, "batch": 3}
    assert next(stream)["value"].tolist() == [100, 101, 102]  # the next epoch
    every_batch_empty = BatchStream(Numbers(4, frozenset({0, 2})), lambda epoch: [[0, 1], [2, 3]], prefetch=False)
    with pytest.raises(DatasetError, match="pss doctor"):
        next(every_batch_empty)


def test_a_stream_with_nothing_loadable_says_what_to_do() -> None:
    stream = BatchStream(Numbers(2, frozenset({0, 1})), shuffled_batches(2, 2, seed=0), collate_skip_none)
    with pytest.raises(DatasetError, match="pss doctor"):
        next(stream)
    stream.close()
    empty = BatchStream(Numbers(0), shuffled_batches(0, 2, seed=0), prefetch=False)
    with pytest.raises(DatasetError, match="no usable batch .* for 3 epochs"):
        next(empty)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pss-batch")]


def test_close_stops_the_prefetch_thread() -> None:
    before = set(_prefetch_threads())
    stream = BatchStream(Numbers(6), shuffled_batches(6, 2, seed=0))
    next(stream)
    started = set(_prefetch_threads()) - before
    assert len(started) == 1
    stream.close()
    assert not any(t.is_alive() for t in started)
    assert stream.state_dict() == {"epoch": 0, "batch": 1}
