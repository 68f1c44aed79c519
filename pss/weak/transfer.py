"""Transfer from strong to weak classes (issue 18; Xiao et al., AAAI 2018, methods.md §11): the stages of L-Net and
P-Net over the one training loop, each a plain function (as ``pss.weak.pipeline`` does for EPS):

1. :func:`pss.data.strong_weak.apply_split`: strong classes kept, weak-class pixels hidden (255), tags complete;
2. :func:`train_object_map`: L-Net's class-agnostic object map M, a segmenter trained on the strong pixels only
   (``pss.methods.saliency`` on the hidden labels: foreground = any strong class, weak pixels ignored);
3. :func:`train_cams`: a ``CAMNet`` on the complete tags of every split image; EPS with M as its saliency map
   (``pss.methods.eps``), or the plain CAM (``pss.methods.lnet``) when there is no M (no strong object class);
4. :func:`write_coarse_labels`: L-Net's coarse labels of the weak-class images (``pss.models.lnet``: CAM seeds
   diffused inside M), merged with the labels the split kept, as the P-Net training labels;
5. :func:`train_pnet`: P-Net (``pss.methods.pnet``) on those labels, with (L-Net + P-Net) or without (L-Net only:
   ``lambda_adv = 0``) the mask discriminator.

:func:`run_transfer` runs them in order. :func:`coarse_label_quality` scores the coarse labels against the full
masks (evaluation only; the full masks never reach a training stage), per class group (``split_report``).
Every choice beyond the abstract is ours and documented where it is made.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pss.config import ExperimentConfig
from pss.data.datasets import SegDataset
from pss.data.image_io import load_mask, load_rgb_tensor
from pss.data.labels import IGNORE_INDEX, read_label_png, write_label_png
from pss.data.records import ImageRecord
from pss.data.saliency import SALIENCY_FIELD, saliency_path, write_saliency_png
from pss.data.strong_weak import StrongWeakConfig, StrongWeakSplit, apply_split, split_record_tags
from pss.data.transforms import to_float
from pss.engine.hooks import Hook
from pss.methods.eps import EPS, EPSConfig
from pss.methods.lnet import CAMCls, CAMClsConfig
from pss.methods.pnet import PNet, PNetConfig
from pss.metrics import SegReport, evaluate_pairs
from pss.models.cam import EPS_SCALES, CAMNet, build_cam_net, multiscale_cam_scores
from pss.models.lnet import DiffusionConfig, coarse_labels
from pss.models.segmenter import Segmenter, build_segmenter
from pss.weak.pipeline import predict_saliency, train_saliency_model, train_stage
from pss.weak.split_report import GroupMIoU, group_miou

DEFAULT_DIFFUSION = DiffusionConfig()  # frozen: safe as a shared default


def _resized(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(K, h, w) -> (K, H, W), bilinear (``align_corners=False``) or nearest; unchanged when equal."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    if mode == "nearest":
        return F.interpolate(maps[None].float(), size=size, mode="nearest")[0]
    return F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def _work_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None or min(height, width) <= short_side:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


# -- 2. object map -------------------------------------------------------------------------------------------------
def train_object_map(config: ExperimentConfig, split: StrongWeakSplit, device: torch.device,
                     seed: int = 0, hooks: Sequence[Hook] = ()) -> Segmenter | None:
    """L-Net's class-agnostic object map: ``pss.weak.pipeline.train_saliency_model`` on the split labels (weak
    pixels 255, so foreground = the strong object classes). ``None`` when no object class is strong (nothing
    would be foreground: the 0 % setting, where M falls back to the CAMs, :func:`write_coarse_labels`)."""
    if len(split.strong) <= 1:
        return None
    return train_saliency_model(config, split.records, device, seed, hooks)


def write_object_maps(object_model: Segmenter, records: Sequence[ImageRecord], folder: Path,
                      device: torch.device) -> list[Path]:
    """The object maps M as EPS saliency PNGs ``<folder>/<name>.png`` at each image's size
    (``pss.data.saliency.write_saliency_png``, as ``pss.weak.pipeline.write_saliency_maps``)."""
    object_model.to(device)
    paths = []
    for record in records:
        image = to_float(load_rgb_tensor(record.image_path)).to(device)
        path = saliency_path(record, folder)
        write_saliency_png(path, predict_saliency(object_model, image).cpu().numpy())
        paths.append(path)
    return paths


# -- 3. CAMs -------------------------------------------------------------------------------------------------------
def train_cams(config: ExperimentConfig, split: StrongWeakSplit, object_model: Segmenter | None,
               work: Path, device: torch.device, eps: EPSConfig | None = None, seed: int = 0,
               hooks: Sequence[Hook] = ()) -> CAMNet:
    """A ``CAMNet`` on every split image with its complete tags: EPS with the object maps as saliency (written to
    ``<work>/objectness/<name>.png``) when there is an object model, else the plain CAM (``pss.methods.lnet``)."""
    model = build_cam_net(config.model, frozen_bn=config.model.pretrained)
    records = list(split.records)
    if object_model is None:
        method_cls = CAMCls(CAMClsConfig(), config.model.num_classes)
        dataset = SegDataset(records, train=True, crop=config.data.crop, seed=seed, fields=("tags",))
        train_stage(config, model, method_cls, dataset, device, seed, hooks)
        return model
    folder = work / "objectness"
    write_object_maps(object_model, records, folder, device)
    method = EPS(eps or EPSConfig(), config.model.num_classes)
    dataset = SegDataset(records, train=True, crop=config.data.crop, seed=seed, fields=("tags", SALIENCY_FIELD),
                         saliency_folder=folder)
    train_stage(config, model, method, dataset, device, seed, hooks)
    return model


# -- 4. coarse labels ----------------------------------------------------------------------------------------------
@torch.no_grad()
def lnet_coarse_label(image: torch.Tensor, tags: np.ndarray, cam_model: CAMNet, object_model: Segmenter | None,
                      diffusion: DiffusionConfig = DEFAULT_DIFFUSION, scales: Sequence[float] = EPS_SCALES,
                      short_side: int | None = None) -> torch.Tensor:
    """L-Net's coarse label map of one image (``pss.models.lnet.coarse_labels``), computed at short side
    ``short_side`` (None: the image's size) and returned at the image's size (nearest).

    Without an object model, M is the largest tag-restricted CAM score (ours: the CAMs' own extent, EPS's
    pseudo masks use the same maps against a constant 0.20).

    Shape: image (3, H, W) in [0, 1]; tags (20,) -> (H, W) uint8 (0, tagged classes, 255)."""
    height, width = int(image.shape[1]), int(image.shape[2])
    small = _resized(image, _work_size(height, width, short_side))
    tag_t = torch.from_numpy(np.asarray(tags, dtype=np.float32)).to(image.device)
    scores = multiscale_cam_scores(cam_model, small, tag_t, scales, flip=True)
    if object_model is None:
        objectness = scores.amax(dim=0)
    else:
        objectness = predict_saliency(object_model, small)
    label = coarse_labels(small, objectness, scores, diffusion)
    return _resized(label[None].float(), (height, width), "nearest")[0].to(torch.uint8)


def merge_labels(kept: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """The P-Net label: the split's kept label where it has a class, L-Net's coarse label elsewhere (our choice:
    a pixel label, where one exists, outranks a transferred one). Shape: (H, W) uint8 twice -> (H, W) uint8."""
    return np.where(kept != IGNORE_INDEX, kept, coarse).astype(np.uint8)


def write_coarse_labels(split: StrongWeakSplit, cam_model: CAMNet, object_model: Segmenter | None,
                        coarse_folder: Path, label_folder: Path, device: torch.device,
                        diffusion: DiffusionConfig = DEFAULT_DIFFUSION, scales: Sequence[float] = EPS_SCALES,
                        short_side: int | None = None) -> list[ImageRecord]:
    """L-Net's coarse labels of the weak-class images (``<coarse_folder>/<name>.png``) and the P-Net training
    records: ``mask_path`` = ``<label_folder>/<name>.png``, the merge (:func:`merge_labels`) for a weak-class image
    and the split label itself for a strong one; ``tags`` complete."""
    coarse_folder.mkdir(parents=True, exist_ok=True)
    label_folder.mkdir(parents=True, exist_ok=True)
    cam_model.to(device)
    if object_model is not None:
        object_model.to(device)
    weak = set(split.weak_images)
    out = []
    for record in split.records:
        assert record.mask_path is not None  # apply_split keeps labelled records only
        kept = read_label_png(record.mask_path)
        label = kept
        if record.name in weak:
            image = to_float(load_rgb_tensor(record.image_path)).to(device)
            coarse = lnet_coarse_label(image, split_record_tags(record), cam_model, object_model, diffusion, scales,
                                       short_side).cpu().numpy()
            write_label_png(coarse_folder / f"{record.name}.png", coarse)
            label = merge_labels(kept, coarse)
        path = label_folder / f"{record.name}.png"
        write_label_png(path, label)
        out.append(replace(record, mask_path=path))
    return out


@dataclass(frozen=True)
class CoarseQuality:
    """Coarse labels against the full masks: ``report`` and ``groups`` score every labelled pixel, an uncertain
    (255) one as background (ours: a pseudo mask is judged on every pixel, as ``pss.weak.quality``);
    ``coverage`` is the fraction of labelled pixels the coarse labels decided (not 255)."""

    report: SegReport
    groups: GroupMIoU
    coverage: float


def coarse_label_quality(coarse_folder: Path, source: Sequence[ImageRecord], strong: Sequence[int]) -> CoarseQuality:
    """The coarse labels (``<coarse_folder>/<name>.png``) against the *full* source masks (``source``: the records
    before the split), all classes and per group (``"pss"`` convention); images without a coarse label are left
    out. Evaluation only."""
    counted = [0, 0]  # labelled pixels, of them decided

    def pairs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for record in source:
            path = Path(coarse_folder) / f"{record.name}.png"
            if record.mask_path is None or not path.is_file():
                continue
            coarse = read_label_png(path)
            # an uncertain pixel (255) scores as background: a pseudo mask is judged on every labelled pixel
            pred = np.where(coarse == IGNORE_INDEX, 0, coarse).astype(np.uint8)
            target = load_mask(record.mask_path, (int(coarse.shape[0]), int(coarse.shape[1])))
            labelled = target != IGNORE_INDEX
            counted[0] += int(labelled.sum())
            counted[1] += int((labelled & (coarse != IGNORE_INDEX)).sum())
            yield record.name, pred, target
    report = evaluate_pairs(pairs())
    return CoarseQuality(report, group_miou(report, strong), counted[1] / counted[0] if counted[0] else float("nan"))


# -- 5. P-Net ------------------------------------------------------------------------------------------------------
def train_pnet(config: ExperimentConfig, records: Sequence[ImageRecord], pnet: PNetConfig, device: torch.device,
               seed: int = 0, model: Segmenter | None = None, hooks: Sequence[Hook] = ()) -> Segmenter:
    """P-Net (``pss.methods.pnet``) on the merged labels of :func:`write_coarse_labels` (``lambda_adv = 0``: the
    L-Net-only row, the same segmenter without the discriminator)."""
    model = model if model is not None else build_segmenter(config.model)
    method = PNet(pnet, config.model.num_classes)
    dataset = SegDataset(list(records), train=True, crop=config.data.crop, seed=seed, fields=("tags",))
    train_stage(config, model, method, dataset, device, seed, hooks)
    return model


@dataclass
class TransferResult:
    """What :func:`run_transfer` built; the models stay on ``device``."""

    split: StrongWeakSplit
    object_model: Segmenter | None
    cam_model: CAMNet
    records: list[ImageRecord]
    coarse_folder: Path
    pnet: Segmenter
    pnet_config: PNetConfig
    coarse_quality: CoarseQuality | None = None
    notes: list[str] = field(default_factory=list)


def run_transfer(config: ExperimentConfig, source: Sequence[ImageRecord], work: Path, device: torch.device,
                 split_config: StrongWeakConfig | None = None, pnet: PNetConfig | None = None,
                 diffusion: DiffusionConfig = DEFAULT_DIFFUSION, eps: EPSConfig | None = None,
                 scales: Sequence[float] = EPS_SCALES, short_side: int | None = None, seed: int = 0,
                 score_coarse: bool = True) -> TransferResult:
    """Split -> L-Net (object map + CAMs) -> coarse labels -> P-Net, every training stage over the one loop with
    ``config.train`` (steps, batch size, LR) and ``config.model``. The split comes from ``pnet`` (a ``PNetConfig``
    is a ``StrongWeakConfig``) unless ``split_config`` is given. Work files go under ``work``: ``strong_labels/``,
    ``objectness/``, ``coarse/``, ``labels/``."""
    pnet = pnet or PNetConfig()
    split_cfg = split_config or pnet
    strong = split_cfg.strong(config.model.num_classes)
    split = apply_split(source, strong, work / "strong_labels", split_cfg.hide)  # type: ignore[arg-type]
    if split_config is not None:  # P-Net must tell weak images by the same split
        pnet = replace(pnet, strong_classes=split.strong, hide=split.policy)
    notes = []
    object_model = train_object_map(config, split, device, seed)
    if object_model is None:
        notes.append("no strong object class: no object map; M = the largest CAM score, CAMs without saliency")
    cam_model = train_cams(config, split, object_model, work, device, eps, seed)
    records = write_coarse_labels(split, cam_model, object_model, work / "coarse", work / "labels", device,
                                  diffusion, scales, short_side)
    quality = coarse_label_quality(work / "coarse", source, split.strong) if score_coarse else None
    model = train_pnet(config, records, pnet, device, seed)
    return TransferResult(split, object_model, cam_model, records, work / "coarse", model, pnet, quality, notes)
