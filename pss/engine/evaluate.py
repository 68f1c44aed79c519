"""Evaluation and full-image prediction over a user's collection, group by group.

Images are predicted in chunks drawn from one k-means group (the group context attends across the
images of a chunk, as the released code evaluates whole group batches, methods.md §1.4). Each chunk is
resized to a common size whose short side is ``short_side`` and whose aspect is the chunk's mean
aspect (the official ``group_collect``); the logits are then upsampled back to every image's own
size, so metrics are computed at the original resolution (the official code scores at the resized
resolution; ours is the stricter choice). MIoU is accumulated over the user's evaluation images (``val_all.txt``;
never an image annotated for training) under both conventions, FIoU averaged per image (methods.md §1.7).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pss.data.image_io import load_mask, load_rgb
from pss.data.labels import write_label_png
from pss.data.records import ImageRecord
from pss.engine.device import FastPath, fast_path
from pss.errors import DatasetError
from pss.losses import pixel_entropy
from pss.metrics import SegReport, evaluate_pairs
from pss.models.segmenter import Segmenter

if TYPE_CHECKING:
    from pss.config import ExperimentConfig

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """How images are predicted for evaluation, pseudo labels and the app: on ``device``, chunks of ``batch_size``
    images of one group resized to a common ``short_side``, with the run's ``fast`` path (``None``: fp32, NCHW)."""

    device: torch.device
    short_side: int
    batch_size: int = 8
    fast: FastPath | None = None

    @classmethod
    def from_config(cls, config: "ExperimentConfig", device: torch.device) -> "EvalSettings":
        """The settings of a run: ``data.eval_short_side``, ``eval.batch_size`` and the train config's fast path."""
        return cls(device, config.data.eval_short_side, config.eval.batch_size,
                   fast_path(device, config.train.amp, config.train.channels_last))


@dataclass
class Prediction:
    """One image's prediction at its original size.

    Shape:
        label: (H, W) uint8 argmax class; entropy: (H, W) float32 normalised pixel entropy in [0, 1].
    """

    name: str
    label: np.ndarray
    entropy: np.ndarray
    group: int

    @property
    def mean_entropy(self) -> float:
        return float(self.entropy.mean())


def chunk_by_group(records: Sequence[ImageRecord], groups: dict[str, int] | None,
                   batch_size: int) -> list[list[int]]:
    """Record indices in chunks of at most ``batch_size``, each chunk inside one group (all one group if None)."""
    by_group: dict[int, list[int]] = {}
    for index, record in enumerate(records):
        by_group.setdefault(groups.get(record.name, -1) if groups else 0, []).append(index)
    chunks: list[list[int]] = []
    for members in by_group.values():
        chunks.extend(members[i:i + batch_size] for i in range(0, len(members), batch_size))
    return chunks


SIZE_STEP = 32  # chunk sides are multiples of this: a few distinct shapes, so CUDA reuses cuDNN's plans


def common_size(images: list[np.ndarray], short_side: int) -> tuple[int, int]:
    """(H, W) for a chunk: short side ``short_side``, the chunk's mean aspect, sides rounded to ``SIZE_STEP``.

    The coarse rounding matters on CUDA: every new input shape costs cuDNN a plan search (about a second for the
    whole Lite0 network in bf16 + channels_last, measured on an H200), which dominated a demo evaluation when
    sides were rounded to 8.
    """
    aspect = float(np.mean([im.shape[1] / im.shape[0] for im in images]))  # W / H
    if aspect >= 1:
        h, w = float(short_side), short_side * aspect
    else:
        h, w = short_side / aspect, float(short_side)
    return (max(SIZE_STEP, int(round(h / SIZE_STEP)) * SIZE_STEP),
            max(SIZE_STEP, int(round(w / SIZE_STEP)) * SIZE_STEP))


def chunk_batch(images: list[np.ndarray], short_side: int, device: torch.device) -> torch.Tensor:
    """The images of one chunk resized to their :func:`common_size`, RGB in [0, 1]. Shape: (n, 3, H, W)."""
    size = common_size(images, short_side)
    return torch.cat([F.interpolate(torch.from_numpy(im).permute(2, 0, 1)[None].to(device).float() / 255.0,
                                    size=size, mode="bilinear", align_corners=False) for im in images])


def chunk_logits(model: torch.nn.Module, images: list[np.ndarray], settings: EvalSettings,
                 pad: bool | None = None) -> torch.Tensor:
    """Float32 logits of one chunk (images of one group, predicted together so the group context sees them all).

    On CUDA (``pad=None``; or whenever ``pad`` is True) the batch is padded with blank images up to
    ``settings.batch_size``, so that chunks of one size bucket share a shape (and cuDNN's plans); the blanks get a
    group id of their own, so the real images' group attention never sees them, and BatchNorm in eval mode is per
    image: the real images' logits are exactly the unpadded ones.

    Shape: n images -> (n, C, h, w) at the model's output stride.
    """
    device, fast, pad_to = settings.device, settings.fast, settings.batch_size
    batch = chunk_batch(images, settings.short_side, device)
    n = batch.shape[0]
    group_ids = None
    if (device.type == "cuda" if pad is None else pad) and n < pad_to:
        batch = torch.cat([batch, batch.new_zeros((pad_to - n, *batch.shape[1:]))])
        group_ids = torch.tensor([0] * n + [1] * (pad_to - n), device=device)
    if fast is not None and fast.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with fast.autocast(device) if fast is not None else torch.autocast(device.type, enabled=False):
        logits = model(batch, group_ids).logits
    return logits[:n].float()


@torch.inference_mode()
def predict_records(model: torch.nn.Module, records: Sequence[ImageRecord], groups: dict[str, int] | None,
                    settings: EvalSettings, progress: Progress | None = None,
                    on_skip: Callable[[ImageRecord, str], None] | None = None,
                    ) -> Iterator[Prediction]:
    """Predict every record, group by group; unreadable images are reported through ``on_skip`` and skipped."""
    model.eval()
    chunks = chunk_by_group(records, groups, settings.batch_size)
    for done, chunk in enumerate(chunks):
        loaded: list[tuple[ImageRecord, np.ndarray]] = []
        for index in chunk:
            try:
                loaded.append((records[index], load_rgb(records[index].image_path)))
            except DatasetError as exc:
                if on_skip is not None:
                    on_skip(records[index], str(exc))
        if not loaded:
            continue
        logits = chunk_logits(model, [im for _, im in loaded], settings)
        for (record, image), one in zip(loaded, logits, strict=True):
            full = F.interpolate(one[None], size=image.shape[:2], mode="bilinear", align_corners=False)
            prob = torch.softmax(full, dim=1)
            yield Prediction(record.name, prob.argmax(1)[0].to(torch.uint8).cpu().numpy(),
                             pixel_entropy(prob)[0].cpu().numpy().astype(np.float32),
                             groups.get(record.name, -1) if groups else 0)
        if progress is not None:
            progress((done + 1) / len(chunks), f"predicted {done + 1}/{len(chunks)} groups")


def save_prediction(prediction: Prediction, predictions_dir: Path, maps_dir: Path) -> None:
    """Palette PNG of the label map and an 8-bit PNG of the entropy (0..255 = 0..1) for the app."""
    write_label_png(predictions_dir / f"{prediction.name}.png", prediction.label)
    from PIL import Image

    Image.fromarray(np.round(prediction.entropy * 255).astype(np.uint8), mode="L").save(
        maps_dir / f"{prediction.name}_entropy.png")


def evaluate_records(model: Segmenter, records: Sequence[ImageRecord], groups: dict[str, int] | None,
                     settings: EvalSettings, output_dir: Path | None = None, progress: Progress | None = None,
                     ) -> tuple[SegReport, dict[str, float]]:
    """Predict all ``records`` (labelled or not: the group context uses them all), score those with an evaluation
    mask (``ImageRecord.eval_mask``: a user's ``val_all.txt`` images; masks annotated for training are not scored).

    With ``output_dir``, predictions go to ``output_dir/predictions/<name>.png`` and entropy maps to
    ``output_dir/maps/<name>_entropy.png``.

    Returns:
        the report over the evaluation images and every predicted image's mean entropy (for ranking).
    """
    if output_dir is not None:
        (output_dir / "predictions").mkdir(parents=True, exist_ok=True)
        (output_dir / "maps").mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in records}
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    entropies: dict[str, float] = {}
    def skipped(record: ImageRecord, reason: str) -> None:
        log.warning("skipping %s: %s", record.name, reason)

    for prediction in predict_records(model, records, groups, settings, progress, on_skip=skipped):
        entropies[prediction.name] = prediction.mean_entropy
        if output_dir is not None:
            save_prediction(prediction, output_dir / "predictions", output_dir / "maps")
        record = by_name[prediction.name]
        # eval_mask, not mask_path: a user's training annotation (annotated.txt) is predicted, never scored
        if record.eval_mask is not None:
            try:
                target = load_mask(record.eval_mask, prediction.label.shape)
            except DatasetError as exc:  # one bad mask must not stop an evaluation
                log.warning("skipping %s in the metrics: %s", record.name, exc)
                continue
            pairs.append((record.name, prediction.label, target))
    return evaluate_pairs(pairs), entropies
