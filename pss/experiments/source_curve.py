"""Label-free curves of a finished run from its checkpoints, to choose training lengths without the user's labels.

* ``score_checkpoints``: each saved step's model scored on the source's held-out split, as ``source_val`` events
  (the same events ``train.source_val_every`` writes during training);
* ``target_entropy_curve``: each saved step's mean prediction entropy over the user's images, masks ignored
  (``target_entropy`` events) -- what adaptation minimises (ADVENT's Eq. 1-3 act on it), measurable on any
  user collection.

For runs trained before source validation existed, or with ``source_val_every`` 0 but ``checkpoint_every`` > 0:
``pss.experiments.source_curve.score_checkpoints(ws, run_id)``. Steps that already have an event are skipped.
"""
from __future__ import annotations

import re
from typing import Any

from pss.workspace import Workspace

_STEP = re.compile(r"step_(\d+)\.pt$")


def _checkpoints(run: Any) -> list[tuple[int, Any]]:
    return sorted((int(m.group(1)), p) for p in run.checkpoints_dir.glob("step_*.pt") if (m := _STEP.search(p.name)))


def score_checkpoints(ws: Workspace, run_id: str, device: str = "cpu") -> list[dict[str, Any]]:
    """Score every checkpoint of ``run_id`` on the source val, log the new points, return the whole curve."""
    from pss.config import resolve_config
    from pss.engine.checkpoint import load_model_weights
    from pss.engine.data import read_source_val
    from pss.engine.device import resolve_device
    from pss.engine.evaluate import EvalSettings, evaluate_records
    from pss.engine.hooks import source_val_values
    from pss.errors import DatasetError
    from pss.models.segmenter import build_segmenter

    run = ws.store().open_run(run_id)
    config = resolve_config(run.config)
    records = read_source_val(config)
    if not records:
        raise DatasetError(f"no source val split under {config.data.voc_path()} (data.voc_val_list)")
    torch_device = resolve_device(device)
    settings = EvalSettings.from_config(config, torch_device)
    scored = {int(e["step"]) for e in run.events("source_val")}
    for step, path in _checkpoints(run):
        if step in scored:
            continue
        model = build_segmenter(config.model)
        load_model_weights(model, path)
        report = evaluate_records(model.to(torch_device), records, None, settings)[0]
        run.log_event("source_val", step, **source_val_values(report))
    return sorted(run.events("source_val"), key=lambda e: e["step"])


def target_entropy_curve(ws: Workspace, run_id: str, device: str = "cpu") -> list[dict[str, Any]]:
    """Mean prediction entropy (nats) over all of the run's user images at every checkpoint, scored with the masks
    stripped (label-free: nothing here reads a label). Logs ``target_entropy`` events; returns the whole curve."""
    from dataclasses import replace

    from pss.config import resolve_config
    from pss.engine.checkpoint import load_model_weights
    from pss.engine.data import load_experiment_data
    from pss.engine.device import resolve_device
    from pss.engine.evaluate import EvalSettings, evaluate_records
    from pss.models.segmenter import build_segmenter

    run = ws.store().open_run(run_id)
    config = resolve_config(run.config)
    torch_device = resolve_device(device)
    settings = EvalSettings.from_config(config, torch_device)
    data = load_experiment_data(config, torch_device, ws.cache, config.model.context.mode != "none")
    records = [replace(r, mask_path=None) for r in data.evaluation]
    scored = {int(e["step"]) for e in run.events("target_entropy")}
    for step, path in _checkpoints(run):
        if step in scored:
            continue
        model = build_segmenter(config.model)
        load_model_weights(model, path)
        entropies = evaluate_records(model.to(torch_device), records, data.evaluation_groups, settings)[1]
        run.log_event("target_entropy", step, mean_entropy=sum(entropies.values()) / len(entropies),
                      num_images=len(entropies))
    return sorted(run.events("target_entropy"), key=lambda e: e["step"])
