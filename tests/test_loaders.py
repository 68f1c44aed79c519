"""Transforms, SegDataset and the batch samplers."""
from __future__ import annotations

import logging
import pickle
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pss.data.datasets import SegDataset
from pss.data.labels import write_label_png
from pss.data.loaders import GroupBatchSampler, ShuffledBatchSampler, collate_skip_none, forever, make_loader
from pss.data.records import ImageRecord
from pss.data.transforms import MEAN_FILL, EvalTransform, TrainTransform
from pss.errors import DatasetError

GROUPS = [0] * 10 + [1] * 3 + [2] * 1 + [5] * 7  # indices 0-9, 10-12, 13, 14-20


# ---------------------------------------------------------------- samplers
def test_group_sampler_in_order_is_hand_computed() -> None:
    sampler = GroupBatchSampler(GROUPS, batch_size=4, shuffle=False)
    assert list(sampler) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [10, 11, 12, 10], [13, 13, 13, 13],
                             [14, 15, 16, 17], [18, 19, 20, 14]]
    assert len(sampler) == 7


@pytest.mark.parametrize("batch_size", [1, 3, 4, 11])
def test_group_sampler_invariants(batch_size: int) -> None:
    sampler = GroupBatchSampler(GROUPS, batch_size=batch_size, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len(b) == batch_size for b in batches)
        assert all(len({GROUPS[i] for i in b}) == 1 for b in batches)  # one group per batch
        assert set().union(*map(set, batches)) == set(range(len(GROUPS)))  # every item each epoch
        for group in set(GROUPS):  # each group holds ceil(n / batch) batches
            size = GROUPS.count(group)
            assert sum(GROUPS[b[0]] == group for b in batches) == -(-size // batch_size)


def test_group_sampler_deterministic_per_seed_and_epoch() -> None:
    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = GroupBatchSampler(GROUPS, batch_size=4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 1) == batches(0, 1)
    assert batches(0, 1) != batches(0, 2)
    assert batches(0, 1) != batches(1, 1)


def test_sampler_set_start_skips_once() -> None:
    sampler = ShuffledBatchSampler(10, batch_size=3, seed=1)
    full = list(sampler)
    assert len(full) == len(sampler) == 4 and sorted(sum(full, [])) == list(range(10))
    sampler.set_start(2)
    assert list(sampler) == full[2:]
    assert list(sampler) == full
    dropping = ShuffledBatchSampler(10, 3, drop_last=True)
    assert len(dropping) == 3 == len(list(dropping)) and all(len(b) == 3 for b in dropping)


# ---------------------------------------------------------------- transforms
def test_train_transform_pads_with_mean_and_ignore() -> None:
    # 12 x 16 image, long side fixed to 32 -> resized 24 x 32, padded to the 64 x 64 crop at the bottom/right.
    image = torch.full((3, 12, 16), 200, dtype=torch.uint8)
    label = torch.full((12, 16), 7, dtype=torch.uint8)
    out_image, out_label = TrainTransform(64, scale=(0.5, 0.5), flip=False)(image, label, np.random.default_rng(0))
    assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.float32
    assert out_label.shape == (64, 64) and out_label.dtype == torch.int64
    assert (out_label[:24, :32] == 7).all() and (out_label[24:] == 255).all() and (out_label[:, 32:] == 255).all()
    assert torch.allclose(out_image[:, :24, :32], torch.tensor(200 / 255))
    assert torch.allclose(out_image[:, 24:, :], torch.tensor(MEAN_FILL).view(3, 1, 1).expand(3, 40, 64))


def test_train_transform_flip_and_scale_range() -> None:
    image = torch.zeros((3, 40, 40), dtype=torch.uint8)
    image[:, :, :20] = 255
    label = torch.zeros((40, 40), dtype=torch.uint8)
    label[:, :20] = 1
    transform = TrainTransform(40, scale=(1.0, 1.0))  # long side 40 = no resize, no crop freedom: only the flip
    flipped = 0
    for seed in range(40):
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        left_is_one = bool((out_label[:, :20] == 1).all())
        assert left_is_one != bool((out_label[:, 20:] == 1).all())
        assert torch.equal(out_image[0] == 1.0, out_label == 1)  # image and label flipped together
        flipped += not left_is_one
    assert 8 < flipped < 32


def test_eval_transform_modes() -> None:
    image = torch.zeros((3, 30, 60), dtype=torch.uint8)
    label = torch.zeros((30, 60), dtype=torch.uint8)
    label[:, 30:] = 3
    crop_image, crop_label = EvalTransform(20, "crop")(image, label)
    assert crop_image.shape == (3, 20, 20)
    assert (crop_label[:, :10] == 0).all() and (crop_label[:, 10:] == 3).all()  # centre of a 20 x 40 resize
    assert EvalTransform(20, "resize")(image, label)[0].shape == (3, 20, 40)
    assert EvalTransform(None, "none")(image, label)[1].shape == (30, 60)
    with pytest.raises(ValueError):
        EvalTransform(None, "crop")


# ---------------------------------------------------------------- dataset and loader
def make_records(tmp_path: Path, count: int = 6, corrupt: int | None = None) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        height, width = (36, 48) if i % 2 else (48, 36)
        image_path, mask_path = tmp_path / f"im{i}.jpg", tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(image_path)
        label = np.full((height, width), i % 21, np.uint8)
        label[:4] = 255
        write_label_png(mask_path, label)
        records.append(ImageRecord(f"im{i}", image_path, mask_path if i != 1 else None))
    if corrupt is not None:
        data = records[corrupt].image_path.read_bytes()
        records[corrupt].image_path.write_bytes(data[: len(data) // 2])
    return records


def test_dataset_items(tmp_path: Path) -> None:
    records = make_records(tmp_path)
    train = SegDataset(records, train=True, crop=32, seed=5)
    for index in range(len(records)):
        item = train[index]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["image"].is_contiguous() and item["label"].is_contiguous()
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        assert item["label"].shape == (32, 32) and item["label"].dtype == torch.int64
        assert set(item["label"].unique().tolist()) <= {index % 21, 255}
        assert item["name"] == f"im{index}" and item["index"] == index
    assert (train[1]["label"] == 255).all()  # unlabelled image
    full = SegDataset(records, train=False, crop=32, eval_mode="none")[0]
    assert full["image"].shape == (3, 48, 36) and (full["label"][:4] == 255).all() and (full["label"][4:] == 0).all()
    assert full["image"].is_contiguous()
    decoded = torch.from_numpy(np.array(Image.open(records[0].image_path).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(full["image"], decoded.float() / 255)  # same pixels as Pillow, exact division


def test_dataset_is_deterministic_per_seed_epoch_index(tmp_path: Path) -> None:
    records = make_records(tmp_path)
    first, second = SegDataset(records, True, 24, seed=1), SegDataset(records, True, 24, seed=1)
    assert torch.equal(first[3]["image"], second[3]["image"])
    second.set_epoch(1)
    assert not torch.equal(first[3]["image"], second[3]["image"])
    first.set_epoch(1)
    assert torch.equal(first[3]["label"], second[3]["label"]) and torch.equal(first[3]["image"], second[3]["image"])


def test_loader_same_batches_with_workers(tmp_path: Path) -> None:
    dataset = SegDataset(make_records(tmp_path), True, 24, seed=2)
    serial = [b["image"] for b in make_loader(dataset, 2, seed=4)]
    parallel = [b["image"] for b in make_loader(dataset, 2, seed=4, num_workers=2)]
    assert len(serial) == 3 and all(torch.equal(a, b) for a, b in zip(serial, parallel))


def test_corrupt_file_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = SegDataset(make_records(tmp_path, corrupt=2), True, 24)
    with caplog.at_level(logging.WARNING):
        assert dataset[2] is None
    assert "im2" in caplog.text and "pss doctor" in caplog.text
    batches = list(make_loader(dataset, 3, shuffle=False, num_workers=2))  # the flag comes back from a worker
    assert [b["name"] for b in batches] == [["im0", "im1"], ["im3", "im4", "im5"]]
    assert dataset.skipped == 1 and [r.name for r in dataset.skipped_records] == ["im2"]
    assert collate_skip_none([None, None]) is None
    copied = pickle.loads(pickle.dumps(dataset))  # outside a worker start: a private snapshot of the count
    assert copied.skipped == 1 and copied[0] is not None


def test_mask_size_mismatch_is_skipped(tmp_path: Path) -> None:
    records = make_records(tmp_path, count=2)
    write_label_png(records[0].mask_path, np.zeros((36, 48), np.uint8))  # image is 48 x 36: transposed mask
    dataset = SegDataset(records, False, 16)
    assert dataset[0] is None and dataset.skipped == 1


def test_group_loader_and_forever_resume(tmp_path: Path) -> None:
    dataset = SegDataset(make_records(tmp_path), True, 16, seed=0)
    groups = [0, 0, 0, 1, 1, 2]
    loader = make_loader(dataset, 2, groups=groups, seed=9)
    images = [b["image"] for b in islice(forever(loader), 12)]  # 4 batches per epoch
    names = [b["name"] for b in islice(forever(loader), 12)]
    assert all(len({groups[int(n[2:])] for n in batch}) == 1 for batch in names)
    assert sorted({n for batch in names[:4] for n in batch}) == [f"im{i}" for i in range(6)]
    assert names[:4] != names[4:8]  # set_epoch reshuffles
    # Resuming at epoch 1, batch 2 gives exactly the batches (and augmentations) of the uninterrupted run.
    resumed = list(islice(forever(make_loader(dataset, 2, groups=groups, seed=9), 1, 2), 6))
    assert [b["name"] for b in resumed] == names[6:12]
    assert all(torch.equal(b["image"], image) for b, image in zip(resumed, images[6:12]))


def test_forever_stops_on_all_bad_data(tmp_path: Path) -> None:
    records = make_records(tmp_path, count=1, corrupt=0)
    with pytest.raises(DatasetError, match="pss doctor"):
        next(forever(make_loader(SegDataset(records, True, 16), 1)))
