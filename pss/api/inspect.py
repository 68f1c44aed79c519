"""The engine side of the app's Inspect view: one image through one run's model, cached.

``image_inference(ws, run_id, name)`` returns the run's ``ImageInference`` of one of its user's images
(prediction, probabilities, entropy, group attention), computed with the same group and resolution as the
run's final evaluation: the image is batched with the evaluation chunk of its k-means group (groups from
the run's ``report.json``), so the prediction matches ``predictions/<name>.png`` (up to floating-point ties).
Three layers of reuse:

* models: the last few runs' models stay loaded (LRU), keyed by checkpoint path and mtime;
* inference in memory: a small LRU bounded in bytes;
* inference on disk: ``WS/cache/inference/<run>/<name>.npz`` (``pss.api.inference_cache``), valid while the
  checkpoint and the image file are unchanged; written by a background thread.

This module owns every in-memory cache of the Inspect / Compare views (models, run contexts, inference and the
small values derived from it, ``derived``); ``clear_caches`` forgets them all. Finished runs for the pickers:
``pss.api.run_choice``; the step-2 pseudo-label caption: ``pss.api.pseudo``; user records: ``pss.api.users``.
"""
from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pss.api.data import file_key
from pss.api.inference_cache import CACHE_VERSION, inference_cache_path, load_inference, save_inference
from pss.api.runs import load_run_model
from pss.api.users import find_record, forget_users, user_records
from pss.data.records import ImageRecord
from pss.errors import CheckpointError
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from pss.config import ExperimentConfig
    from pss.inference import ImageInference

MODEL_SLOTS = 3
MEMORY_BUDGET_BYTES = 256 * 2**20
T = TypeVar("T")

_LOCK = threading.RLock()  # one model load / forward pass at a time: the CPU threads are shared anyway
_MODELS: OrderedDict[tuple, tuple[Any, Any, Any]] = OrderedDict()
_INFERENCES: OrderedDict[tuple, ImageInference] = OrderedDict()
_DERIVED: dict[Hashable, Any] = {}  # small values the drawing code derives from cached inference (see ``derived``)
# The npz is written after the response (compressing the probabilities is ~1/4 of a cold request); the
# in-memory LRU serves the image meanwhile, and a reader only ever sees a complete file (rename).
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pss-inference-cache")
_PENDING: list[Future] = []


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


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def run_context(ws: Workspace, run_id: str) -> RunContext:
    """Open a run for inspection. RunStoreError for an unknown run, CheckpointError without a checkpoint.

    Parsing config.yaml dominates a warm request, so the context is kept while the run's config, report and
    latest checkpoint are unchanged.
    """
    from pss.config import resolve_config
    from pss.runs.store import check_run_id

    run = ws.store().open_run(check_run_id(run_id))
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


def derived(key: Hashable, compute: Callable[[], T]) -> T:
    """A small value derived from cached inference (e.g. the share of ignored pseudo-label pixels, a quantile per
    image), computed once per ``key`` and kept until ``clear_caches``, like the inference it comes from."""
    with _LOCK:
        if key in _DERIVED:
            return _DERIVED[key]
    value = compute()
    with _LOCK:
        _DERIVED[key] = value
    return value


def _load_model(ws: Workspace, ctx: RunContext, device: str) -> tuple[Any, Any, Any]:
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


def evaluation_group(ctx: RunContext, records: list[ImageRecord], record: ImageRecord, ws: Workspace,
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


def _meta(ctx: RunContext, record: ImageRecord) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "run_id": ctx.run_id, "checkpoint": ctx.checkpoint.name,
            "checkpoint_mtime": ctx.checkpoint_mtime, "image": file_key(record.image_path)}


def _nbytes(inference: ImageInference) -> int:
    arrays = [inference.prob, inference.label, inference.entropy, inference.attention, inference.region_masks]
    return sum(a.nbytes for a in arrays if a is not None)


def _remember(key: tuple, inference: ImageInference) -> None:
    _INFERENCES[key] = inference
    _INFERENCES.move_to_end(key)
    while len(_INFERENCES) > 1 and sum(_nbytes(i) for i in _INFERENCES.values()) > MEMORY_BUDGET_BYTES:
        _INFERENCES.popitem(last=False)


def image_inference(ws: Workspace, run_id: str, name: str, device: str = "auto",
                    ctx: RunContext | None = None) -> ImageInference:
    """The run's inference of image ``name`` of its user (memory LRU, then disk cache, then the model).

    Raises RunStoreError (unknown run), CheckpointError (no or unreadable checkpoint, another format),
    DatasetError (unknown or unreadable image).
    """
    ctx = ctx or run_context(ws, run_id)
    records = user_records(ws, ctx.user)
    record = find_record(records, name, ctx.user)
    meta = _meta(ctx, record)
    key = (str(ws.root), *ctx.key, name, meta["image"])
    with _LOCK:
        if key in _INFERENCES:
            _INFERENCES.move_to_end(key)
            return _INFERENCES[key]
        path = inference_cache_path(ws, ctx.run_id, name)
        inference = load_inference(path, meta) if path.exists() else None
        if inference is None:
            inference = _compute(ws, ctx, records, record, device)
            _PENDING[:] = [f for f in _PENDING if not f.done()]
            _PENDING.append(_WRITER.submit(save_inference, path, inference, meta))
        _remember(key, inference)
        return inference


def _compute(ws: Workspace, ctx: RunContext, records: list[ImageRecord], record: ImageRecord,
             device: str) -> ImageInference:
    from pss.inference import infer_image

    model, config, torch_device = _load_model(ws, ctx, device)
    group = evaluation_group(ctx, records, record, ws, torch_device)
    return infer_image(model, record, group, torch_device, config.data.eval_short_side)


def flush_writes() -> None:
    """Wait until every inference queued for the disk cache is written (errors are raised here)."""
    while _PENDING:
        _PENDING.pop(0).result()


def clear_caches(memory_only: bool = True, ws: Workspace | None = None, keep_models: bool = False) -> None:
    """Forget in-memory inference, run contexts, record lists and (unless ``keep_models``) loaded models; with
    ``memory_only=False`` also delete the disk cache (npz files and drawn PNGs) of workspace ``ws``."""
    flush_writes()
    with _LOCK:
        for cache in (_INFERENCES, _CONTEXTS, _DERIVED):
            cache.clear()
        if not keep_models:
            _MODELS.clear()
    forget_users()
    if not memory_only and ws is not None:
        shutil.rmtree(Path(ws.root) / "cache" / "inference", ignore_errors=True)


def check_inspectable(ws: Workspace, run_id: str, device: str = "auto") -> RunContext:
    """``run_context`` plus a load of its model now, so a checkpoint of another format fails with a message
    before anything is drawn. Raises RunStoreError / CheckpointError."""
    ctx = run_context(ws, run_id)
    _load_model(ws, ctx, device)
    return ctx


# user_records / find_record live in pss.api.users (the one user reader); named here as well because the
# Inspect view's callers (and tests) have always found them here.
__all__ = ["RunContext", "check_inspectable", "clear_caches", "derived", "evaluation_group", "find_record",
           "flush_writes", "image_inference", "run_context", "user_records"]
