"""One training run, end to end: data, groups, model, method, pseudo labels, the loop, the final evaluation.

This is what ``pss train`` and the app's job worker run. Everything a run produces goes to its run
directory in the run store (config, events, checkpoints, predictions, entropy maps, report). It lives with the
run store, above the engine (``pss.engine`` knows nothing of runs; the trainer reports through hooks).
"""
from __future__ import annotations

import logging
import os
import random
import signal
import time
import traceback
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pss.config import ExperimentConfig, config_to_dict
from pss.data.loaders import BatchStream
from pss.engine.checkpoint import load_model_weights, save_checkpoint
from pss.data.annotations import ANNOTATED_LIST
from pss.engine.data import ExperimentData, load_experiment_data, make_annotated_stream, make_stream
from pss.engine.skipped import log_skipped
from pss.engine.device import resolve_device
from pss.engine.distributed import SINGLE, DistContext
from pss.engine.evaluate import EvalSettings, evaluate_records
from pss.engine.hooks import ConsoleHook, Hook, RunStoreHook, SourceValHook, source_val_values
from pss.engine.pseudo import PseudoContext
from pss.engine.trainer import Trainer, TrainResult
from pss.errors import CheckpointError, ConfigError
from pss.methods import Method, build_method
from pss.methods.pseudo import PseudoPolicy
from pss.metrics import SegReport
from pss.models.segmenter import Segmenter, build_segmenter
from pss.runs.run import Run
from pss.runs.store import RunStore
from pss.workspace import Workspace
from pss.status import Status
from pss.weak.stages import PipelineOutput, StageContext

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_id: str
    status: Status
    report: SegReport | None
    train: TrainResult | None
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_init(init_from: str, store: RunStore) -> Path:
    """``train.init_from``: a checkpoint path, or a run id whose latest checkpoint is used."""
    path = Path(init_from)
    if path.suffix == ".pt" or path.is_file():
        return path
    checkpoint = store.open_run(init_from).latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(f"run {init_from} has no checkpoint to start from; wait for it to finish or "
                              "give a checkpoint path in train.init_from")
    return checkpoint


def prepare_run(config: ExperimentConfig, workspace: Workspace, device_spec: str = "auto",
                run_id: str | None = None) -> Run:
    """Create the run (status ``queued``) so a job can be queued for it before anything heavy happens."""
    device = resolve_device(device_spec)
    return workspace.store().create_run(config.data.user, config.method_name, config_to_dict(config), str(device),
                                        total_steps(config), run_id=run_id)


def training_stages(method: Method, config: ExperimentConfig) -> dict[str, int]:
    """A pipeline's stages that train for this run, with their steps, in order (empty for a one-loop method)."""
    skipped = method.skipped_stages(config)
    return {stage: steps for stage, steps in method.stage_steps(config.train.steps).items() if stage not in skipped}


def total_steps(config: ExperimentConfig) -> int:
    """The run's progress total: ``train.steps``, or for a pipeline the sum of its training stages' steps."""
    method = build_method(config.method_name, config.method_params(), config.model.num_classes)
    return sum(training_stages(method, config).values()) or config.train.steps


class _StopHook(Hook):
    """Passes a pipeline's stop request (SIGTERM) on to the stage's trainer that is running."""

    def __init__(self, stop: list[bool]) -> None:
        self.stop = stop

    def on_step(self, trainer: Trainer, step: int, losses: dict[str, torch.Tensor]) -> None:
        if self.stop[0]:
            trainer.stop_requested = True


def _run_pipeline(run: Run, config: ExperimentConfig, method: Method, data: ExperimentData, device: torch.device,
                  stop: list[bool], console: bool, extra_hooks: list[Hook],
                  model: Segmenter | None = None) -> PipelineOutput:
    """A multi-stage method (``method.stages``): its runner (``pss.weak.runners.PIPELINES``) trains each stage with
    hooks that report into this run (``train`` events numbered over the whole pipeline, ``stage_end`` events)."""
    from pss.weak.runners import PIPELINES  # late: the pipelines import the weak stages only when one runs

    if method.name not in PIPELINES:
        raise ConfigError(f"method {method.name!r} declares stages {method.stages} but pss.weak.runners.PIPELINES "
                          "has no runner for it")
    offsets, total = {}, 0
    for stage, steps in training_stages(method, config).items():
        offsets[stage], total = total, total + steps

    def hooks_for(stage: str) -> list[Hook]:
        if stage not in offsets:
            raise ValueError(f"{stage!r} is not a training stage of {method.name!r} ({', '.join(offsets)})")
        hooks: list[Hook] = [RunStoreHook(run, offsets[stage], stage), _StopHook(stop), *extra_hooks]
        if console:
            hooks.append(ConsoleHook(f"{config.method_name} {config.data.user} {stage}"))
        return hooks

    context = StageContext(config, method, data, device, run.dir, config.train.seed, run.log, hooks_for,
                           lambda: stop[0], model, run.checkpoint_path)
    return PIPELINES[method.name](context)


def _pseudo_stream(model: Segmenter, policy: PseudoPolicy, config: ExperimentConfig, data: ExperimentData,
                   run: Run, settings: EvalSettings, seed: int, fields: tuple[str, ...],
                   dist: DistContext = SINGLE) -> BatchStream:
    """Second stage: predict the target set with the starting model (and any extra teachers the method's policy
    names) and build the pseudo labels with the method's policy (``pss.methods.pseudo``)."""
    def load_teacher(ref: str) -> Segmenter:
        teacher = build_segmenter(config.model)
        load_model_weights(teacher, resolve_init(ref, run.store))
        return teacher.to(settings.device)

    # under DDP every rank builds the same labels; the others write theirs apart (PNG writes are not atomic, and
    # a rank must not read a file another rank is writing); rank 0's folder is the one the app shows
    out_dir = run.dir / ("pseudo" if dist.is_main else f".pseudo-rank{dist.rank}")
    source = PseudoContext(data.target, data.target_groups, settings, out_dir, load_teacher)
    pseudo = policy.build(model, source)
    run.log(f"pseudo labels: {len(pseudo.selected)} of {len(pseudo.mean_entropy)} images selected"
            + (f"; {pseudo.summary}" if pseudo.summary else ""))
    groups = {name: data.target_groups[name] for name in pseudo.selected} if data.target_groups else None
    return make_stream(pseudo.records, groups, config, seed + 2, fields=fields, dist=dist)


def finish_run(run: Run, model: Segmenter, config: ExperimentConfig, data: ExperimentData, settings: EvalSettings,
               step: int, started: float, extra_report: dict[str, Any] | None = None,
               after_eval: Callable[[SegReport], dict[str, Any]] | None = None, **status: Any) -> SegReport:
    """The end of every run that produced a model: score it on the user's images (predictions and entropy maps
    saved when ``eval.save_predictions``), write the report, log the ``eval`` event at ``step``, mark it done.
    ``after_eval`` (a pipeline's, ``PipelineOutput.after_eval``): more report entries made from that evaluation."""
    report, entropies = evaluate_records(model, data.evaluation, data.evaluation_groups, settings,
                                         output_dir=run.dir if config.eval.save_predictions else None)
    run.write_report({**report.to_dict(), "mean_entropy": entropies, "groups": data.evaluation_groups,
                      **(extra_report or {}), **(after_eval(report) if after_eval is not None else {})})
    run.log_event("eval", step, fiou=report.fiou, miou=report.miou["pss"], miou_present=report.miou["present"])
    run.set_status(Status.DONE, fiou=report.fiou, miou=report.miou["pss"], duration_s=time.time() - started, **status)
    return report


def execute_run(run: Run, config: ExperimentConfig, workspace: Workspace, device_spec: str = "auto",
                resume: bool = False, console: bool = True, extra_hooks: list[Hook] | None = None,
                dist: DistContext = SINGLE) -> RunOutcome:
    """Train and evaluate ``run``; status, events and the report go to the run store. SIGTERM cancels cleanly
    (a checkpoint is written and the run is marked ``cancelled``).

    ``dist``: this process's rank in a ``torchrun`` run (``pss.engine.distributed``). Every rank trains its slice
    of each batch; rank 0 alone writes the run's status, events, console, checkpoints and final evaluation, and
    the other ranks return once training ended (``report`` None). A rank that fails marks the run failed.
    """
    started = time.time()
    device = resolve_device(device_spec)
    seed_everything(config.train.seed)
    trainer: Trainer | None = None
    stop = [False]  # a pipeline's stop request (its stages' trainers see it through _StopHook)
    pipeline_started = False
    previous = signal.getsignal(signal.SIGTERM)

    def request_stop(signum: int, frame: Any) -> None:
        if pipeline_started:
            stop[0] = True
            return
        if trainer is None:  # still loading data/models: nothing to checkpoint, stop right away
            raise KeyboardInterrupt("cancelled (SIGTERM) before training started")
        trainer.stop_requested = True

    try:
        signal.signal(signal.SIGTERM, request_stop)
    except ValueError:  # not the main thread (e.g. called from a test thread): cancellation by flag only
        previous = None
    main = dist.is_main
    try:
        if main:
            run.set_status(Status.RUNNING)
        if dist.active:
            run.log(f"rank {dist.rank} of {dist.world} (pid {os.getpid()}): training on {device} (global batch "
                    f"{config.train.batch_size}, {config.train.batch_size // dist.world} images per process)")
        model = build_segmenter(config.model)
        method = build_method(config.method_name, config.method_params(), config.model.num_classes)
        policy = method.pseudo_policy()
        store = workspace.store()
        # On resume the checkpoint replaces these weights, except that a second stage's pseudo labels are rebuilt
        # from the starting model first (so that a resumed run trains on the same pseudo labels).
        if config.train.init_from and (not resume or policy is not None):
            # a context model may start from a context-free No-DA model: its context layers then start fresh
            # (with model.context.gate, as the identity, so the start predicts exactly as the No-DA model)
            load_model_weights(model, resolve_init(config.train.init_from, store),
                               new_prefixes=("context.",) if config.model.context.mode != "none" else ())
        need_groups = config.model.context.mode != "none"
        data = load_experiment_data(config, device, workspace.cache, need_groups)
        seed = config.train.seed
        settings = EvalSettings.from_config(config, device)
        if method.stages:
            if dist.active:
                raise ConfigError(f"{method.name!r} is a multi-stage pipeline: run it in one process (no torchrun)")
            if resume:  # its stages' outputs are rebuilt: a resumed pipeline starts again from its first stage
                run.log(f"resume: {method.name} is a pipeline; it starts again from stage {method.stages[0]!r}")
            pipeline_started = True
            output = _run_pipeline(run, config, method, data, device, stop, console, extra_hooks or [], model)
            if output.model is None or stop[0]:
                run.set_status(Status.CANCELLED, duration_s=time.time() - started)
                return RunOutcome(run.run_id, Status.CANCELLED, None, None, time.time() - started)
            # the final segmenter is the run's model, as a one-loop run's last checkpoint (inspect, predict, init_from)
            save_checkpoint(run.checkpoint_path(output.step), {"step": output.step,
                                                               "model": output.model.state_dict(),
                                                               "config": config_to_dict(config)})
            report = finish_run(run, output.model, config, data, settings, output.step, started, output.report,
                                output.after_eval)
            return RunOutcome(run.run_id, Status.DONE, report, None, time.time() - started)
        streams = {"source": make_stream(data.source, data.source_groups, config, seed, fields=method.fields,
                                         dist=dist)}
        if method.uses("target"):
            streams["target"] = make_stream(data.target, data.target_groups, config, seed + 1, fields=method.fields,
                                            dist=dist)
        if method.uses("pseudo"):
            if policy is None:
                raise ConfigError(f"method {method.name!r} draws pseudo batches but has no pseudo_policy()")
            streams["pseudo"] = _pseudo_stream(model.to(device), policy, config, data, run, settings, seed,
                                               method.fields, dist)
        if config.train.annotated_weight > 0:
            if dist.world > 1:  # the annotated batch is drawn outside the DDP-wrapped step: not sharded
                raise ConfigError("train.annotated_weight > 0 is not supported under torchrun yet; train the "
                                  "annotated fine-tune in one process")
            if not data.annotated:
                raise ConfigError(f"train.annotated_weight={config.train.annotated_weight:g} trains on user "
                                  f"{config.data.user}'s annotated images, and it has none: annotate images in the "
                                  "Annotate tab or list them in annotated.txt "
                                  f"({config.data.personal_path() / config.data.user / ANNOTATED_LIST}), or set "
                                  "train.annotated_weight=0")
            streams["annotated"] = make_annotated_stream(data.annotated, config, seed + 3, fields=method.fields)
            run.log(f"annotated training images: {len(data.annotated)} (weight {config.train.annotated_weight:g})")

        def evaluator(m: Segmenter) -> SegReport:
            return evaluate_records(m, data.evaluation, data.evaluation_groups, settings)[0]

        def source_evaluator(m: Segmenter) -> SegReport:
            # the source val has no k-means groups: each chunk of eval.batch_size images is one attention group
            return evaluate_records(m, data.source_val, None, settings)[0]

        source_val = SourceValHook(run, source_evaluator, config.train.source_val_every) \
            if data.source_val and main else None
        hooks: list[Hook] = [RunStoreHook(run), *([source_val] if source_val else [])] + (extra_hooks or [])
        if console:
            hooks.append(ConsoleHook(f"{config.method_name} {config.data.user}"))
        if not main:  # the other ranks of a torchrun run write nothing (and do not evaluate)
            hooks = []
        trainer = Trainer(config, model, method, streams, device, hooks, evaluator if main else None,
                          run.checkpoint_path, dist)
        if resume:
            checkpoint = run.latest_checkpoint()
            if checkpoint is None:
                raise CheckpointError(f"run {run.run_id} has no checkpoint to resume from; start it again")
            trainer.resume(checkpoint)
        result = trainer.run()
        if not main:
            return RunOutcome(run.run_id, result.status, None, result, time.time() - started)
        # bad files were skipped where training met them; name them all now that it ended (issue 15)
        log_skipped(streams, run.log, {"source": data.source_groups, "target": data.target_groups})
        if result.status == Status.CANCELLED:
            run.set_status(Status.CANCELLED, duration_s=time.time() - started)
            return RunOutcome(run.run_id, Status.CANCELLED, None, result, time.time() - started)
        extra: dict[str, Any] = {}
        if "annotated" in streams:  # which images the run was supervised on (none of them is scored)
            extra["annotated_train"] = sorted(r.name for r in data.annotated)
        if source_val is not None:
            final = source_val_values(source_val.score(trainer.model, result.step))
            curve = [{k: e.get(k) for k in ("step", *final)} for e in run.events("source_val")]
            extra["source_val"] = {**final, "curve": curve}  # the curve includes points from before a resume
        report = finish_run(run, trainer.model, config, data, settings, result.step, started, extra)
        return RunOutcome(run.run_id, Status.DONE, report, result, time.time() - started)
    except BaseException as exc:
        prefix = f"rank {dist.rank}: " if dist.active else ""
        run.log(prefix + traceback.format_exc())
        status = Status.CANCELLED if isinstance(exc, KeyboardInterrupt) else Status.FAILED
        # rank 0 says why the run ended; another rank only when the run still looks alive (e.g. rank 0 was killed)
        if main or run.meta.get("status") in (Status.RUNNING, Status.QUEUED):
            run.set_status(status, error=f"{prefix}{type(exc).__name__}: {exc}", duration_s=time.time() - started)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
