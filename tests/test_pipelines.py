"""Multi-stage pipelines as runs (``pss.weak.stages``, ``pss.runs.execute``): a toy two-stage pipeline run end to end
(progress numbered over the whole pipeline, one ``stage_end`` per stage, the final model scored like any run, the
pipeline's report entries kept), a SIGTERM between its stages' steps cancels it, and every registered method that
declares stages has a runner."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from pss.api import runs as api
from pss.data.demo import DemoConfig, generate_demo
from pss.engine.data import make_stream
from pss.engine.hooks import Hook
from pss.engine.trainer import Trainer
from pss.methods import METHODS, build_method
from pss.methods.source_only import SourceOnly
from pss.models.segmenter import build_segmenter
from pss.runs.execute import prepare_run, execute_run
from pss.status import Status
from pss.weak import runners
from pss.weak.stages import PipelineOutput, StageContext
from pss.workspace import Workspace

WARM_STEPS = 2


class ToyPipeline(SourceOnly):
    name = "toy_pipeline"
    stages = ("warm", "notes", "seg")

    def stage_steps(self, train_steps: int) -> dict[str, int]:
        return {"warm": WARM_STEPS, "seg": train_steps}


class _Sigterm(Hook):
    """Sends this process SIGTERM at the first step (what the job service's cancel does)."""

    def on_step(self, trainer: Trainer, step: int, losses: dict[str, torch.Tensor]) -> None:
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def _train(ctx: StageContext, stage: str, steps: int, extra: list[Hook]) -> tuple[torch.nn.Module, int]:
    config = ctx.config
    config.train.steps = steps
    model = build_segmenter(config.model)
    stream = make_stream(ctx.data.source, None, config, ctx.seed)
    try:
        trainer = Trainer(config, model, build_method("source_only", {}, config.model.num_classes),
                          {"source": stream}, ctx.device, extra + ctx.hooks_for(stage))
        result = trainer.run()
    finally:
        stream.close()
    return trainer.model, result.step


def _toy_runner(cancel: bool):
    def run(ctx: StageContext) -> PipelineOutput:
        seg_steps = ctx.config.train.steps
        _train(ctx, "warm", WARM_STEPS, [_Sigterm()] if cancel else [])
        if ctx.stop_requested():
            return PipelineOutput(None)
        (ctx.stage_dir("notes") / "written.txt").write_text("a stage without training")
        model, step = _train(ctx, "seg", seg_steps, [])
        return PipelineOutput(model, {"toy": {"stages": list(ctx.method.stages)}}, step)
    return run


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setitem(METHODS, ToyPipeline.name, ToyPipeline)
    generate_demo(tmp_path / "data", seed=0, config=DemoConfig(num_source=8, num_users=1, images_per_user=8, long_side=96))
    return Workspace(tmp_path)


def _run(ws: Workspace, monkeypatch: pytest.MonkeyPatch, cancel: bool):
    monkeypatch.setitem(runners.PIPELINES, ToyPipeline.name, _toy_runner(cancel))
    config = api.make_config(ws, "tiny", ["method.name=toy_pipeline", "train.steps=3", "train.log_every=1"])
    run = prepare_run(config, ws, "cpu")
    return run, execute_run(run, config, ws, "cpu", console=False)


def test_a_pipeline_is_one_run(toy: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    run, outcome = _run(toy, monkeypatch, cancel=False)
    assert outcome.status == Status.DONE and outcome.report is not None
    record = toy.store().index.get_run(run.run_id)
    assert record.total_steps == WARM_STEPS + 3 and record.steps == WARM_STEPS + 3  # progress over both stages
    train = run.events("train")
    assert [(e["stage"], e["step"]) for e in train] == [("warm", 1), ("warm", 2), ("seg", 3), ("seg", 4), ("seg", 5)]
    assert [(e["stage"], e["status"]) for e in run.events("stage_end")] == [("warm", "done"), ("seg", "done")]
    assert (run.dir / "notes" / "written.txt").is_file()
    report = run.read_report()
    assert report["toy"] == {"stages": ["warm", "notes", "seg"]} and report["num_images"] > 0
    assert run.events("eval")[-1]["step"] == 3  # the final stage's last step


def test_sigterm_cancels_a_pipeline(toy: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    run, outcome = _run(toy, monkeypatch, cancel=True)
    assert outcome.status == Status.CANCELLED
    assert run.meta["status"] == Status.CANCELLED
    assert [e["stage"] for e in run.events("stage_end")] == ["warm"]  # the second stage never started
    assert run.events("stage_end")[0]["status"] == Status.CANCELLED
    assert not (run.dir / "notes").exists()


def test_every_pipeline_method_has_a_runner() -> None:
    pipelines = {name for name, cls in METHODS.items() if cls.stages}
    assert pipelines <= set(runners.PIPELINES), f"no runner for {sorted(pipelines - set(runners.PIPELINES))}"
    for name in pipelines:  # a pipeline's training stages are among its stages, in order
        method = build_method(name, {}, 21)
        trained = list(method.stage_steps(10))
        assert trained and trained == [s for s in method.stages if s in trained]
