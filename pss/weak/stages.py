"""Multi-stage pipelines as runs (issues 17 and 18): one run directory, one status, one final segmenter.

A pipeline is a registered method (``pss.methods.METHODS``, so the CLI, the experiment tables and the app's run
form list it with no special case) whose class declares ``stages`` (its stage names, in order). Its runner, here
in ``pss.weak.runners.PIPELINES`` under the method's name, trains the auxiliary networks of each stage (saliency, CAM,
AffinityNet, L-Net, ...) with the one loop, writes each stage's outputs under ``<run>/<stage>/`` and returns the
final segmenter; ``pss.runs.execute`` then scores it on the user's evaluation images like any other run
(``finish_run``) and keeps the pipeline's extra report entries (e.g. each stage's pseudo-mask quality).

The layer order holds: ``pss.weak`` sits with the engine (it drives ``Trainer``), ``pss.runs`` imports it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pss.config import ExperimentConfig
from pss.engine.data import ExperimentData
from pss.engine.hooks import Hook
from pss.methods.base import Method
from pss.metrics import SegReport
from pss.models.segmenter import Segmenter


def stage_config(config: ExperimentConfig, steps: int, output_stride: int | None = None) -> ExperimentConfig:
    """The config one stage's loop runs with: ``train.steps = steps`` (its progress, LR schedule) and, for a stage
    whose network runs at another stride than the segmenter (EPS's CAM net, AffinityNet: 8), ``output_stride``."""
    model = config.model if output_stride is None else replace(config.model, output_stride=output_stride)
    return replace(config, model=model, train=replace(config.train, steps=steps))


@dataclass
class StageContext:
    """What a pipeline runner gets. ``work`` is the run directory (stage ``s`` writes under ``work / s``);
    ``hooks_for(stage)`` gives the hooks one of its training loops reports through (the run store's ``stage``
    events and the console, so progress shows per stage); ``stop_requested()`` is true once the run was asked to
    stop (SIGTERM): a runner checks it between stages and passes it on to each ``Trainer``."""

    config: ExperimentConfig
    method: Method
    data: ExperimentData
    device: torch.device
    work: Path
    seed: int
    log: Callable[[str], None]
    hooks_for: Callable[[str], list[Hook]]
    stop_requested: Callable[[], bool]
    # the run's segmenter as execute_run built it (``train.init_from``'s weights loaded) and where its checkpoints
    # go: a pipeline's final segmenter stage starts from it, as a second stage does, and checkpoints like any run
    segmenter: Segmenter | None = None
    checkpoint_path: Callable[[int], Path] | None = None

    def stage_dir(self, stage: str) -> Path:
        if stage not in self.method.stages:
            raise ValueError(f"{stage!r} is not a stage of {self.method.name!r} ({', '.join(self.method.stages)})")
        path = self.work / stage
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class PipelineOutput:
    """The final segmenter (``None`` when the run was cancelled between stages) and extra report entries
    (JSON-serialisable; merged into ``report.json``), e.g. ``{"stage_quality": {...}, "split": {...}}``.
    ``after_eval``: called with the report of the user's evaluation (``finish_run``), returns more report entries
    made from it (e.g. the transfer pipeline's strong / weak split of the user's mIoU); None: none."""

    model: Segmenter | None
    report: dict[str, Any] = field(default_factory=dict)
    step: int = 0  # the final segmenter stage's last step (the ``eval`` event's step)
    after_eval: Callable[[SegReport], dict[str, Any]] | None = None


PipelineRunner = Callable[[StageContext], PipelineOutput]
