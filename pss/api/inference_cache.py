"""The disk layer of the Inspect view's inference cache: ``WS/cache/inference/<run>/<name>.npz``.

One compressed npz per (run, image), probabilities as float16, with the metadata it was made under (checkpoint
name and mtime, the image file's key); a file made under other metadata, or an unreadable one, is recomputed.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pss.fileio import write_bytes_atomic
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from pss.inference import ImageInference

CACHE_VERSION = 2  # 2: chunk sides in steps of 32 (pss.engine.evaluate.SIZE_STEP), was 8


def inference_cache_path(ws: Workspace, run_id: str, name: str) -> Path:
    return Path(ws.root) / "cache" / "inference" / run_id / f"{name}.npz"


def save_inference(path: Path, inference: ImageInference, meta: dict[str, Any]) -> None:
    """Write ``inference`` as a compressed npz (probabilities as float16) atomically."""
    arrays: dict[str, np.ndarray] = {
        "prob": inference.prob.astype(np.float16), "label": inference.label, "entropy": inference.entropy,
        "meta": np.array(json.dumps({**meta, "name": inference.name, "group_images": inference.group_images,
                                     "grid": list(inference.grid), "size": list(inference._image_size())}))}
    # each optional map on its own: a None stored as an object array could not be read back (allow_pickle=False)
    if inference.attention is not None:
        arrays["attention"] = inference.attention
    if inference.region_masks is not None:
        arrays["region_masks"] = inference.region_masks
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)  # explicit: the arrays are plain numbers
    write_bytes_atomic(path, buffer.getvalue())


def load_inference(path: Path, meta: dict[str, Any]) -> ImageInference | None:
    """The cached inference at ``path`` if it was made with ``meta`` (same checkpoint and image), else None."""
    from pss.inference import ImageInference

    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["meta"]))
            if any(stored.get(k) != v for k, v in meta.items()):
                return None
            return ImageInference(
                name=stored["name"], prob=data["prob"].astype(np.float32), label=data["label"],
                entropy=data["entropy"], group_images=list(stored["group_images"]), grid=tuple(stored["grid"]),
                attention=data["attention"] if "attention" in data else None,
                region_masks=data["region_masks"] if "region_masks" in data else None,
                size=tuple(stored["size"]) if "size" in stored else None)  # older caches: maps at the image's size
    except (OSError, ValueError, KeyError):  # missing, truncated or foreign file: recompute
        return None


__all__ = ["CACHE_VERSION", "inference_cache_path", "load_inference", "save_inference"]
