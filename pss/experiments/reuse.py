"""Find, resume or train the run an experiment cell needs; evaluation-only runs for the No-DA row.

A run is identified by its saved config (which includes the experiment's ``tag``): a done run with an equal config
is reused, one that stopped early with a checkpoint is resumed (resume == uninterrupted), else a new run is trained.
Do not run two experiments on one workspace at the same time: a run another process is training looks resumable.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from pss.api import runs as api
from pss.config import ExperimentConfig, config_to_dict, resolve_config
from pss.errors import CheckpointError, PssError
from pss.runs.index import RunRecord
from pss.workspace import Workspace
from pss.status import Status


def canonical(config: dict[str, Any]) -> str:
    """A config dict as sorted JSON, so configs saved to YAML and read back compare equal to fresh ones."""
    return json.dumps(json.loads(json.dumps(config)), sort_keys=True)


def saved_canonical(saved: dict[str, Any]) -> str | None:
    """A saved config, with every default filled in, as :func:`canonical` (a run saved before a config field was
    added, e.g. ``train.annotated_weight``, equals a fresh config with that field's default); ``None`` if it no
    longer resolves."""
    try:
        return canonical(config_to_dict(resolve_config(saved)))
    except PssError:
        return None


def matching_runs(ws: Workspace, config: ExperimentConfig) -> list[RunRecord]:
    """Runs of the workspace whose saved config equals ``config``, newest first."""
    wanted = canonical(config_to_dict(config))
    candidates = ws.store().list_runs(method=config.method_name, user=config.data.user, search=config.tag or None)
    return [r for r in candidates if canonical(r.config) == wanted or saved_canonical(r.config) == wanted]


def ensure_run(ws: Workspace, config: ExperimentConfig, device: str, console: bool = True) -> tuple[RunRecord, str]:
    """The done run for ``config``: reused, resumed from its last checkpoint, or trained now.

    Returns:
        (its index record, "reused" | "resumed" | "trained").
    """
    matches = matching_runs(ws, config)
    for record in matches:
        if record.status == Status.DONE:
            return record, "reused"
    store = ws.store()
    for record in matches:
        if store.open_run(record.run_id).latest_checkpoint() is not None:
            outcome = api.resume_run(ws, record.run_id, device=device, console=console)
            return store.open_run(outcome.run_id).record, "resumed"
    outcome = api.train(ws, config, device=device, console=console)
    return store.open_run(outcome.run_id).record, "trained"


def _link_or_copy(src: os.PathLike, dst: os.PathLike) -> None:
    """A hard link costs no disk; filesystems without links get a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def evaluation_run(ws: Workspace, source: RunRecord, user: str, tag: str, device: str) -> tuple[RunRecord, str]:
    """The No-DA cell of ``user``: the shared source model evaluated on the user, as a run of its own.

    The source run itself when it was evaluated on ``user``; else an evaluation-only run (tag ``<tag>:eval``,
    ``train.init_from`` = the source run, its checkpoint a hard link to the source's) holding the report,
    predictions and entropy maps, so that the app can open and compare it like any run. No training happens.
    """
    src_config = resolve_config(source.config)
    if src_config.data.user == user:
        return source, "shared"
    config = replace(src_config, tag=f"{tag}:eval", data=replace(src_config.data, user=user),
                     train=replace(src_config.train, init_from=source.run_id))
    for record in matching_runs(ws, config):
        if record.status == Status.DONE:
            return record, "reused"
    checkpoint = ws.store().open_run(source.run_id).latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(f"the No-DA run {source.run_id} has no checkpoint; train it again")
    return _evaluate_into_run(ws, config, checkpoint, source, device), "evaluated"


def _evaluate_into_run(ws: Workspace, config: ExperimentConfig, checkpoint: Path, source: RunRecord,
                       device: str) -> RunRecord:
    from pss.engine.checkpoint import load_model_weights
    from pss.engine.data import load_experiment_data
    from pss.engine.device import resolve_device
    from pss.engine.evaluate import EvalSettings
    from pss.runs.execute import finish_run, prepare_run
    from pss.models.segmenter import build_segmenter
    from pss.weak.transfer_run import evaluation_entries

    started = time.time()
    run = prepare_run(config, ws, device)
    try:
        run.set_status(Status.RUNNING)
        run.log(f"evaluation only: the model of run {source.run_id} (no training)")
        torch_device = resolve_device(device)
        model = build_segmenter(config.model)
        load_model_weights(model, checkpoint)
        _link_or_copy(checkpoint, run.checkpoint_path(source.steps))
        data = load_experiment_data(config, torch_device, ws.cache, config.model.context.mode != "none")
        # a transfer model keeps its split on every user it is scored on (the app shows which classes were weak)
        inherited, after_eval = evaluation_entries(ws.store().open_run(source.run_id).read_report() or {})
        finish_run(run, model.to(torch_device), config, data, EvalSettings.from_config(config, torch_device),
                   source.steps, started, inherited, after_eval, steps=source.steps)
    except BaseException as exc:
        run.log(traceback.format_exc())
        run.set_status(Status.FAILED, error=f"{type(exc).__name__}: {exc}", duration_s=time.time() - started)
        raise
    return run.record
