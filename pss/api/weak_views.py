"""Inspect's views of the weak-supervision runs (issues 17 and 18): what each stage wrote for one image.

The runs' directory layout is the pipelines' contract (``pss.weak.eps_run`` / ``pss.weak.transfer_run``):

* EPS runs (``eps_seg``, ``eps_affinity``): ``saliency/<name>.png`` (8-bit grey; absent when the user supplied
  ``SALImages/``, the report then says ``saliency_source: "user"`` and the user's own map is shown),
  ``cam/<name>.npz`` (the tagged classes' CAM scores, ``pss.weak.pipeline.load_scores``), ``cam/<name>.png`` (the
  EPS pseudo mask), ``affinity/<name>.png`` (affinity labels, 255 uncertain), ``affinity/model.pt`` (AffinityNet's
  state_dict), ``affinity/refined/<name>.png`` (the random-walk refined mask); report ``stage_quality``.
* transfer runs: ``objectness/<name>.png`` (L-Net's class-agnostic object map, grey), ``coarse/<name>.png``
  (L-Net's coarse label, 255 unknown), ``labels/<name>.png`` (the merged training labels); report ``split``
  (which classes were strong, i.e. pixel-labelled, and which weak, i.e. image labels only) and ``coarse_quality``.
  These maps are of the SOURCE images of the split (VOC), not of the user's photos: the view of a transfer run
  takes one of the run's own images (:func:`transfer_images`) and shows it from the run's source folder.

A missing file is a panel with a message, never an error: a run stopped early, or an image no stage covered (an
untagged image has no CAM), still shows what there is. The pictures are PNGs under ``WS/cache/weak/<run>/`` keyed
on the source file (mtime, size), drawn at the Inspect tab's display size.

For a clicked pixel of an ``eps_affinity`` run, :func:`pixel_affinities` gives its affinity to every neighbour
within the pair radius (5) on AffinityNet's stride-8 feature grid, ``W_ij = exp(-mean_c |f_i - f_j|)`` (the
report's eq. 5, ``pss.models.affinity.pair_affinities``; not re-derived here), drawn as a heat map over the image.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import pss.api.maps as maps
from pss.api.data import file_key, load_image
from pss.api.users import find_record, read_user, user_records
from pss.data.labels import CLASS_NAMES, read_label_png
from pss.errors import DatasetError, RunStoreError
from pss.workspace import Workspace

EPS_METHODS: tuple[str, ...] = ("eps_seg", "eps_affinity")
TRANSFER_METHODS: tuple[str, ...] = ("transfer",)
WEAK_METHODS: tuple[str, ...] = (*EPS_METHODS, *TRANSFER_METHODS)
VIEWS_VERSION = "w2"  # part of every PNG name: bump when a drawing changes
AFFINITY_MODEL = "model.pt"
USER_SALIENCY = "SALImages"  # pss.data.saliency's folder name in the user's folder (EPS's layout)
HEAT_ALPHA = 0.65  # the CAM / affinity heat over the photo: enough photo left to see what lights up

WeakKind = Literal["eps", "transfer"]


@dataclass(frozen=True)
class Panel:
    """One stage output of the image: ``path`` (a PNG to show) or, when the file is missing, ``None`` and
    ``missing`` (what is missing and why that can be). ``caption`` names the stage output."""

    key: str
    caption: str
    path: Path | None = None
    missing: str = ""


@dataclass(frozen=True)
class StageQuality:
    """A mask stage's FIoU / MIoU (fractions) against the user's evaluation masks, from the run's report."""

    stage: str
    fiou: float | None
    miou: float | None
    num_images: int | None = None


@dataclass(frozen=True)
class SplitInfo:
    """A transfer run's strong/weak split: class names (background is always strong), fraction and seed."""

    strong: list[str]
    weak: list[str]
    fraction: float | None
    seed: int | None

    def text(self) -> str:
        fraction = "" if self.fraction is None else f" (fraction {self.fraction:g}"
        seed = "" if self.seed is None else (f", seed {self.seed}" if fraction else f" (seed {self.seed}")
        tail = ")" if fraction or seed else ""
        return (f"**weak** (image labels only, pixels hidden): {', '.join(self.weak) or 'none'} · "
                f"**strong** (pixel labels): {', '.join(self.strong) or 'none'}{fraction}{seed}{tail}")


@dataclass
class WeakView:
    """The stage outputs of image ``name`` under weak-supervision run ``run_id``.

    ``cams``: (PNG, class name) for each tagged class; ``panels``: the other stage outputs in stage order (EPS:
    saliency, EPS mask, refined mask; transfer: object map, coarse label, training labels); ``messages``: what
    is missing. ``display``: the size the panels are drawn at (clicks are in its pixels).
    """

    run_id: str
    user: str
    name: str
    method: str
    kind: WeakKind
    width: int
    height: int
    display: maps.DisplaySize
    panels: list[Panel]
    cams: list[tuple[Path, str]] = field(default_factory=list)
    quality: list[StageQuality] = field(default_factory=list)
    split: SplitInfo | None = None
    coarse_quality: dict[str, float] = field(default_factory=dict)  # transfer: mIoU all / strong / weak, coverage
    saliency_source: str | None = None
    has_affinity: bool = False
    messages: list[str] = field(default_factory=list)


@dataclass
class PixelAffinity:
    """A clicked pixel's affinities on AffinityNet's feature grid.

    ``cell`` (row, col) of image pixel (x, y) on the ``grid`` (h, w) at ``stride``; ``neighbours``: (dy, dx,
    affinity) for the cell itself (0, 0, 1.0) and every in-grid cell with ``0 < dy² + dx² < radius²``; ``heat``:
    the PNG of those affinities over the image at the display size, with a 0..1 colour bar on the right.
    """

    x: int
    y: int
    cell: tuple[int, int]
    grid: tuple[int, int]
    stride: int
    radius: int
    neighbours: list[tuple[int, int, float]]
    heat: Path

    @property
    def values(self) -> np.ndarray:
        return np.array([v for _, _, v in self.neighbours], dtype=np.float64)


# ---- the run ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _WeakRun:
    run_id: str
    dir: Path
    user: str
    method: str
    kind: WeakKind
    config: dict[str, Any]
    report: dict[str, Any]


def weak_kind(method: str) -> WeakKind | None:
    """``eps`` / ``transfer`` for a weak-supervision method, ``None`` for every other method."""
    if method in EPS_METHODS:
        return "eps"
    return "transfer" if method in TRANSFER_METHODS else None


def _open(ws: Workspace, run_id: str) -> _WeakRun:
    if not run_id:
        raise DatasetError("choose a finished run first (the list shows the selected user's finished runs)")
    try:
        run = ws.store().open_run(run_id)
    except RunStoreError as exc:
        raise DatasetError(f"run {run_id!r} is not in this workspace; pick one of the listed runs") from exc
    config = run.config
    method = str((config.get("method") or {}).get("name", ""))
    kind = weak_kind(method)
    if kind is None:
        raise DatasetError(f"run {run_id} is a {method or 'plain'} run, not a weak-supervision run (one of "
                           f"{', '.join(WEAK_METHODS)}): its stages have nothing to show here")
    user = str((config.get("data") or {}).get("user", ""))
    return _WeakRun(run_id, run.dir, user, method, kind, config, run.read_report() or {})


def run_method(ws: Workspace, run_id: str) -> str:
    """The method named in ``run_id``'s config; DatasetError when there is no such run."""
    if not run_id:
        raise DatasetError("choose a finished run first (the list shows the selected user's finished runs)")
    try:
        return str((ws.store().open_run(run_id).config.get("method") or {}).get("name", ""))
    except RunStoreError as exc:
        raise DatasetError(f"run {run_id!r} is not in this workspace; pick one of the listed runs") from exc


# ---- drawing --------------------------------------------------------------------------------------------------

def _cache_dir(ws: Workspace, run_id: str) -> Path:
    return Path(ws.root) / "cache" / "weak" / run_id


def _png_name(ws: Workspace, run: _WeakRun, name: str, what: str, *sources: Path) -> Path:
    text = "|".join([VIEWS_VERSION, name, what, *(file_key(s) for s in sources)])
    key = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    return _cache_dir(ws, run.run_id) / f"{name}-{what}-{key}.png"


def _grey(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An 8-bit grey map (saliency, object map) as (H, W) float32 in [0, 1] at ``size`` = (width, height)."""
    from PIL import Image

    with Image.open(path) as im:
        values = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return maps.resize_rgb(values, size)


def _label_panel(photo: np.ndarray, path: Path, size: tuple[int, int]) -> np.ndarray:
    """A palette label map (255 = uncertain / unknown, drawn white) over the photo at full opacity."""
    label = maps.resize_label(read_label_png(path), size)
    return maps.label_overlay(photo, label, 1.0)


def _heat_panel(photo: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] as an inferno heat map over the photo (more heat, more colour)."""
    values = np.clip(values, 0.0, 1.0)
    return maps.blend(photo, maps.heat_colours(values), 0.2 + HEAT_ALPHA * values)


def _draw(out: Path, draw: Any) -> Path:
    if not out.exists():
        maps.save_png(draw(), out)
    return out


def _file_panel(ws: Workspace, run: _WeakRun, name: str, key: str, caption: str, source: Path, kind: str,
                photo: np.ndarray, size: tuple[int, int], missing: str) -> Panel:
    """A panel of the file ``source`` drawn as ``kind`` ("grey" map or "label" map), or its missing message."""
    if not source.is_file():
        return Panel(key, caption, None, f"{caption}: {missing} ({source} not found)")
    out = _png_name(ws, run, name, key, source)
    if kind == "grey":
        return Panel(key, caption, _draw(out, lambda: _heat_panel(photo, _grey(source, size))))
    return Panel(key, caption, _draw(out, lambda: _label_panel(photo, source, size)))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _quality(report: dict[str, Any]) -> list[StageQuality]:
    stages = report.get("stage_quality") or {}
    if not isinstance(stages, dict):
        return []
    out = []
    for stage, entry in stages.items():
        if isinstance(entry, dict):
            images = entry.get("num_images")
            out.append(StageQuality(str(stage), _number(entry.get("fiou")), _number(entry.get("miou")),
                                    int(images) if isinstance(images, (int, float)) else None))
    return out


def split_info(report: dict[str, Any]) -> SplitInfo | None:
    """The strong/weak split of a transfer run's report (class names from the ids; background is strong), or
    ``None`` when the report has none (not a transfer run, or not finished)."""
    split = report.get("split")
    if not isinstance(split, dict):
        return None

    def names(ids_key: str, names_key: str) -> list[str]:
        ids = split.get(ids_key)
        if isinstance(ids, list) and all(isinstance(i, int) and 0 <= i < len(CLASS_NAMES) for i in ids):
            return [CLASS_NAMES[i] for i in sorted(ids)]
        given = split.get(names_key)
        return [str(n) for n in given] if isinstance(given, list) else []

    seed = split.get("seed")
    return SplitInfo(names("strong", "strong_names"), names("weak", "weak_names"), _number(split.get("fraction")),
                     int(seed) if isinstance(seed, int) else None)


def _cam_gallery(ws: Workspace, run: _WeakRun, name: str, photo: np.ndarray,
                 size: tuple[int, int]) -> tuple[list[tuple[Path, str]], str]:
    """(PNG, class name) of each tagged class's CAM, or ([], what is missing)."""
    from pss.weak.pipeline import load_scores

    source = run.dir / "cam" / f"{name}.npz"
    if not source.is_file():
        return [], (f"CAMs: none for {name} ({source} not found: an untagged image has none, or the cam stage "
                    "has not run)")
    with np.load(source) as data:
        classes = [int(c) for c in data["classes"]]
    if not classes:
        return [], f"CAMs: {name} has no tagged class, so no class activation map"
    scores = load_scores(source).numpy()  # (20, H, W); class c is row c - 1
    gallery = []
    for c in classes:
        out = _png_name(ws, run, name, f"cam{c}", source)
        gallery.append((_draw(out, lambda c=c: _heat_panel(photo, maps.resize_rgb(scores[c - 1], size))),
                        CLASS_NAMES[c]))
    return gallery, ""


TRANSFER_FOLDERS = ("coarse", "objectness", "labels")  # coarse first: the weak-class images L-Net labelled


def transfer_images(ws: Workspace, run_id: str) -> list[str]:
    """The source images a transfer run wrote maps for: those with a coarse label (the weak-class images) first,
    then the others (object map or training label only), each part sorted by name."""
    run = _open(ws, run_id)
    if run.kind != "transfer":
        raise DatasetError(f"run {run_id} is a {run.method} run: its stage maps are of the user's images")
    seen: dict[str, None] = {}
    for folder in TRANSFER_FOLDERS:
        part = run.dir / folder
        for path in sorted(part.glob("*.png")) if part.is_dir() else []:
            seen.setdefault(path.stem, None)
    return list(seen)


def _source_image(ws: Workspace, run: _WeakRun, name: str) -> Path:
    """The photo of source image ``name`` of a transfer run (its config's VOC root, else the workspace's);
    ``name`` must be one of the run's images (never a path from the client)."""
    from pss.data.image_io import IMAGE_SUFFIXES

    if name not in transfer_images(ws, run.run_id):
        raise DatasetError(f"run {run.run_id} has no stage map of an image named {name!r}: a transfer run's maps are "
                           "of its source (VOC) split images; pick one of them")
    data = run.config.get("data") or {}
    roots = [Path(str(data["voc_root"]))] if data.get("voc_root") else []
    roots += [Path(str(data.get("root") or "data")) / "VOC2012", ws.data / "VOC2012"]
    for root in roots:
        for suffix in IMAGE_SUFFIXES:
            path = root / "JPEGImages" / f"{name}{suffix}"
            if path.is_file():
                return path
    raise DatasetError(f"the source image {name} of run {run.run_id} is not in {roots[0] / 'JPEGImages'}; restore the "
                       "source data the run was trained on")


def weak_view(ws: Workspace, run_id: str, name: str) -> WeakView:
    """What the stages of weak-supervision run ``run_id`` wrote for image ``name`` (module docstring): a user's
    image for an EPS run, one of :func:`transfer_images` for a transfer run.

    DatasetError for a run that is not a weak-supervision run, an unknown run or image; missing stage files are
    panels with messages (``WeakView.messages``)."""
    run = _open(ws, run_id)
    if not name:
        raise DatasetError("choose an image of the run's user" if run.kind == "eps" else
                           "choose one of the transfer run's source images")
    if run.kind == "eps":
        image_path = find_record(user_records(ws, run.user), name, run.user).image_path
    else:
        image_path = _source_image(ws, run, name)
    image = load_image(image_path)
    height, width = image.shape[:2]
    display = maps.display_size(width, height)
    size = (display.width, display.height)
    photo = maps.resize_rgb(image, size)
    view = WeakView(run.run_id, run.user, name, run.method, run.kind, width, height, display, [],
                    quality=_quality(run.report))
    if run.kind == "eps":
        source = str(run.report.get("saliency_source") or "")
        view.saliency_source = source or None
        if source == "user":
            saliency = read_user(ws, run.user).root / USER_SALIENCY / f"{name}.png"
            caption = "saliency (the user's SALImages)"
        else:
            saliency = run.dir / "saliency" / f"{name}.png"
            caption = "saliency (our model)"
        view.panels.append(_file_panel(ws, run, name, "saliency", caption, saliency, "grey", photo, size,
                                       "no saliency map for this image"))
        view.cams, missing = _cam_gallery(ws, run, name, photo, size)
        view.messages += [missing] if missing else []
        view.panels.append(_file_panel(ws, run, name, "eps", "EPS pseudo mask", run.dir / "cam" / f"{name}.png",
                                       "label", photo, size, "no EPS mask (untagged image, or the cam stage has "
                                                             "not run)"))
        if run.method == "eps_affinity":
            view.panels.append(_file_panel(ws, run, name, "refined", "AffinityNet-refined mask",
                                           run.dir / "affinity" / "refined" / f"{name}.png", "label", photo, size,
                                           "no refined mask (untagged image, or the affinity stage has not run)"))
            model = run.dir / "affinity" / AFFINITY_MODEL
            view.has_affinity = model.is_file()
            if not view.has_affinity:
                view.messages.append(f"pixel affinities: no AffinityNet weights ({model} not found)")
    else:
        view.panels += [
            _file_panel(ws, run, name, "objectness", "object map (L-Net, class-agnostic)",
                        run.dir / "objectness" / f"{name}.png", "grey", photo, size, "no object map"),
            _file_panel(ws, run, name, "coarse", "coarse label (L-Net; white = unknown)",
                        run.dir / "coarse" / f"{name}.png", "label", photo, size, "no coarse label"),
            _file_panel(ws, run, name, "labels", "merged training labels", run.dir / "labels" / f"{name}.png",
                        "label", photo, size, "no training label"),
        ]
        view.split = split_info(run.report)
        coarse = run.report.get("coarse_quality")
        if isinstance(coarse, dict):
            view.coarse_quality = {k: float(v) for k, v in coarse.items()
                                   if k in ("all", "strong", "weak", "coverage") and isinstance(v, (int, float))}
        if view.split is None:
            view.messages.append("split: the run's report has no strong/weak split yet (unfinished run?)")
    view.messages += [p.missing for p in view.panels if p.path is None]
    return view


# ---- pixel affinities ----------------------------------------------------------------------------------------------

_MODELS: OrderedDict[str, Any] = OrderedDict()  # (run, weights file key) -> AffinityNet on CPU, newest last
_FEATURES: OrderedDict[str, Any] = OrderedDict()  # (model key, image key, size) -> (D, h, w) features
_LOCK = threading.Lock()
_KEEP_MODELS, _KEEP_FEATURES = 2, 8


def _cached(cache: OrderedDict[str, Any], key: str, keep: int, make: Any) -> Any:
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()
    with _LOCK:
        cache[key] = value
        while len(cache) > keep:
            cache.popitem(last=False)
    return value


def _affinity_net(run: _WeakRun) -> tuple[Any, str]:
    """The run's AffinityNet (``pss.weak.eps_run.load_affinity_net``: the run's model at the method's
    ``net_output_stride``, its saved weights) and a cache key of the weights file."""
    from pss.config import resolve_config
    from pss.weak.eps_run import load_affinity_net

    weights = run.dir / "affinity" / AFFINITY_MODEL
    if not weights.is_file():
        raise DatasetError(f"run {run.run_id} has no AffinityNet weights ({weights} not found): the affinity stage "
                           "has not finished")
    key = f"{run.run_id}|{file_key(weights)}"

    def make() -> Any:
        return load_affinity_net(run.dir, resolve_config(run.config))

    return _cached(_MODELS, key, _KEEP_MODELS, make), key


def _method_value(run: _WeakRun, key: str, default: Any) -> Any:
    value = (run.config.get("method") or {}).get(key)
    return default if value is None else value


def pixel_affinities(ws: Workspace, run_id: str, name: str, x: int, y: int) -> PixelAffinity:
    """Affinities of image pixel (x, y) (clamped into the image) to its neighbours on AffinityNet's feature grid.

    The features are computed as the pipeline's random walk computes them (``pss.weak.pipeline``): the photo in
    [0, 1] at the run's ``infer_short_side`` when set; the cell is the grid cell under the pixel at that size.
    Neighbours: the cell itself and every in-grid cell at ``0 < dy² + dx² < radius²`` (the method's ``radius``,
    psa 5), i.e. ``pair_offsets`` in both directions; values ``pss.models.affinity.pair_affinities``.

    DatasetError for a run without AffinityNet weights (``eps_seg``, transfer, unfinished ``eps_affinity``).
    """
    import torch

    from pss.data.image_io import load_rgb_tensor
    from pss.data.transforms import to_float
    from pss.models.affinity import PSA_RADIUS, pair_affinities, pair_offsets
    from pss.weak.pipeline import _shrunk

    run = _open(ws, run_id)
    if run.method != "eps_affinity":
        raise DatasetError(f"run {run_id} is a {run.method} run: only eps_affinity runs have AffinityNet "
                           "affinities")
    if x is None or y is None:
        raise DatasetError("click a pixel of a stage map (or type its x and y)")
    record = find_record(user_records(ws, run.user), name, run.user)
    model, model_key = _affinity_net(run)
    image = to_float(load_rgb_tensor(record.image_path))
    height, width = int(image.shape[1]), int(image.shape[2])
    short_side = _method_value(run, "infer_short_side", None)
    small = _shrunk(image, int(short_side) if short_side else None)
    radius = int(_method_value(run, "radius", PSA_RADIUS))

    def features() -> torch.Tensor:
        with torch.no_grad():
            return model(small.unsqueeze(0)).features[0].float()

    feats = _cached(_FEATURES, f"{model_key}|{file_key(record.image_path)}|{tuple(small.shape)}", _KEEP_FEATURES,
                    features)
    grid_h, grid_w = int(feats.shape[1]), int(feats.shape[2])
    stride = int(model.output_stride)
    x, y = min(width - 1, max(0, int(x))), min(height - 1, max(0, int(y)))
    # the pixel in the (shrunk) image the features were computed on, then its cell on the stride-s grid
    sx, sy = (x + 0.5) * small.shape[2] / width, (y + 0.5) * small.shape[1] / height
    row, col = min(grid_h - 1, int(sy // stride)), min(grid_w - 1, int(sx // stride))
    forward = pair_offsets(radius)
    offsets = [(0, 0), *forward, *[(-dy, -dx) for dy, dx in forward]]
    inside = [(dy, dx) for dy, dx in offsets if 0 <= row + dy < grid_h and 0 <= col + dx < grid_w]
    here = row * grid_w + col
    index_to = torch.tensor([(row + dy) * grid_w + (col + dx) for dy, dx in inside], dtype=torch.int64)
    values = pair_affinities(feats.unsqueeze(0), torch.full_like(index_to, here), index_to)[0]
    neighbours = [(dy, dx, float(v)) for (dy, dx), v in zip(inside, values.tolist(), strict=True)]

    out = _cache_dir(ws, run.run_id) / (f"{name}-aff-{x}-{y}-" + hashlib.blake2b(
        f"{VIEWS_VERSION}|{model_key}|{file_key(record.image_path)}".encode(), digest_size=8).hexdigest() + ".png")

    def draw() -> np.ndarray:
        display = maps.display_size(width, height)
        size = (display.width, display.height)
        heat = np.zeros((grid_h, grid_w), np.float32)
        known = np.zeros((grid_h, grid_w), bool)
        for dy, dx, value in neighbours:
            heat[row + dy, col + dx] = value
            known[row + dy, col + dx] = True
        # the grid (ceil(size / stride) cells) covers at least the shrunk image: cut its cells to the image
        crop_h, crop_w = int(small.shape[1]), int(small.shape[2])
        cells = np.kron(heat, np.ones((stride, stride), np.float32))[:crop_h, :crop_w]
        mask = np.kron(known, np.ones((stride, stride), bool))[:crop_h, :crop_w]
        shown_heat = maps.resize_label(cells, size)
        shown_mask = maps.resize_label(mask.astype(np.uint8), size).astype(bool)
        photo = maps.resize_rgb(load_image(record.image_path), size)
        alpha = np.where(shown_mask, 0.25 + 0.7 * shown_heat, 0.0)
        drawn = maps.blend(photo, maps.heat_colours(shown_heat), alpha)
        scale = display.scale
        cell_w, cell_h = stride * width / crop_w * scale, stride * height / crop_h * scale
        box = (col * cell_w, row * cell_h, (col + 1) * cell_w - 1, (row + 1) * cell_h - 1)
        marked = maps.mark_pixel(drawn, (x + 0.5) * scale, (y + 0.5) * scale, box)
        return maps.with_colour_bar(marked, 0.0, 1.0, "affinity")  # absolute 0..1: runs and pixels compare

    return PixelAffinity(x, y, (row, col), (grid_h, grid_w), stride, radius, neighbours, _draw(out, draw))


def clear_weak_caches() -> None:
    """Forget the cached AffinityNets and features (tests; a run's weights replaced in place)."""
    with _LOCK:
        _MODELS.clear()
        _FEATURES.clear()


__all__ = ["EPS_METHODS", "TRANSFER_FOLDERS", "TRANSFER_METHODS", "WEAK_METHODS", "Panel", "PixelAffinity",
           "SplitInfo", "StageQuality", "WeakView", "clear_weak_caches", "pixel_affinities", "run_method",
           "split_info", "transfer_images", "weak_kind", "weak_view"]
