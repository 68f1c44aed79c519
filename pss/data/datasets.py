"""``SegDataset``: image records -> transformed tensors; bad files are skipped and counted, never fatal."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from multiprocessing.sharedctypes import RawArray
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pss.data.image_io import load_mask, load_rgb_tensor
from pss.data.labels import IGNORE_INDEX, NUM_CLASSES
from pss.data.records import ImageRecord
from pss.data.saliency import decode_after_transform, encode_for_transform, read_saliency, saliency_path
from pss.data.transforms import EvalMode, EvalTransform, TrainTransform
from pss.errors import ConfigError, DatasetError

EXTRA_FIELDS = ("tags", "saliency")  # per-image batch fields beyond image/label/name/index that a method may ask for


def image_tags(record: ImageRecord, label: torch.Tensor) -> torch.Tensor:
    """The image-level tags as a multi-hot (NUM_CLASSES,) float32 vector (background, index 0, never set): the
    record's own tags (a PSS user's ``imgLabelList.txt``), else, for a source image only (``record.user is None``),
    the classes of its full mask. A user image's mask is evaluation ground truth and never becomes its tags: an
    untagged user image gives all zeros (``pss.data.tags.user_tag_report`` lists such images; the weakly supervised
    stages leave them out rather than guess). The (20,) form without background: ``pss.data.tags``."""
    tags = torch.zeros(NUM_CLASSES, dtype=torch.float32)
    from_mask = record.user is None
    present = record.tags or (tuple(int(c) for c in torch.unique(label).tolist() if 0 < c < NUM_CLASSES)
                              if from_mask else ())
    tags[list(present)] = 1.0
    return tags

logger = logging.getLogger(__name__)


class SegDataset(Dataset):
    """Segmentation items from ``ImageRecord`` s.

    Each item is a dict: ``image`` float32 (3, H, W) in [0, 1] (not normalised), ``label`` int64 (H, W) (all 255
    for an unlabelled image), ``name`` (str) and ``index`` (int). Training items use ``TrainTransform(crop)``;
    evaluation items ``EvalTransform(eval_size or crop, eval_mode)``.

    Randomness is drawn from a generator seeded by (seed, epoch, index), so an item is the same whatever the worker,
    the number of workers or the order of loading, and a resumed run sees the same items: call ``set_epoch``.

    Extra fields (``fields``, declared by the method): ``tags`` (:func:`image_tags`); ``saliency``, the image's
    ``SALImages/<name>.png`` map (``pss.data.saliency``; in ``saliency_folder`` when given) through the *same*
    scale/crop/flip as the image: float32 (H, W) in [0, 1], ``pss.data.saliency.PAD_VALUE`` on padded pixels. The
    map rides through the transform as a second label (nearest-neighbour, as EPS resizes maps to the CAM size),
    coded 0..254 so that the pad value 255 marks padding, with the item's generator drawn again from the same seed
    so that both calls make the same random choices. A missing or bad map skips the item like a bad image.

    A file that cannot be read (missing, corrupt, truncated, mask of the wrong size) makes ``__getitem__`` return
    ``None`` (drop it with ``collate_skip_none``), logs a warning once per file and process, and is counted in
    ``skipped`` / ``skipped_records`` across DataLoader worker processes.
    """

    def __init__(self, records: Sequence[ImageRecord], train: bool, crop: int, seed: int = 0, *,
                 eval_mode: EvalMode = "crop", eval_size: int | None = None,
                 scale: tuple[float, float] = (0.5, 2.0), flip: bool = True, fields: Sequence[str] = (),
                 saliency_folder: Path | None = None) -> None:
        if crop < 1:
            raise ValueError(f"crop must be a positive number of pixels, got {crop}")
        unknown = sorted(set(fields) - set(EXTRA_FIELDS))
        if unknown:
            raise ConfigError(f"batch field(s) {unknown} asked for (a method's `fields`); the data path provides "
                              f"{', '.join(EXTRA_FIELDS)}")
        self.fields = tuple(fields)
        self.saliency_folder = saliency_folder
        self.records = list(records)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.transform: TrainTransform | EvalTransform = (
            TrainTransform(crop, scale=scale, flip=flip) if train
            else EvalTransform(None if eval_mode == "none" else (eval_size or crop), eval_mode))
        # One flag per record in shared memory: workers are separate processes, and the count must reach the
        # main process. RawArray needs no lock: each worker only ever writes 1 into single bytes.
        self._skipped_flags: Any = RawArray("b", max(1, len(self.records)))
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of this epoch (call before iterating a DataLoader over this dataset)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded image (3, H, W) uint8 and label (H, W) uint8 (all 255 if unlabelled). Raises ``DatasetError``."""
        record = self.records[index]
        image = load_rgb_tensor(record.image_path)
        _, height, width = image.shape  # (3, H, W)
        if record.mask_path is None:
            label = torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8)
        else:
            label = torch.from_numpy(load_mask(record.mask_path, (height, width)))
        return image, label

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        try:
            image, label = self.load(index)
            saliency = (encode_for_transform(read_saliency(saliency_path(record, self.saliency_folder),
                                                           (int(image.shape[1]), int(image.shape[2]))))
                        if "saliency" in self.fields else None)
        except DatasetError as exc:
            self._skip(index, exc)
            return None
        extra: dict[str, Any] = {"tags": image_tags(record, label)} if "tags" in self.fields else {}
        if isinstance(self.transform, TrainTransform):  # train=True; the only transform that draws randomness
            out_image, out_label = self.transform(image, label, self.rng(index))
            if saliency is not None:  # the same seed: the same scale, crop and flip
                extra["saliency"] = decode_after_transform(self.transform(image, saliency, self.rng(index))[1])
        else:
            out_image, out_label = self.transform(image, label)
            if saliency is not None:
                extra["saliency"] = decode_after_transform(self.transform(image, saliency)[1])
        return {"image": out_image, "label": out_label, "name": record.name, "index": index, **extra}

    def _skip(self, index: int, exc: DatasetError) -> None:
        self._skipped_flags[index] = 1
        if index not in self._warned:
            self._warned.add(index)
            logger.warning("skipping %s: %s (run `pss doctor` on the data folder to list every bad file)",
                           self.records[index].name, exc)

    @property
    def skipped(self) -> int:
        """Number of distinct records skipped so far (in any worker process)."""
        return int(np.frombuffer(self._skipped_flags, dtype=np.int8)[: len(self.records)].sum())

    @property
    def skipped_records(self) -> list[ImageRecord]:
        flags = np.frombuffer(self._skipped_flags, dtype=np.int8)[: len(self.records)]
        return [self.records[i] for i in np.flatnonzero(flags)]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Shared memory can only travel to a process being started (DataLoader workers); any other pickling
        # (deepcopy, saving) takes a private snapshot of the flags instead of failing.
        if not _spawning():
            state["_skipped_flags"] = bytearray(self._skipped_flags)
        return state


def _spawning() -> bool:
    from multiprocessing.context import get_spawning_popen

    return get_spawning_popen() is not None
