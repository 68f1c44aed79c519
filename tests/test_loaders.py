"""Transforms, SegDataset, and BatchStream over SegDataset (loader processes, skipped files, resume)."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pss.data.datasets import SegDataset
from pss.data.labels import write_label_png
from pss.data.loaders import BatchStream, collate_skip_none, group_batches, shuffled_batches
from pss.data.records import ImageRecord
from pss.data.transforms import MEAN_FILL, EvalTransform, TrainTransform

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


def test_stream_same_batches_with_loader_processes(tmp_path: Path) -> None:
    records = make_records(tmp_path)
    # Each stream has a dataset of its own: the serial one's prefetch thread sets the epoch of its dataset.
    serial = BatchStream(SegDataset(records, True, 24, seed=2), shuffled_batches(6, 2, seed=4))
    parallel = BatchStream(SegDataset(records, True, 24, seed=2), shuffled_batches(6, 2, seed=4), num_workers=2)
    assert serial.prefetch and not parallel.prefetch  # loader processes already load ahead
    for _ in range(4):  # 3 batches an epoch: crosses an epoch, where the workers start again
        a, b = next(serial), next(parallel)
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"])
    serial.close()


def test_corrupt_file_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = SegDataset(make_records(tmp_path, corrupt=2), True, 24)
    with caplog.at_level(logging.WARNING):
        assert dataset[2] is None
    assert "im2" in caplog.text and "pss doctor" in caplog.text
    stream = BatchStream(dataset, lambda epoch: [[0, 1, 2], [3, 4, 5]], num_workers=2)  # flags come from workers
    assert [next(stream)["name"] for _ in range(2)] == [["im0", "im1"], ["im3", "im4", "im5"]]
    assert dataset.skipped == 1 and [r.name for r in dataset.skipped_records] == ["im2"]
    assert collate_skip_none([None, None]) is None
    copied = pickle.loads(pickle.dumps(dataset))  # outside a worker start: a private snapshot of the count
    assert copied.skipped == 1 and copied[0] is not None


def test_mask_size_mismatch_is_skipped(tmp_path: Path) -> None:
    records = make_records(tmp_path, count=2)
    write_label_png(records[0].mask_path, np.zeros((36, 48), np.uint8))  # image is 48 x 36: transposed mask
    dataset = SegDataset(records, False, 16)
    assert dataset[0] is None and dataset.skipped == 1


def test_group_stream_resumes_with_the_same_augmentations(tmp_path: Path) -> None:
    records = make_records(tmp_path)
    groups = [0, 0, 0, 1, 1, 2]

    def stream() -> BatchStream:  # a dataset of its own, as in a resumed run (set_epoch is per dataset)
        return BatchStream(SegDataset(records, True, 16, seed=0), group_batches(groups, 2, seed=9))

    uninterrupted = stream()
    batches = [next(uninterrupted) for _ in range(12)]  # 4 batches an epoch
    names = [b["name"] for b in batches]
    assert all(len({groups[int(n[2:])] for n in batch}) == 1 for batch in names)
    assert sorted({n for batch in names[:4] for n in batch}) == [f"im{i}" for i in range(6)]
    assert names[:4] != names[4:8]  # each epoch reshuffles
    # Resuming at epoch 1, batch 2 gives exactly the batches (and augmentations) of the uninterrupted run.
    resumed = stream()
    resumed.load_state_dict({"epoch": 1, "batch": 2})
    for expected in batches[6:12]:
        batch = next(resumed)
        assert batch["name"] == expected["name"] and torch.equal(batch["image"], expected["image"])
    uninterrupted.close()
    resumed.close()
