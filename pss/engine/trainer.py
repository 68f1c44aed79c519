"""The one training loop (code_examples.md P1): every method, every backbone, CPU or CUDA.

Per step (the order of the released ADVENT/PSS code, methods.md §1.3): poly LR on every optimizer the method
built; the batches of the streams the method draws this step (and, with ``train.annotated_weight`` > 0, a batch of
the user's annotated training images, for every method); the method's critics frozen; its segmenter losses
(source CE, target adversarial/entropy, pseudo CE; plus ``annotated``, ``Method.annotated_losses``) summed and
back-propagated; the critics unfrozen and their losses back-propagated on detached outputs; every optimizer
steps; the method's ``after_step``. Nothing here
depends on which method runs (the contract is ``pss.methods.base.Method``). Hooks see every step
(``on_step``) and every logging step (``on_log``); checkpoints make resume == uninterrupted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from functools import reduce
from operator import add
from typing import Callable, cast

import torch

from pss.config import ExperimentConfig, config_to_dict
from pss.data.loaders import BatchStream, to_device
from pss.engine.checkpoint import load_checkpoint, save_checkpoint
from pss.engine.device import fast_path
from pss.engine.distributed import SINGLE, DistContext, any_rank, average_gradients, average_losses, \
    broadcast_module, wrap_step
from pss.engine.hooks import Hook
from pss.engine.schedule import set_poly_lr
from pss.methods import Method, StepBatch, StepLosses
from pss.metrics import SegReport
from pss.models.segmenter import Segmenter
from pss.status import Status


def _total(losses: dict[str, torch.Tensor], if_empty: str) -> torch.Tensor:
    """The sum of the named losses, left to right (the same bits as Python's ``sum``)."""
    if not losses:
        raise ValueError(if_empty)
    return reduce(add, losses.values())


@dataclass
class TrainResult:
    status: Status  # DONE or CANCELLED
    step: int
    seconds: float
    last_losses: dict[str, float]


class Trainer:
    """Runs ``config.train.steps`` steps of ``method`` on ``model``.

    Args:
        streams: one ``BatchStream`` per name in ``method.streams`` (``source``, ``target``, ``pseudo``), and
            ``annotated`` when ``train.annotated_weight`` > 0.
        evaluator: called every ``train.eval_every`` steps (if > 0) with the model; returns a ``SegReport``.
        checkpoint_path: step -> where that step's checkpoint goes (``None``: no checkpoints).
        dist: this process's rank in a ``torchrun`` run (``pss.engine.distributed``); the default is the single
            process, whose path is unchanged. Under DDP only rank 0 saves checkpoints (give the other ranks no
            hooks and no evaluator).
    """

    def __init__(self, config: ExperimentConfig, model: Segmenter, method: Method, streams: dict[str, BatchStream],
                 device: torch.device, hooks: list[Hook] | None = None,
                 evaluator: Callable[[Segmenter], SegReport] | None = None,
                 checkpoint_path: Callable[[int], Path] | None = None, dist: DistContext = SINGLE) -> None:
        self.config, self.device, self.dist = config, device, dist
        self.train_cfg = config.train
        self.fast = fast_path(device, self.train_cfg.amp, self.train_cfg.channels_last)
        memory_format = torch.channels_last if self.fast.channels_last else torch.preserve_format
        self.model = model.to(device).to(memory_format=memory_format)
        self.method = method.to(device).to(memory_format=memory_format)  # its critics, as the model
        self.streams, self.hooks, self.evaluator = streams, hooks or [], evaluator
        self.checkpoint_path = checkpoint_path
        self.total_steps = self.train_cfg.steps
        self.step = 0
        self.stop_requested = False
        # the compiled wrapper forwards like the model (same outputs, same parameters)
        self.forward_model = cast(Segmenter, torch.compile(self.model)) if self.train_cfg.compile else self.model
        missing = [name for name in method.streams if name not in streams]
        if missing:
            raise ValueError(f"method {method.name!r} draws the stream(s) {missing}; got only {sorted(streams)}")
        # the user's annotated training images: drawn by the loop itself, for every method (no method declares it)
        self.annotated_weight = self.train_cfg.annotated_weight
        if self.annotated_weight > 0 and "annotated" not in streams:
            raise ValueError(f"train.annotated_weight={self.annotated_weight} needs an 'annotated' stream (the "
                             "user's annotated training images); got only " + ", ".join(sorted(streams)))
        self.method.on_train_start(self.total_steps)
        self.optimizers = self.method.build_optimizers(self.model, self.train_cfg)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        # under DDP the segmenter side of a step is one DDP forward (its gradients averaged in backward); the
        # method's critics stay plain modules whose gradients are averaged before their optimizer steps
        self.step_forward: torch.nn.Module | None = None
        if dist.active:
            broadcast_module(self.method, dist)
            self.step_forward = wrap_step(self.forward_model, self.method.segmenter_losses, dist, device,
                                          self.train_cfg.sync_bn)

    @property
    def lr(self) -> float:
        """The segmenter's current base learning rate (the first group of the first optimizer)."""
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    # -- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "config": config_to_dict(self.config),
        }

    def save(self) -> Path | None:
        if self.checkpoint_path is None or not self.dist.is_main:  # every rank holds the same state: rank 0 writes
            return None
        path = save_checkpoint(self.checkpoint_path(self.step), self.state_dict())
        for hook in self.hooks:
            hook.on_checkpoint(self, self.step - 1, path)
        return path

    def resume(self, path: Path) -> None:
        """Restore everything from a checkpoint written by ``save``."""
        data = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(data["model"])
        self.method.load_state_dict(data["method"])
        saved = data.get("optimizers")
        if saved is None:  # checkpoints written before the method contract (issue 13): two fixed slots
            saved = {"segmenter": data["optimizer"], "critic": data.get("aux_optimizer")}
        for name, opt in self.optimizers.items():
            if saved.get(name):
                opt.load_state_dict(saved[name])
        for key, state in data["streams"].items():
            if key in self.streams:
                self.streams[key].load_state_dict(state)
        torch.set_rng_state(data["torch_rng"].cpu())
        if data.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in data["cuda_rng"]])
        self.step = int(data["step"])

    # -- the loop ----------------------------------------------------------------------------------------
    def _next_batch(self) -> StepBatch:
        # drawn in the order target, pseudo, source (as before the contract: resumed and recorded runs match)
        drawn = {name: to_device(next(self.streams[name]), self.device, self.fast.channels_last)
                 for name in ("target", "pseudo", "source")
                 if self.method.uses(name) and self.method.draws(name, self.step)}
        if self.annotated_weight > 0:  # last: with weight 0 nothing is drawn and every stream is as before
            drawn["annotated"] = to_device(next(self.streams["annotated"]), self.device, self.fast.channels_last)
        return StepBatch(step=self.step, **drawn)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached named losses."""
        for opt in self.optimizers.values():
            set_poly_lr(opt, self.step, self.total_steps, self.train_cfg.poly_power)
            opt.zero_grad(set_to_none=True)
        batch = self._next_batch()
        self.model.train()
        self.method.train()
        self.method.set_critics_trainable(False)
        with self.fast.autocast(self.device):
            if self.step_forward is not None:
                out = StepLosses(*self.step_forward(batch))
            else:
                out = self.method.segmenter_losses(self.forward_model, batch)
            losses = dict(out.losses)
            if batch.annotated is not None:  # added after the method's losses: weight 0 sums the same bits as before
                extra = self.method.annotated_losses(self.forward_model, batch.annotated, self.annotated_weight)
                clash = sorted(extra.keys() & losses.keys())
                if clash:
                    raise ValueError(f"method {self.method.name!r} already returns the loss(es) {clash}")
                losses.update(extra)
        _total(losses, f"method {self.method.name!r} returned no segmenter loss").backward()
        if out.cache:
            self.method.set_critics_trainable(True)
            with self.fast.autocast(self.device):
                critic = self.method.critic_losses(out.cache)
            if critic:
                _total(critic, "").backward()
                losses.update(critic)
            average_gradients(self.method.parameters(), self.dist)  # nothing on a single process
        for opt in self.optimizers.values():
            opt.step()
        self.method.after_step(self.model, self.step)
        return {k: v.detach() for k, v in losses.items()}

    def run(self) -> TrainResult:
        started = time.time()
        log_every = max(1, self.train_cfg.log_every)
        for hook in self.hooks:
            hook.on_start(self)
        last: dict[str, float] = {}
        status = Status.DONE
        while self.step < self.total_steps:
            losses = self.train_step()
            self.step += 1
            for hook in self.hooks:
                hook.on_step(self, self.step - 1, losses)
            if self.step % log_every == 0 or self.step == self.total_steps:
                # float() waits for the device: only on logging steps, so a non-finite loss is caught there; under
                # DDP the logged losses are the ranks' mean (the global batch's), the same on every rank
                last = {k: float(v) for k, v in average_losses(losses, self.dist).items()}
                if not all(math.isfinite(v) for v in last.values()):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {last}; lower train.lr or "
                                             "check the data with `pss doctor`")
                for hook in self.hooks:
                    hook.on_log(self, self.step - 1, last, self.lr)
            every = self.train_cfg.eval_every
            if self.evaluator is not None and every > 0 and self.step % every == 0 and self.step < self.total_steps:
                self._evaluate()
            if self.train_cfg.checkpoint_every > 0 and self.step % self.train_cfg.checkpoint_every == 0:
                self.save()
            stopping = self.stop_requested
            if self.dist.active:
                # SIGTERM may reach the ranks at different steps: they agree on logging steps only (a collective
                # and a device sync, which the logged losses cost there anyway), so all stop at the same step
                logged = self.step % log_every == 0 or self.step == self.total_steps
                stopping = logged and any_rank(self.stop_requested, self.dist, self.device)
            if stopping and self.step < self.total_steps:
                status = Status.CANCELLED
                break
        self.save()
        for hook in self.hooks:
            hook.on_end(self, status)
        return TrainResult(status, self.step, time.time() - started, last)

    def _evaluate(self) -> SegReport:
        report = self.evaluator(self.model)  # type: ignore[misc]
        for hook in self.hooks:
            hook.on_eval(self, self.step - 1, report)
        return report
