"""BatchStream: resumable batches, with and without the background prefetch thread."""
from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from pss.data.loaders import collate_skip_none
from pss.engine.streams import BatchStream, shuffled_batches
from pss.errors import DatasetError


class Numbers(Dataset):
    """Item i of epoch e is {"value": 100·e + i}; records which thread loaded it."""

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
        return {"value": torch.tensor(100 * self.epoch + index), "image": torch.zeros(1)}


def _values(stream: BatchStream, n: int) -> list[list[int]]:
    return [next(stream)["value"].tolist() for _ in range(n)]


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


def test_a_stream_with_nothing_loadable_says_what_to_do() -> None:
    stream = BatchStream(Numbers(2, frozenset({0, 1})), shuffled_batches(2, 2, seed=0), collate_skip_none)
    with pytest.raises(DatasetError, match="pss doctor"):
        next(stream)
    stream.close()
