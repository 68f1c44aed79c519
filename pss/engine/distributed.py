"""One run on many processes (GPUs) with ``torchrun`` and DistributedDataParallel (DESIGN "Compute").

``torchrun --nproc-per-node N -m pss train ...`` starts N copies of ``pss train``; each finds its rank in the
environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) and
:func:`init_from_env` joins the process group (gloo on CPU, nccl on CUDA, one GPU per local rank). Without
torchrun (``WORLD_SIZE`` unset or 1) nothing here runs and training is the single-process path, unchanged.

What is shared and what is per rank (the choices, and why):

* ``train.batch_size`` is the **global** batch. Every rank follows the same batch plan as a single process and
  takes its contiguous slice of each batch (:func:`shard_plan`): ``batch_size / world`` images per rank, exactly
  how the released code's ``nn.DataParallel`` scattered its batch of 8 over 2 GPUs (4 each, methods.md §1.3).
  A target batch is one k-means group, so each rank's slice is part of that one group, and the group region
  context (and plain BatchNorm) see only the rank's images, as the released code's replicas did. With
  ``train.sync_bn`` BatchNorm statistics are computed over the global batch instead (CUDA only: torch's
  SyncBatchNorm has no CPU kernel).
* The step counter, and so the poly schedule, is the same on every rank; gradients of the segmenter are averaged
  by DDP; the method's own networks (discriminators, with their own optimizer) are not wrapped (see
  :func:`average_gradients`); losses are averaged over ranks on logging steps, so the logged curve is the global
  batch's.
* Rank 0 alone writes: the run's status, events, console, checkpoints and the final evaluation. All ranks load
  the same checkpoint on resume (their stream positions and RNG states are equal by construction).
* A second stage (``pseudo`` stream) builds its pseudo labels on every rank from the same starting model (the
  same labels; ranks other than 0 write theirs to a folder of their own), then each rank takes its slice of the
  pseudo batches like any other stream.
* A rank that dies ends the run: the others fail in their next collective (gloo/nccl see the closed peer, or the
  process-group ``timeout``) instead of waiting forever, rank 0 marks the run failed, torchrun exits non-zero.
"""
from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pss.data.loaders import BatchPlan
from pss.errors import ConfigError

log = logging.getLogger(__name__)

#: how long a collective waits for a silent peer before the run fails (a dead peer's closed socket fails at once)
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistContext:
    """This process's place in a multi-process run. ``world == 1`` is the single-process run (no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run store, the console and checkpoints."""
        return self.rank == 0


SINGLE = DistContext()


def env_world() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1")


def init_from_env(device_spec: str, timeout_s: float | None = None) -> tuple[DistContext, str]:
    """Join the process group torchrun describes in the environment; returns (context, this rank's device spec).

    Single process (no torchrun): ``(SINGLE, device_spec)`` and nothing else happens. On CUDA each rank takes
    ``cuda:LOCAL_RANK`` and nccl; on CPU gloo. ``timeout_s`` (default ``PSS_DIST_TIMEOUT_S`` or 300 s) bounds
    how long a collective waits for a peer that stopped answering.
    """
    world = env_world()
    if world <= 1:
        return SINGLE, device_spec
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    spec = device_spec.strip().lower()
    cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if cuda:
        if torch.cuda.device_count() <= local_rank:
            raise ConfigError(f"rank {rank}: local rank {local_rank} has no GPU ({torch.cuda.device_count()} "
                              "visible); start torchrun with --nproc-per-node <= the GPUs of each node")
        torch.cuda.set_device(local_rank)
        spec = f"cuda:{local_rank}"
    else:
        spec = "cpu"
    if not dist.is_initialized():
        seconds = timeout_s if timeout_s is not None else float(os.environ.get("PSS_DIST_TIMEOUT_S",
                                                                               DEFAULT_TIMEOUT_S))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=seconds))
    return DistContext(rank, world, local_rank), spec


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (at the end of a run, on every rank)."""
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, ctx: DistContext) -> int:
    """The images each rank trains on per step; the global ``train.batch_size`` must split evenly."""
    if batch_size % ctx.world:
        raise ConfigError(f"train.batch_size={batch_size} does not split over {ctx.world} processes; use a "
                          f"multiple of {ctx.world} (it is the global batch: {ctx.world} x images per process)")
    return batch_size // ctx.world


def shard_plan(plan: BatchPlan, ctx: DistContext) -> BatchPlan:
    """The rank's contiguous slice of every batch of ``plan`` (as ``nn.DataParallel`` scatters a batch).

    Every rank computes the same plan (it depends only on the seed and the epoch), so together the ranks train on
    exactly the single-process batches; ``len(batch)`` must be a multiple of ``ctx.world`` (a shorter last batch
    of a tiny set is cut to one).
    """
    def sharded(epoch: int) -> list[list[int]]:
        out = []
        for batch in plan(epoch):
            size = len(batch) // ctx.world
            if size:
                out.append(batch[ctx.rank * size:(ctx.rank + 1) * size])
        return out
    return sharded


def broadcast_text(value: str | None, ctx: DistContext) -> str:
    """Rank 0's ``value`` on every rank (e.g. the id of the run rank 0 created)."""
    if not ctx.active:
        if value is None:
            raise ValueError("broadcast_text: no value on the single process")
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def average_losses(losses: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, torch.Tensor]:
    """Each named loss averaged over the ranks (the global batch's value when the ranks' batches are equal in
    size); one collective for all of them. Returned unchanged on a single process."""
    if not ctx.active or not losses:
        return losses
    stacked = torch.stack([v.detach().float() for v in losses.values()])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= ctx.world
    return {name: stacked[i] for i, name in enumerate(losses)}


def average_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of ``params`` over the ranks, in one flattened all-reduce.

    For the method's own networks (the discriminators). They are not wrapped in DDP because the loop runs them
    several times per step with ``requires_grad`` switched off (the generator side) and then on (their own
    loss), which DDP's reducer does not support, and because unwrapped their state-dict keys stay those of a
    single-process run (checkpoints are interchangeable).
    """
    if not ctx.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's parameters and buffers on every rank (the method's critics; DDP does this for the segmenter)."""
    if not ctx.active:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (so that all ranks stop at the same step)."""
    if not ctx.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


class _StepForward(torch.nn.Module):
    """The segmenter side of one training step as one module call, so DDP sees one forward per step.

    Methods call the segmenter several times per step (source and target batches); DDP expects one forward per
    backward, so the whole ``segmenter_losses`` is the wrapped forward. Only the segmenter is a registered
    submodule: the method (and its critics) is held outside the module tree, so DDP neither averages nor
    broadcasts the critics (see :func:`average_gradients`).
    """

    def __init__(self, model: torch.nn.Module, losses: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self._losses = [losses]  # in a list: a bound method of an nn.Module would register it as a submodule

    def forward(self, batch: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = self._losses[0](self.model, batch)
        return out.losses, out.cache  # plain dicts: what DDP walks to find the tensors of this step's graph


def wrap_step(model: torch.nn.Module, losses: Callable[..., Any], ctx: DistContext,
              device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """``losses(model, batch)`` (the method's ``segmenter_losses``) as a DDP module: calling it with a batch gives
    ``(losses, cache)`` and its backward averages the segmenter's gradients over the ranks.

    With ``sync_bn`` (CUDA only) the segmenter's BatchNorm layers become SyncBatchNorm first, in place: ``model``
    stays the module the trainer saves, evaluates and hands to the method's EMA teachers (same state-dict keys as
    a single-process run).
    """
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); on CPU train "
                              "with train.sync_bn=false (BatchNorm statistics per process)")
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only when the model itself is a BatchNorm layer: never a segmenter
            raise ConfigError("train.sync_bn: the model could not be converted in place")
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a step may leave part of the segmenter without a gradient (the aux head of a method
    # without aux loss, the pseudo batches of every other step); DDP would otherwise wait for those forever
    return torch.nn.parallel.DistributedDataParallel(_StepForward(model, losses), device_ids=ids,
                                                     find_unused_parameters=True)
