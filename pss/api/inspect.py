"""The engine side of the app's Inspect view: one image through one run's model, cached.

``image_inference(ws, run_id, name)`` returns the run's ``ImageInference`` of one of its user's images
(prediction, probabilities, entropy, group attention), computed with the same group and resolution as the
run's final evaluation: the image is batched with the evaluation chunk of its k-means group (groups from
the run's ``report.json``), so the prediction matches ``predictions/<name>.png`` (up to floating-point ties).
Three layers of reuse:

* models: the last few runs' models stay loaded (LRU), keyed by checkpoint path and mtime;
* inference in memory: a small LRU bounded in bytes;
* inference on disk: ``WS/cache/inference/<run>/<name>.npz`` (compressed, probabilities as float16),
  valid while the checkpoint and the image file are unchanged; written by a background thread.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pss.api.runs import METHOD_LABELS
from pss.data.pss_layout import read_user
from pss.data.records import ImageRecord
from pss.errors import CheckpointError, DatasetError, RunStoreError
from pss.workspace import Workspace as EngineWorkspace

if TYPE_CHECKING:  # pragma: no cover
    from pss.config import ExperimentConfig
    from pss.inference import ImageInference

CACHE_VERSION = 2  # 2: chunk sides in steps of 32 (pss.engine.evaluate.SIZE_STEP), was 8
MODEL_SLOTS = 3
MEMORY_BUDGET_BYTES = 256 * 2**20

_LOCK = threading.RLock()  # one model load / forward pass at a time: the CPU threads are shared anyway
_MODELS: OrderedDict[tuple, tuple[Any, Any, Any]] = OrderedDict()
_INFERENCES: OrderedDict[tuple, ImageInference] = OrderedDict()
DERIVED: dict[Any, Any] = {}  # small values derived from cached inference by the drawing code (cleared with it)
# The npz is written after the response (compressing the probabilities is ~1/4 of a cold request); the
# in-memory LRU serves the image meanwhile, and a reader only ever sees a complete file (rename).
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pss-inference-cache")
_PENDING: list[Future] = []


def engine_workspace(ws: Any) -> EngineWorkspace:
    """The engine's ``Workspace`` (with ``store()``) for any workspace object with a ``root``."""
    return ws if isinstance(ws, EngineWorkspace) else EngineWorkspace(Path(ws.root))


@dataclass(frozen=True)
class RunChoice:
    """A finished run as the Inspect / Compare pickers list it."""

    run_id: str
    user: str | None
    method: str
    fiou: float | None
    miou: float | None
    context: str

    @property
    def method_label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)

    @property
    def short(self) -> str:
        """``OURS-S1 #0a88``: the paper's row name and the run id's random suffix."""
        return f"{self.method_label} #{self.run_id.rsplit('-', 1)[-1]}"

    @property
    def label(self) -> str:
        score = "" if self.fiou is None else f" · FIoU {self.fiou * 100:.1f}"
        return f"{self.short}{score} · {self.run_id}"


def done_runs(ws: Any, user: str | None = None) -> list[RunChoice]:
    """Finished runs (of ``user``), newest first."""
    out = []
    for record in engine_workspace(ws).store().list_runs(user=user, status="done"):
        context = str(record.config.get("model", {}).get("context", {}).get("mode", "none"))
        out.append(RunChoice(record.run_id, record.user, record.method, record.fiou, record.miou, context))
    return out


@dataclass
class RunContext:
    """What inspecting a run's images needs: its config, checkpoint (and mtime) and report."""

    run_id: str
    user: str
    config: ExperimentConfig
    checkpoint: Path
    checkpoint_mtime: int
    report: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.run_id, self.checkpoint.name, self.checkpoint_mtime)


_CONTEXTS: dict[tuple[str, str], tuple[tuple, RunContext]] = {}
_RECORDS: dict[tuple[str, str], tuple[tuple, list[ImageRecord]]] = {}


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def run_context(ws: Any, run_id: str) -> RunContext:
    """Open a run for inspection. RunStoreError for an unknown run, CheckpointError without a checkpoint.

    Parsing config.yaml dominates a warm request, so the context is kept while the run's config, report and
    latest checkpoint are unchanged.
    """
    from pss.config import resolve_config
    from pss.runs.store import check_run_id

    run = engine_workspace(ws).store().open_run(check_run_id(run_id))
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(f"run {run_id} has no checkpoint ({run.checkpoints_dir} is empty or missing), so its "
                              f"model cannot be inspected; train the run again")
    signature = (checkpoint.name, _mtime(checkpoint), _mtime(run.dir / "config.yaml"), _mtime(run.dir / "report.json"))
    key = (str(run.dir), run_id)
    with _LOCK:
        hit = _CONTEXTS.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    config = resolve_config(run.config)
    ctx = RunContext(run_id, str(config.data.user), config, checkpoint, signature[1], run.read_report() or {})
    with _LOCK:
        _CONTEXTS[key] = (signature, ctx)
    return ctx


def user_records(ws: Any, user: str) -> list[ImageRecord]:
    """The user's image records (DatasetError for an unknown user), re-read when the user's folders change."""
    root = Path(ws.root) / "data" / "personal"
    user_dir = root / str(user)
    if not user or "/" in user or user.startswith(".") or not user_dir.is_dir():
        raise DatasetError(f"unknown user {user!r} in {root}")
    signature = tuple(_mtime(user_dir / part) for part in ("", "JPEGImages", "SegmentationClass", "imgLabelList.txt"))
    key = (str(root), user)
    with _LOCK:
        hit = _RECORDS.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    records = read_user(root, user).records
    with _LOCK:
        _RECORDS[key] = (signature, records)
    return records


def find_record(records: list[ImageRecord], name: str, user: str) -> ImageRecord:
    for record in records:
        if record.name == name:
            return record
    raise DatasetError(f"user {user!r} has no image named {name!r}")


def _load_model(ws: EngineWorkspace, ctx: RunContext, device: str) -> tuple[Any, Any, Any]:
    from pss.api.runs import load_run_model

    key = (str(ws.root), *ctx.key, device)
    with _LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        loaded = load_run_model(ws, ctx.run_id, device)
        _MODELS[key] = loaded
        while len(_MODELS) > MODEL_SLOTS:
            _MODELS.popitem(last=False)
        return loaded


def evaluation_group(ctx: RunContext, records: list[ImageRecord], record: ImageRecord, ws: EngineWorkspace,
                     device: Any) -> list[ImageRecord]:
    """The images ``record`` was evaluated with: its chunk of the run's evaluation (``chunk_by_group`` over the
    user's records with the report's groups, or freshly computed groups if the report has none)."""
    from pss.engine.evaluate import chunk_by_group

    mode = ctx.config.model.context.mode
    if mode == "none":  # each image is predicted on its own: the batch does not matter
        return [record]
    groups = ctx.report.get("groups")
    if not groups and mode == "group":
        from pss.engine.data import compute_groups

        g = ctx.config.grouping
        groups = compute_groups(records, g.k, g.seed, g.feature_model, ws.cache, device)
    index = next(i for i, r in enumerate(records) if r.name == record.name)
    for chunk in chunk_by_group(records, groups or None, ctx.config.eval.batch_size):
        if index in chunk:
            return [records[i] for i in chunk]
    return [record]  # pragma: no cover - every index is in one chunk


def inference_cache_path(ws: Any, run_id: str, name: str) -> Path:
    return Path(ws.root) / "cache" / "inference" / run_id / f"{name}.npz"


def _meta(ctx: RunContext, record: ImageRecord) -> dict[str, Any]:
    from pss.api.data import file_key

    return {"version": CACHE_VERSION, "run_id": ctx.run_id, "checkpoint": ctx.checkpoint.name,
            "checkpoint_mtime": ctx.checkpoint_mtime, "image": file_key(record.image_path)}


def save_inference(path: Path, inference: ImageInference, meta: dict[str, Any]) -> None:
    """Write ``inference`` as a compressed npz (probabilities as float16) atomically."""
    arrays = {"prob": inference.prob.astype(np.float16), "label": inference.label, "entropy": inference.entropy,
              "meta": np.array(json.dumps({**meta, "name": inference.name, "group_images": inference.group_images,
                                           "grid": list(inference.grid), "size": list(inference.size)}))}
    if inference.attention is not None:
        arrays["attention"] = inference.attention
        arrays["region_masks"] = inference.region_masks
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(buffer.getvalue())
    os.replace(tmp, path)


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


def _nbytes(inference: ImageInference) -> int:
    arrays = [inference.prob, inference.label, inference.entropy, inference.attention, inference.region_masks]
    return sum(a.nbytes for a in arrays if a is not None)


def _remember(key: tuple, inference: ImageInference) -> None:
    _INFERENCES[key] = inference
    _INFERENCES.move_to_end(key)
    while len(_INFERENCES) > 1 and sum(_nbytes(i) for i in _INFERENCES.values()) > MEMORY_BUDGET_BYTES:
        _INFERENCES.popitem(last=False)


def image_inference(ws: Any, run_id: str, name: str, device: str = "auto",
                    ctx: RunContext | None = None) -> ImageInference:
    """The run's inference of image ``name`` of its user (memory LRU, then disk cache, then the model).

    Raises RunStoreError (unknown run), CheckpointError (no or unreadable checkpoint, another format),
    DatasetError (unknown or unreadable image).
    """
    engine_ws = engine_workspace(ws)
    ctx = ctx or run_context(engine_ws, run_id)
    records = user_records(engine_ws, ctx.user)
    record = find_record(records, name, ctx.user)
    meta = _meta(ctx, record)
    key = (str(engine_ws.root), *ctx.key, name, meta["image"])
    with _LOCK:
        if key in _INFERENCES:
            _INFERENCES.move_to_end(key)
            return _INFERENCES[key]
        path = inference_cache_path(engine_ws, ctx.run_id, name)
        inference = load_inference(path, meta) if path.exists() else None
        if inference is None:
            inference = _compute(engine_ws, ctx, records, record, device)
            _PENDING[:] = [f for f in _PENDING if not f.done()]
            _PENDING.append(_WRITER.submit(save_inference, path, inference, meta))
        _remember(key, inference)
        return inference


def _compute(ws: EngineWorkspace, ctx: RunContext, records: list[ImageRecord], record: ImageRecord,
             device: str) -> ImageInference:
    from pss.inference import infer_image

    model, config, torch_device = _load_model(ws, ctx, device)
    group = evaluation_group(ctx, records, record, ws, torch_device)
    return infer_image(model, record, group, torch_device, config.data.eval_short_side)


def flush_writes() -> None:
    """Wait until every inference queued for the disk cache is written (errors are raised here)."""
    while _PENDING:
        _PENDING.pop(0).result()


def clear_caches(memory_only: bool = True, ws: Any | None = None, keep_models: bool = False) -> None:
    """Forget in-memory inference, run contexts, record lists and (unless ``keep_models``) loaded models; with
    ``memory_only=False`` also delete the disk cache (npz files and drawn PNGs) of workspace ``ws``."""
    import shutil

    flush_writes()
    with _LOCK:
        for cache in (_INFERENCES, _CONTEXTS, _RECORDS, DERIVED):
            cache.clear()
        if not keep_models:
            _MODELS.clear()
    if not memory_only and ws is not None:
        shutil.rmtree(Path(ws.root) / "cache" / "inference", ignore_errors=True)


@dataclass
class PseudoStatus:
    """Whether step 2 (``pss_s2`` started from this run) would pseudo-label the image, and why.

    ``rank`` is 1-based among the user's images by ascending mean entropy; the ``keep`` lowest are selected
    (``select_easy_images``: ``max(1, floor(total * select_rate))``).
    """

    mean_entropy: float
    rank: int
    total: int
    keep: int
    selected: bool
    select_rate: float
    pixel_keep_rate: float


def pseudo_status(ctx: RunContext, name: str, mean_entropy: float) -> PseudoStatus:
    """Rank ``name`` among the mean entropies of the run's report (its own value from ``mean_entropy`` when the
    report has none) and apply the step-2 selection of the run's (or the default) pseudo-label settings."""
    from pss.losses import select_easy_images
    from pss.methods.pseudo import EntropyRankedPseudoConfig

    params = ctx.config.method.get("pseudo") or {}
    config = EntropyRankedPseudoConfig(**{k: v for k, v in params.items() if k in ("select_rate", "pixel_keep_rate")})
    scores = dict(ctx.report.get("mean_entropy") or {})
    scores.setdefault(name, mean_entropy)
    names = list(scores)
    chosen = select_easy_images([scores[n] for n in names], config.select_rate)
    order = sorted(range(len(names)), key=lambda i: (scores[names[i]], i))
    rank = order.index(names.index(name)) + 1
    return PseudoStatus(float(scores[name]), rank, len(names), len(chosen), names.index(name) in chosen,
                        config.select_rate, config.pixel_keep_rate)


def check_inspectable(ws: Any, run_id: str, device: str = "auto") -> RunContext:
    """``run_context`` plus a load of its model now, so a checkpoint of another format fails with a message
    before anything is drawn. Raises RunStoreError / CheckpointError."""
    ctx = run_context(ws, run_id)
    _load_model(engine_workspace(ws), ctx, device)
    return ctx


__all__ = ["CheckpointError", "PseudoStatus", "RunChoice", "RunContext", "RunStoreError", "check_inspectable",
           "clear_caches", "done_runs", "engine_workspace", "find_record", "flush_writes", "image_inference",
           "inference_cache_path", "pseudo_status", "run_context", "user_records"]
