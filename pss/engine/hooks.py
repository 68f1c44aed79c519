"""Hooks: everything around the optimisation (console progress, run-store events, checkpoints) (P5)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from tqdm import tqdm

from pss.status import Status

if TYPE_CHECKING:
    import torch

    from pss.engine.trainer import Trainer
    from pss.metrics import SegReport


class Hook:
    """Override what you need. Called in list order: ``on_start``; per step ``on_step`` (every step, the detached
    loss tensors, no device sync), then on logging steps (``train.log_every``) ``on_log`` (the losses as floats,
    checked finite, and the segmenter's LR), ``on_eval`` and ``on_checkpoint`` when they happen; ``on_end``."""

    def on_start(self, trainer: "Trainer") -> None: ...
    def on_step(self, trainer: "Trainer", step: int, losses: dict[str, "torch.Tensor"]) -> None: ...
    def on_log(self, trainer: "Trainer", step: int, losses: dict[str, float], lr: float) -> None: ...
    def on_eval(self, trainer: "Trainer", step: int, report: "SegReport") -> None: ...
    def on_checkpoint(self, trainer: "Trainer", step: int, path: Any) -> None: ...
    def on_end(self, trainer: "Trainer", status: str) -> None: ...


class ConsoleHook(Hook):
    """A tqdm bar with the latest losses."""

    def __init__(self, desc: str = "train", disable: bool = False) -> None:
        self.desc, self.disable = desc, disable
        self.bar: tqdm | None = None

    def on_start(self, trainer: "Trainer") -> None:
        self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, desc=self.desc, disable=self.disable,
                        dynamic_ncols=True)

    def on_log(self, trainer: "Trainer", step: int, losses: dict[str, float], lr: float) -> None:
        if self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:4]}, refresh=False)

    def on_eval(self, trainer: "Trainer", step: int, report: "SegReport") -> None:
        if self.bar is not None:
            self.bar.write(f"step {step + 1}: FIoU {report.fiou * 100:.2f}  MIoU(pss) {report.miou['pss'] * 100:.2f}")

    def on_end(self, trainer: "Trainer", status: str) -> None:
        if self.bar is not None:
            self.bar.close()


class RunStoreHook(Hook):
    """Writes train/eval/end events and status to a run of the run store (the app polls it).

    For one stage of a multi-stage pipeline (``stage`` given): its ``train`` events carry ``stage`` and count on
    from ``offset`` (the steps of the stages before it), so the run's progress runs over the whole pipeline; its
    end is a ``stage_end`` event."""

    def __init__(self, run: Any, offset: int = 0, stage: str | None = None) -> None:
        self.run = run
        self.offset, self.stage = offset, stage
        self.started = time.time()

    def on_start(self, trainer: "Trainer") -> None:
        if self.stage is None:  # a pipeline's run was marked running when it started
            self.run.set_status(Status.RUNNING)
        self.started = time.time()

    def on_log(self, trainer: "Trainer", step: int, losses: dict[str, float], lr: float) -> None:
        now = time.time()
        extra = {"stage": self.stage} if self.stage else {}
        self.run.log_event("train", self.offset + step + 1, lr=lr, seconds=now - self.started, **extra, **losses)

    def on_eval(self, trainer: "Trainer", step: int, report: "SegReport") -> None:
        self.run.log_event("eval", self.offset + step + 1, fiou=report.fiou, miou=report.miou["pss"],
                           miou_present=report.miou["present"])

    def on_checkpoint(self, trainer: "Trainer", step: int, path: Any) -> None:
        self.run.log_event("checkpoint", self.offset + step + 1, path=str(path))

    def on_end(self, trainer: "Trainer", status: str) -> None:
        kind, extra = ("stage_end", {"stage": self.stage}) if self.stage else ("end", {})
        self.run.log_event(kind, self.offset + trainer.step, status=status, seconds=time.time() - self.started,
                           **extra)


class SourceValHook(Hook):
    """Scores the source's held-out split (``data.voc_val_list``) every ``every`` steps (``train.source_val_every``)
    and writes ``source_val`` events (step, fiou, miou, miou_present, num_images) to the run's ``metrics.jsonl``.

    This is the curve a No-DA length is chosen from, and it needs no target label. The final step is scored by
    ``execute_run`` after training (also when ``every`` is 0), so the hook skips it. Checked every step, so the
    points fall on the multiples of ``every`` whatever ``train.log_every`` is.
    """

    def __init__(self, run: Any, evaluate: Callable[[Any], "SegReport"], every: int) -> None:
        self.run, self.evaluate, self.every = run, evaluate, every
        self.last = 0

    def on_start(self, trainer: "Trainer") -> None:
        self.last = trainer.step  # a resumed run's earlier points are already in metrics.jsonl

    def on_step(self, trainer: "Trainer", step: int, losses: dict[str, "torch.Tensor"]) -> None:
        done = step + 1
        if self.every > 0 and done // self.every > self.last // self.every and done < trainer.total_steps:
            self.score(trainer.model, done)

    def score(self, model: Any, step: int) -> "SegReport":
        """Evaluate ``model`` on the source val now and log the event at ``step``."""
        report = self.evaluate(model)
        self.run.log_event("source_val", step, **source_val_values(report))
        self.last = step
        return report


def source_val_values(report: "SegReport") -> dict[str, float]:
    """The numbers a ``source_val`` event and the report's ``source_val`` entry hold."""
    return {"fiou": report.fiou, "miou": report.miou["pss"], "miou_present": report.miou["present"],
            "num_images": report.num_images}
