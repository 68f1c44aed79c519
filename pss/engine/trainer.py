"""The one training loop (code_examples.md P1): every method, every backbone, CPU or CUDA.

Per step (the order of the released ADVENT/PSS code, methods.md §1.3): poly LR; the method's networks
frozen; the method's segmenter losses (source CE, target adversarial/entropy, pseudo CE) summed and
back-propagated; the method's networks unfrozen and their losses back-propagated on detached outputs;
then every optimizer steps. Hooks see each step; checkpoints make resume == uninterrupted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pss.config import ExperimentConfig, config_to_dict
from pss.data.loaders import BatchStream, to_device
from pss.engine.checkpoint import load_checkpoint, save_checkpoint
from pss.engine.device import fast_path
from pss.engine.hooks import Hook
from pss.engine.schedule import set_poly_lr
from pss.methods import Method, StepBatch
from pss.metrics import SegReport
from pss.models.segmenter import Segmenter, param_groups


@dataclass
class TrainResult:
    status: str  # "done" or "cancelled"
    step: int
    seconds: float
    last_losses: dict[str, float]


class Trainer:
    """Runs ``config.train.steps`` steps of ``method`` on ``model``.

    Args:
        streams: ``source`` (always), ``target`` (methods with ``uses_target``), ``pseudo`` (``uses_pseudo``).
        evaluator: called every ``train.eval_every`` steps (if > 0) with the model; returns a ``SegReport``.
        checkpoint_path: step -> where that step's checkpoint goes (``None``: no checkpoints).
    """

    def __init__(self, config: ExperimentConfig, model: Segmenter, method: Method, streams: dict[str, BatchStream],
                 device: torch.device, hooks: list[Hook] | None = None,
                 evaluator: Callable[[Segmenter], SegReport] | None = None,
                 checkpoint_path: Callable[[int], Path] | None = None) -> None:
        self.config, self.device = config, device
        self.train_cfg = config.train
        self.fast = fast_path(device, self.train_cfg.amp, self.train_cfg.channels_last)
        memory_format = torch.channels_last if self.fast.channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)
        self.method = method.to(device, memory_format=memory_format)  # its discriminators, as the model
        self.streams, self.hooks, self.evaluator = streams, hooks or [], evaluator
        self.checkpoint_path = checkpoint_path
        self.total_steps = self.train_cfg.steps
        self.step = 0
        self.stop_requested = False
        self.forward_model: torch.nn.Module = torch.compile(self.model) if self.train_cfg.compile else self.model
        self.optimizer = torch.optim.SGD(
            param_groups(self.model, self.train_cfg.lr, self.train_cfg.head_lr_mult),
            lr=self.train_cfg.lr, momentum=self.train_cfg.momentum, weight_decay=self.train_cfg.weight_decay)
        self.aux_optimizer: torch.optim.Optimizer | None = None
        if self.method.has_auxiliary():
            lr_d = getattr(self.method.config, "lr_d", 1e-4)
            self.aux_optimizer = torch.optim.Adam(self.method.parameters(), lr=lr_d, betas=(0.9, 0.99))
        for opt in self._optimizers():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.optimizer, self.aux_optimizer) if o is not None]

    # -- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer else None,
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "config": config_to_dict(self.config),
        }

    def save(self) -> Path | None:
        if self.checkpoint_path is None:
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
        self.optimizer.load_state_dict(data["optimizer"])
        if self.aux_optimizer is not None and data.get("aux_optimizer"):
            self.aux_optimizer.load_state_dict(data["aux_optimizer"])
        for key, state in data["streams"].items():
            if key in self.streams:
                self.streams[key].load_state_dict(state)
        torch.set_rng_state(data["torch_rng"].cpu())
        if data.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in data["cuda_rng"]])
        self.step = int(data["step"])

    # -- the loop ----------------------------------------------------------------------------------------
    def _next_batch(self) -> StepBatch:
        cl = self.fast.channels_last

        def take(key: str) -> dict[str, torch.Tensor]:
            return to_device(next(self.streams[key]), self.device, cl)

        target = take("target") if self.method.uses_target else None
        pseudo = None
        if self.method.uses_pseudo and self.step % self.method.config.pseudo.pseudo_every == 0:
            pseudo = take("pseudo")
        return StepBatch(step=self.step, source=take("source"), target=target, pseudo=pseudo)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached named losses."""
        for opt in self._optimizers():
            set_poly_lr(opt, self.step, self.total_steps, self.train_cfg.poly_power)
            opt.zero_grad(set_to_none=True)
        batch = self._next_batch()
        self.model.train()
        self.method.train()
        self.method.set_auxiliary_trainable(False)
        with self.fast.autocast(self.device):
            out = self.method.segmenter_losses(self.forward_model, batch)
        losses = dict(out.losses)
        sum(losses.values()).backward()
        if self.aux_optimizer is not None and out.cache:
            self.method.set_auxiliary_trainable(True)
            with self.fast.autocast(self.device):
                aux = self.method.auxiliary_losses(out.cache)
            if aux:
                sum(aux.values()).backward()
                losses.update(aux)
        for opt in self._optimizers():
            opt.step()
        return {k: v.detach() for k, v in losses.items()}

    def run(self) -> TrainResult:
        started = time.time()
        log_every = max(1, self.train_cfg.log_every)
        for hook in self.hooks:
            hook.on_start(self)
        last: dict[str, float] = {}
        status = "done"
        while self.step < self.total_steps:
            losses = self.train_step()
            self.step += 1
            if self.step % log_every == 0 or self.step == self.total_steps:
                last = {k: float(v) for k, v in losses.items()}
                bad = {k: v for k, v in last.items() if not math.isfinite(v)}
                if bad:
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {last}; lower train.lr or "
                                             "check the data with `pss doctor`")
                for hook in self.hooks:
                    hook.on_step(self, self.step - 1, last, self.optimizer.param_groups[0]["lr"])
            every = self.train_cfg.eval_every
            if self.evaluator is not None and every > 0 and self.step % every == 0 and self.step < self.total_steps:
                self._evaluate()
            if self.train_cfg.checkpoint_every > 0 and self.step % self.train_cfg.checkpoint_every == 0:
                self.save()
            if self.stop_requested and self.step < self.total_steps:
                status = "cancelled"
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
