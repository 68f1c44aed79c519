"""The stages of the tags-as-supervision pipeline (issue 17), each a plain function over records and folders:

1. :func:`train_saliency_model` on the source masks (``pss.methods.saliency``) and :func:`write_saliency_maps` for
   a user's images (``SALImages/`` layout), unless the user supplied maps (``pss.data.saliency.check_saliency``);
2. :func:`train_cam_model`: EPS on the user's tagged images (``pss.methods.eps``);
3. :func:`write_cam_pseudo_masks`: EPS multi-scale + flip scores restricted to each image's tags, pseudo masks as
   VOC palette PNGs (background score 0.20) and the score maps (``<name>.npz``, tagged classes only, float16);
4. :func:`write_affinity_labels`: confident regions of those scores (psa's two background powers, 255 between);
5. :func:`train_affinity_model` (``pss.methods.affinity``) and :func:`write_refined_masks`: the random walk.

Every training stage runs the one loop (``pss.engine.trainer.Trainer``) with the method's one stream built here
(``SegDataset`` with the method's fields; the engine's ``make_stream`` cannot yet pass a saliency folder).
No dCRF anywhere: EPS makes its pseudo masks without it (README), psa's affinity labels use it (la/ha CRF) and
here use the CAM powers alone (no CRF dependency).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pss.config import ExperimentConfig
from pss.data.datasets import SegDataset
from pss.data.image_io import load_rgb_tensor
from pss.data.labels import IGNORE_INDEX, write_label_png
from pss.data.loaders import BatchStream, collate_skip_none, shuffled_batches
from pss.data.records import ImageRecord
from pss.data.saliency import SALIENCY_FIELD, saliency_path, write_saliency_png
from pss.data.tags import NUM_TAGS, record_tags
from pss.data.transforms import to_float
from pss.engine.hooks import Hook
from pss.engine.trainer import Trainer, TrainResult
from pss.methods.affinity import Affinity, AffinityConfig
from pss.methods.base import Method, SegLossWeights
from pss.methods.eps import EPS, EPSConfig
from pss.methods.saliency import Saliency, saliency_from_logits
from pss.models.affinity import (MAX_DENSE_NODES, PSA_BETA, PSA_LOGT, PSA_RADIUS, AffinityNet, build_affinity_net,
                                 from_grid, random_walk, to_grid)
from pss.models.cam import EPS_BG_THRESHOLD, EPS_SCALES, CAMNet, build_cam_net, cam_pseudo_mask, multiscale_cam_scores
from pss.models.segmenter import Segmenter, build_segmenter, upsample

PSA_ALPHA_LOW: int = 4  # psa la_crf: background (1 - max)^4, the stronger background
PSA_ALPHA_HIGH: int = 32  # psa ha_crf: background (1 - max)^32, the weaker background
PSA_ALPHA_RW: int = 16  # psa infer_aff.py default alpha of the random walk's background channel


def _image(record: ImageRecord, device: torch.device) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] as displayed (EXIF applied), on ``device``."""
    return to_float(load_rgb_tensor(record.image_path)).to(device)


def _shrunk(maps: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """``maps`` (K, H, W) resized bilinear so that the short side is ``short_side`` (None: unchanged; never
    enlarged). The inference stages compute at that size and write their outputs at the image's own size."""
    height, width = int(maps.shape[1]), int(maps.shape[2])
    if short_side is None or min(height, width) <= short_side:
        return maps
    size = (short_side, max(1, round(width * short_side / height))) if height <= width else \
        (max(1, round(height * short_side / width)), short_side)
    return F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def _to_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (K, h, w) maps to ``size`` = (H, W); unchanged when equal."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    return F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def train_stage(config: ExperimentConfig, model: torch.nn.Module, method: Method, dataset: SegDataset,
                device: torch.device, seed: int = 0, hooks: Sequence[Hook] = ()) -> TrainResult:
    """``config.train.steps`` steps of ``method`` on ``model`` with ``dataset`` as the method's one stream.
    ``hooks``: where this stage reports (a pipeline run passes ``StageContext.hooks_for(stage)``: the run's
    ``train`` events, the console, the stop request)."""
    if len(method.streams) != 1:
        raise ValueError(f"a weak stage draws one stream, {method.name!r} declares {method.streams}")
    stream = BatchStream(dataset, shuffled_batches(len(dataset), config.train.batch_size, seed), collate_skip_none,
                         config.data.num_workers)
    try:
        trainer = Trainer(config, model, method, {method.streams[0]: stream}, device,  # type: ignore[arg-type]
                          list(hooks))
        return trainer.run()
    finally:
        stream.close()


# -- 1. saliency ---------------------------------------------------------------------------------------------------
def train_saliency_model(config: ExperimentConfig, source: Sequence[ImageRecord], device: torch.device,
                         seed: int = 0, hooks: Sequence[Hook] = ()) -> Segmenter:
    """A class-agnostic foreground segmenter trained on the source masks (``pss.methods.saliency``)."""
    model = build_segmenter(config.model)
    method = Saliency(SegLossWeights(), config.model.num_classes)
    labelled = [r for r in source if r.mask_path is not None]
    train_stage(config, model, method, SegDataset(labelled, train=True, crop=config.data.crop, seed=seed), device, seed,
                hooks)
    return model


@torch.no_grad()
def predict_saliency(model: Segmenter, image: torch.Tensor) -> torch.Tensor:
    """Foreground probability of every pixel of one image. Shape: (3, H, W) in [0, 1] -> (H, W) float32."""
    model.eval()
    logits = model(image.unsqueeze(0)).logits
    return saliency_from_logits(upsample(logits, (int(image.shape[1]), int(image.shape[2]))))[0]


def write_saliency_maps(model: Segmenter, records: Sequence[ImageRecord], folder: Path, device: torch.device,
                        short_side: int | None = None) -> list[Path]:
    """``<folder>/<name>.png`` for every record (the EPS layout, 0-255 grey; readable by ``read_saliency``), at
    the image's size; predicted at short side ``short_side`` when given (large phone photos)."""
    model.to(device)
    paths = []
    for record in records:
        image = _image(record, device)
        saliency = predict_saliency(model, _shrunk(image, short_side))
        saliency = _to_size(saliency[None], (int(image.shape[1]), int(image.shape[2])))[0]
        path = saliency_path(record, folder)
        write_saliency_png(path, saliency.cpu().numpy())
        paths.append(path)
    return paths


# -- 2-3. EPS ------------------------------------------------------------------------------------------------------
def train_cam_model(config: ExperimentConfig, tagged: Sequence[ImageRecord], saliency_folder: Path | None,
                    device: torch.device, eps: EPSConfig | None = None, seed: int = 0,
                    frozen_bn: bool | None = None, hooks: Sequence[Hook] = ()) -> CAMNet:
    """EPS on the user's tagged images (``pss.data.tags.user_tag_report(...).tagged``) with their saliency maps
    (``saliency_folder``; None: ``SALImages/`` beside the images). ``frozen_bn`` (default: when the backbone is
    ImageNet-pretrained) keeps the backbone's BatchNorm in eval mode with frozen affine parameters, as EPS does."""
    model = build_cam_net(config.model, frozen_bn=config.model.pretrained if frozen_bn is None else frozen_bn)
    method = EPS(eps or EPSConfig(), config.model.num_classes)
    dataset = SegDataset(list(tagged), train=True, crop=config.data.crop, seed=seed, fields=("tags", SALIENCY_FIELD),
                         saliency_folder=saliency_folder)
    train_stage(config, model, method, dataset, device, seed, hooks)
    return model


def save_scores(path: Path, scores: torch.Tensor, tags: np.ndarray) -> None:
    """The tagged classes' score maps as ``classes`` (int, 1..20) + ``scores`` (K, H, W) float16 (psa keeps a
    dict of tagged-class maps the same way)."""
    classes = np.flatnonzero(tags) + 1
    maps = scores[classes - 1].cpu().numpy().astype(np.float16) if len(classes) else \
        np.zeros((0, *scores.shape[1:]), np.float16)
    np.savez_compressed(path, classes=classes.astype(np.int64), scores=maps)


def load_scores(path: Path) -> torch.Tensor:
    """(20, H, W) float32 class scores (untagged classes 0) from :func:`save_scores`."""
    with np.load(path) as data:
        classes, maps = data["classes"], data["scores"].astype(np.float32)
    out = torch.zeros(NUM_TAGS, *maps.shape[1:])
    if len(classes):
        out[torch.from_numpy(classes - 1)] = torch.from_numpy(maps)
    return out


def write_cam_pseudo_masks(model: CAMNet, tagged: Sequence[ImageRecord], mask_folder: Path, score_folder: Path,
                           device: torch.device, scales: Sequence[float] = EPS_SCALES, flip: bool = True,
                           bg_threshold: float = EPS_BG_THRESHOLD, short_side: int | None = None) -> dict[str, Path]:
    """EPS pseudo masks (``<mask_folder>/<name>.png``, VOC palette) and scores (``<score_folder>/<name>.npz``),
    both at the image's size; the CAMs are computed at short side ``short_side`` when given."""
    mask_folder.mkdir(parents=True, exist_ok=True)
    score_folder.mkdir(parents=True, exist_ok=True)
    model.to(device)
    written = {}
    for record in tagged:
        tags = record_tags(record)
        image = _image(record, device)
        scores = multiscale_cam_scores(model, _shrunk(image, short_side), torch.from_numpy(tags).to(device), scales,
                                       flip)
        scores = _to_size(scores, (int(image.shape[1]), int(image.shape[2])))
        path = mask_folder / f"{record.name}.png"
        write_label_png(path, cam_pseudo_mask(scores, bg_threshold).cpu().numpy())
        save_scores(score_folder / f"{record.name}.npz", scores, tags)
        written[record.name] = path
    return written


# -- 4-5. AffinityNet ----------------------------------------------------------------------------------------------
def confident_label_map(scores: torch.Tensor, alpha_low: float = PSA_ALPHA_LOW,
                        alpha_high: float = PSA_ALPHA_HIGH) -> torch.Tensor:
    """psa's affinity labels from normalised class scores (methods.md §10, ``VOC12AffDataset``, without dCRF):
    with ``bg_α = (1 - max_c s_c)^α``, a pixel is class ``argmax`` where that is an object class even against the
    strong background ``bg_{α_low}``; background (0) where even the weak background ``bg_{α_high}`` wins; 255
    (uncertain, no pair uses it) in between.

    Shape: scores (C, H, W) in [0, 1] -> (H, W) uint8.
    """
    peak = scores.amax(dim=0, keepdim=True) if scores.shape[0] else torch.zeros(1, *scores.shape[1:])
    low = torch.cat([(1 - peak).pow(alpha_low), scores]).argmax(dim=0)
    high = torch.cat([(1 - peak).pow(alpha_high), scores]).argmax(dim=0)
    label = torch.where(low == 0, torch.full_like(low, IGNORE_INDEX), low)
    return torch.where(high == 0, torch.zeros_like(label), label).to(torch.uint8)


def write_affinity_labels(tagged: Sequence[ImageRecord], score_folder: Path, folder: Path,
                          alpha_low: float = PSA_ALPHA_LOW, alpha_high: float = PSA_ALPHA_HIGH) -> list[ImageRecord]:
    """Affinity label PNGs (``<folder>/<name>.png``) and the records to train AffinityNet on (``mask_path`` =
    the label map; ``user``/``tags`` kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for record in tagged:
        label = confident_label_map(load_scores(score_folder / f"{record.name}.npz"), alpha_low, alpha_high)
        path = folder / f"{record.name}.png"
        write_label_png(path, label.numpy())
        out.append(replace(record, mask_path=path))
    return out


def train_affinity_model(config: ExperimentConfig, labelled: Sequence[ImageRecord], device: torch.device,
                         radius: int = PSA_RADIUS, seed: int = 0, hooks: Sequence[Hook] = ()) -> AffinityNet:
    """AffinityNet on the affinity label maps of :func:`write_affinity_labels` (``pss.methods.affinity``)."""
    model = build_affinity_net(config.model)
    method = Affinity(AffinityConfig(radius=radius), config.model.num_classes)
    train_stage(config, model, method, SegDataset(list(labelled), train=True, crop=config.data.crop, seed=seed),
                device, seed, hooks)
    return model


@torch.no_grad()
def refine_scores(model: AffinityNet, image: torch.Tensor, scores: torch.Tensor, alpha: float = PSA_ALPHA_RW,
                  beta: float = PSA_BETA, logt: int = PSA_LOGT, radius: int = PSA_RADIUS,
                  max_dense_nodes: int = MAX_DENSE_NODES) -> torch.Tensor:
    """Random-walk refinement of one image's scores (psa ``infer_aff.py``): background channel ``(1 - max)^α``
    (α = 16), all 21 maps average-pooled to the stride-8 grid, propagated with ``T^(2^logt)`` (β = 8), bilinear
    back to the image size.

    Shape: image (3, H, W) in [0, 1]; scores (C, H, W) -> (C+1, H, W) (channel 0 = background).
    """
    model.eval()
    features = model(image.unsqueeze(0)).features[0]
    height, width = int(image.shape[1]), int(image.shape[2])
    scores = scores.to(features.device).float()
    full = torch.cat([(1 - scores.amax(dim=0, keepdim=True)).pow(alpha), scores])
    grid = (int(features.shape[1]), int(features.shape[2]))
    walked = random_walk(to_grid(full, grid, model.output_stride), features, beta, logt, radius, max_dense_nodes)
    return from_grid(walked, (height, width), model.output_stride)


def write_refined_masks(model: AffinityNet, tagged: Sequence[ImageRecord], score_folder: Path, folder: Path,
                        device: torch.device, alpha: float = PSA_ALPHA_RW, beta: float = PSA_BETA,
                        logt: int = PSA_LOGT, radius: int = PSA_RADIUS, max_dense_nodes: int = MAX_DENSE_NODES,
                        short_side: int | None = None) -> dict[str, Path]:
    """Refined masks ``<folder>/<name>.png`` at the image's size: argmax of :func:`refine_scores` (untagged classes
    stay 0, so they never win; an image tagged with no class stays all background), walked at short side
    ``short_side`` when given (the grid, and so the random walk's memory, shrinks with it)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to(device)
    written = {}
    for record in tagged:
        scores = load_scores(score_folder / f"{record.name}.npz")
        image = _image(record, device)
        if scores.amax() <= 0:
            mask = torch.zeros(image.shape[1:], dtype=torch.uint8)
        else:
            small = _shrunk(image, short_side)
            refined = refine_scores(model, small, _to_size(scores, (int(small.shape[1]), int(small.shape[2]))),
                                    alpha, beta, logt, radius, max_dense_nodes)
            mask = _to_size(refined, (int(image.shape[1]), int(image.shape[2]))).argmax(dim=0).to(torch.uint8)
        path = folder / f"{record.name}.png"
        write_label_png(path, mask.cpu().numpy())
        written[record.name] = path
    return written
