"""The Inspect view's pictures of one image under one run, drawn from the cached ``ImageInference``.

``inspect_maps``: prediction overlay, entropy heat map with a colour bar, and the step-2 pseudo label
(ignored pixels hatched). ``inspect_pixel``: for one clicked pixel, its class probabilities and entropy,
the group regions (image x class, paper eqs. 4-6) it attends to, and heat maps of the top regions' soft
masks. PNGs go to ``WS/cache/inference/<run>/png/`` under names that encode the checkpoint, the image
file and the drawing parameters, so a repeated request only checks that the files exist.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

import pss.api.maps as maps
from pss.api.data import file_key, load_image
from pss.api.inspect import RunContext, derived, image_inference, run_context
from pss.api.pseudo import PseudoStatus, pseudo_status
from pss.api.users import find_record, mask_role, user_records
from pss.data.labels import CLASS_NAMES, read_label_png
from pss.errors import DatasetError, ModelError
from pss.inference import RegionWeight
from pss.workspace import Workspace

MAPS_VERSION = "m3"  # part of every PNG name: bump when a drawing changes


@dataclass
class InspectMaps:
    """The three maps of one image (PNG paths) and what the captions say about them.

    ``legend``: (class name, "#rrggbb", % of pixels) of the predicted classes, largest first.
    ``display``: the size the maps are drawn at (``display.scale`` display pixels per image pixel; clicks on
    the prediction map are in display pixels). ``mask``/``mask_role``: the image's mask, shown (never scored
    here) with what it is: an evaluation image's ground truth or an annotation made for training.
    """

    run_id: str
    name: str
    user: str
    width: int
    height: int
    display: maps.DisplaySize
    prediction: Path
    entropy: Path
    pseudo_label: Path
    legend: list[tuple[str, str, float]]
    pseudo: PseudoStatus
    ignored_fraction: float
    context: str
    has_attention: bool
    mask: Path | None = None  # the image's mask over the photo, when it has one
    mask_role: str | None = None  # pss.api.users.mask_role: scored ground truth, or a training annotation (unscored)


@dataclass
class PixelInspection:
    """What the model does at image pixel (x, y).

    ``regions`` are the top regions by attention weight; ``other_weight`` is the attention on the
    remaining ``other_regions`` regions, so ``sum(r.weight for r in regions) + other_weight == 1``.
    ``region_maps`` are (PNG path, caption): for the images of the group receiving the most attention, the soft
    mask of each one's highest-weighted region over that image.
    """

    x: int
    y: int
    label: str
    entropy: float
    probabilities: list[tuple[str, float]]
    cell: tuple[int, int]
    grid: tuple[int, int]
    marked: Path
    regions: list[RegionWeight] = field(default_factory=list)
    other_weight: float = 0.0
    other_regions: int = 0
    region_maps: list[tuple[Path, str]] = field(default_factory=list)


def _png_dir(ws: Workspace, run_id: str) -> Path:
    return Path(ws.root) / "cache" / "inference" / run_id / "png"


def _base_key(ctx: RunContext, image_path: Path) -> str:
    text = f"{ctx.key}|{file_key(image_path)}|{MAPS_VERSION}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _photo(image_path: Path, size: maps.DisplaySize) -> np.ndarray:
    return maps.resize_rgb(load_image(image_path), (size.width, size.height))


def _legend(label: np.ndarray) -> list[tuple[str, str, float]]:
    counts = np.bincount(label.ravel(), minlength=len(CLASS_NAMES))[:len(CLASS_NAMES)]
    total = max(int(label.size), 1)
    rows = [(CLASS_NAMES[c], maps.palette_hex(c), 100.0 * n / total) for c, n in enumerate(counts.tolist()) if n]
    return sorted(rows, key=lambda row: -row[2])


def inspect_maps(ws: Workspace, run_id: str, name: str, opacity: float = 0.6, stretch: bool = False,
                 device: str = "auto") -> InspectMaps:
    """Prediction overlay, entropy heat map (with colour bar; ``stretch`` maps this image's min..max instead
    of the full 0..1 range) and step-2 pseudo label of image ``name`` under run ``run_id``."""
    ctx = run_context(ws, run_id)
    return _maps(ws, ctx, name, opacity, stretch, device)


def _maps(ws: Workspace, ctx: RunContext, name: str, opacity: float, stretch: bool, device: str) -> InspectMaps:
    inference = image_inference(ws, ctx.run_id, name, device, ctx)
    record = find_record(user_records(ws, ctx.user), name, ctx.user)
    height, width = inference._image_size()  # the image's; the maps may be smaller (pss.inference.MAX_MAP_SIDE)
    size = maps.display_size(width, height)
    opacity = float(np.clip(opacity if opacity is not None else 0.6, 0.0, 1.0))
    status = pseudo_status(ctx, name, inference.mean_entropy)
    base = _png_dir(ws, ctx.run_id) / f"{name}-{_base_key(ctx, record.image_path)}"
    vmin, vmax = ((float(inference.entropy.min()), float(inference.entropy.max())) if stretch else (0.0, 1.0))
    paths = {"prediction": Path(f"{base}-pred-{opacity:.2f}.png"),
             "entropy": Path(f"{base}-entropy-{'stretch' if stretch else 'full'}.png"),
             "pseudo": Path(f"{base}-pseudo-{status.pixel_keep_rate:.3f}.png")}
    if record.mask_path is not None:  # keyed on the mask file too: a re-annotated mask is drawn again
        mask_key = hashlib.blake2b(file_key(record.mask_path).encode(), digest_size=6).hexdigest()
        paths["mask"] = Path(f"{base}-mask-{mask_key}.png")
    missing = [k for k, p in paths.items() if not p.exists()]
    # the share of ignored pseudo-label pixels (a quantile per image): derived once, kept with the inference
    if missing:
        pseudo = inference.pseudo_label(status.pixel_keep_rate)
        ignored = derived(paths["pseudo"], lambda: float(np.mean(pseudo == 255)))
    else:
        ignored = derived(paths["pseudo"],
                          lambda: float(np.mean(inference.pseudo_label(status.pixel_keep_rate) == 255)))
    if missing:
        photo = _photo(record.image_path, size)
        shown = (size.width, size.height)
        jobs: dict[str, Callable[[], np.ndarray]] = {
            "prediction": lambda: maps.label_overlay(photo, maps.resize_label(inference.label, shown), opacity),
            "entropy": lambda: maps.with_colour_bar(
                maps.heat_colours(maps.resize_rgb(inference.entropy, shown), vmin, vmax), vmin, vmax, "entropy"),
            "pseudo": lambda: maps.pseudo_label_colours(maps.resize_label(pseudo, shown)),
            "mask": lambda: maps.label_overlay(photo, maps.resize_label(_mask_of(record, width, height), shown), 1.0),
        }

        def draw(key: str) -> Path:
            return maps.save_png(jobs[key](), paths[key])

        maps.draw_all([partial(draw, k) for k in missing])
    return InspectMaps(ctx.run_id, name, ctx.user, width, height, size, paths["prediction"], paths["entropy"],
                       paths["pseudo"], _legend(inference.label), status, ignored,
                       ctx.config.model.context.mode, inference.attention is not None, paths.get("mask"),
                       mask_role(record))


def _mask_of(record: Any, width: int, height: int) -> np.ndarray:
    """The record's mask, checked against the image size (DatasetError naming the file otherwise)."""
    mask = read_label_png(record.mask_path)
    if mask.shape != (height, width):
        raise DatasetError(f"the mask {record.mask_path} is {mask.shape[1]}×{mask.shape[0]}, its image "
                           f"{width}×{height}; fix the mask (pss doctor lists such files)")
    return mask


REGION_SIDE = 320  # long side of the region soft-mask maps (a gallery of a few small pictures)


def _region_map(ws: Workspace, ctx: RunContext, records: list, region: RegionWeight,
                mask: np.ndarray) -> tuple[Path, Callable[[], Path] | None]:
    """Path of the soft-mask map of ``region`` over its image, and the job drawing it (None if drawn before)."""
    record = find_record(records, region.image, ctx.user)
    key = _base_key(ctx, record.image_path)
    out = _png_dir(ws, ctx.run_id) / f"region-{record.name}-{region.class_index}-{key}.png"
    if out.exists():
        return out, None

    def draw() -> Path:
        from pss.data.image_io import image_size

        width, height = image_size(record.image_path)
        scale = REGION_SIDE / max(width, height)
        size = maps.DisplaySize.scaled(width, height, scale)
        soft = maps.resize_rgb(mask.astype(np.float32), (size.width, size.height))
        photo = _photo(record.image_path, size)
        return maps.save_png(maps.blend(photo, maps.heat_colours(soft), 0.25 + 0.6 * soft), out)

    return out, draw


def inspect_pixel(ws: Workspace, run_id: str, name: str, x: int, y: int, top: int = 8, top_images: int = 3,
                  opacity: float = 0.6, device: str = "auto") -> PixelInspection:
    """Probabilities, entropy and group attention at image pixel (x, y) (clamped into the image).

    Region soft masks are drawn for the ``top_images`` images of the group that receive the most attention in
    total (each with its highest-weighted region). Models without group context return no regions.
    """
    ctx = run_context(ws, run_id)
    inference = image_inference(ws, run_id, name, device, ctx)
    height, width = inference._image_size()  # the image's; the maps may be smaller (pss.inference.MAX_MAP_SIDE)
    x, y = min(width - 1, max(0, int(x))), min(height - 1, max(0, int(y)))
    info = inference.pixel_info(x, y)
    cell = inference.grid_cell(x, y)
    shown = _maps(ws, ctx, name, opacity, False, device)
    marked = Path(str(shown.prediction).replace(".png", f"-at-{x}-{y}.png"))
    jobs: list[Callable[[], Any]] = []
    if not marked.exists():
        def draw_marked() -> Path:
            from PIL import Image

            s, (h, w) = shown.display.scale, inference.grid
            box = (cell[1] * width / w * s, cell[0] * height / h * s, (cell[1] + 1) * width / w * s - 1,
                   (cell[0] + 1) * height / h * s - 1)
            with Image.open(shown.prediction) as im:
                base = np.asarray(im.convert("RGB"))
            return maps.save_png(maps.mark_pixel(base, (x + 0.5) * s, (y + 0.5) * s, box), marked)

        jobs.append(draw_marked)
    # pixel_info's values are typed object; their types are the ones ImageInference.pixel_info builds
    entropy = cast(float, info["entropy"])
    probabilities = cast("list[tuple[str, float]]", info["probabilities"])
    grid_h, grid_w = inference.grid
    result = PixelInspection(x, y, str(info["label"]), float(entropy), list(probabilities), cell,
                             (grid_h, grid_w), marked)
    if inference.attention is None:
        maps.draw_all(jobs)
        return result
    total = inference.attention.shape[1]
    result.regions = inference.attention_at(x, y, top=top)
    row = inference.attention[cell[0] * inference.grid[1] + cell[1]]
    result.other_weight = float(row.sum(dtype=np.float64)) - sum(r.weight for r in result.regions)
    result.other_regions = total - len(result.regions)
    records = user_records(ws, ctx.user)
    num_classes = inference.prob.shape[0]
    per_image = row.reshape(len(inference.group_images), num_classes)
    for g in np.argsort(-per_image.sum(axis=1), kind="stable")[:top_images]:
        c = int(np.argmax(per_image[g]))
        region = RegionWeight(inference.group_images[g], c, float(per_image[g, c]))
        mask = inference.region_mask(region.image, c)
        if mask is None:
            raise ModelError(f"run {ctx.run_id}: the model gave group attention but no region masks for "
                             f"{name}; clear its inference cache ({_png_dir(ws, ctx.run_id).parent}) and retry")
        path, job = _region_map(ws, ctx, records, region, mask)
        jobs += [job] if job is not None else []
        result.region_maps.append((path, f"{region.image} · {region.class_name} · weight {region.weight:.3f} "
                                         f"(image total {float(per_image[g].sum()):.3f})"))
    maps.draw_all(jobs)
    return result
