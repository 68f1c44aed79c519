"""Time one training step through the engine's own loop: the plain fp32 eager step against the fast paths.

What one step is: ``Trainer.train_step`` of a method (``--method``, default ``pss`` = ADVENT + group region
context, OURS-S1) on a preset's model and batch — the same code path ``pss train -c PRESET`` runs. ``paper``:
ResNet-50 dilated OS8 + PSP (512) + aux head + group OCR context, 320 px, 8 source + 8 target images, two
entropy discriminators; ``demo``: EfficientNet-Lite0 OS16, 128 px, the demo's discriminator width. Random images
and labels (the cost does not depend on the data); backbones without pretrained weights (nor on those).

Settings (``--settings``, default: all that apply to the device), each its own trainer in this process:

* ``stock``    — plain fp32 NCHW eager with PyTorch's stock operations throughout (``pss.ops.kernels.stock_kernels``;
  TF32 convolutions on CUDA): the baseline every ratio is against, i.e. the step as it ran before the CPU speed work;
* ``fp32``     — fp32 NCHW with the project's own CPU kernels (same values; listed in ``pss.ops.kernels``): the
  depthwise convolution, bilinear resizing as matrix products, the fused entropy map and cross-entropy, one
  discriminator pass for both domains; CPU only;
* ``cl``       — that plus channels_last;
* ``bf16``     — bf16 autocast only (CPU: only where it has native bf16 — avx512_bf16 or AMX);
* ``bf16+cl``  — bf16 and channels_last: what ``train.amp=auto`` / ``train.channels_last=auto`` give on CUDA and on
  a CPU with native bf16;
* ``compile``  — ``bf16+cl`` plus ``torch.compile`` of the segmenter (``--compile``; the first call compiles,
  its time is reported separately).

Timing: after ``--warmup`` untimed steps per setting, ``--rounds`` rounds each time ``--steps`` steps of every
setting in turn (interleaved, so a change of machine load hits every setting alike); a setting's ms / step is its
median over the rounds. Prints ms / step, images / s, peak memory (CUDA: ``max_memory_allocated``; CPU: the
process's peak resident memory during the setting's steps minus its resident memory before them, from
``/proc/self/status``) and the speed-up against ``stock``.

Usage: ``python bench/train_step.py --device cpu --preset demo --method source_only [--threads 2]``
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pss.config import ExperimentConfig, build_config
from pss.engine.device import cpu_has_native_bf16, resolve_device
from pss.engine.trainer import Trainer
from pss.methods import build_method
from pss.models.segmenter import build_segmenter
from pss.ops.kernels import stock_kernels

SETTINGS: dict[str, list[str]] = {
    "stock": ["train.amp=off", "train.channels_last=off"],
    "fp32": ["train.amp=off", "train.channels_last=off"],
    "cl": ["train.amp=off", "train.channels_last=on"],
    "bf16": ["train.amp=bf16", "train.channels_last=off"],
    "bf16+cl": ["train.amp=bf16", "train.channels_last=on"],
    "compile": ["train.amp=bf16", "train.channels_last=on", "train.compile=true"],
}


def random_batches(batch: int, size: int, classes: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """An endless stream of random (image, label) batches in the loaders' format (CPU tensors)."""
    gen = torch.Generator().manual_seed(seed)
    pool = [{"image": torch.rand(batch, 3, size, size, generator=gen),
             "label": torch.randint(0, classes, (batch, size, size), generator=gen)} for _ in range(4)]
    return itertools.cycle(pool)


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Setting:
    label: str
    trainer: Trainer
    first_step_s: float
    times_ms: list[float] = field(default_factory=list)
    peak_gib: float = float("nan")

    @property
    def ms(self) -> float:
        return statistics.median(self.times_ms)


def build_trainer(config: ExperimentConfig, device: torch.device) -> Trainer:
    torch.manual_seed(0)
    model = build_segmenter(config.model)
    method = build_method(config.method_name, config.method_params(), config.model.num_classes)
    size, batch = config.data.crop, config.train.batch_size
    streams = {"source": random_batches(batch, size, config.model.num_classes, 0),
               "target": random_batches(batch, size, config.model.num_classes, 1)}
    return Trainer(config, model, method, streams, device)  # type: ignore[arg-type]


def time_steps(setting: Setting, device: torch.device, steps: int) -> None:
    """Time ``steps`` steps of one setting; record ms / step and its peak memory."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _proc_status_kib("VmRSS")
    can_reset = not cuda and _reset_peak_rss()
    start = time.perf_counter()
    with stock_kernels() if setting.label == "stock" else contextlib.nullcontext():
        for _ in range(steps):
            setting.trainer.train_step()
    if cuda:
        torch.cuda.synchronize(device)
    setting.times_ms.append(1000 * (time.perf_counter() - start) / steps)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    elif can_reset:
        peak = max(0, _proc_status_kib("VmHWM") - rss_before) / 2**20
    else:
        peak = float("nan")
    setting.peak_gib = peak if setting.peak_gib != setting.peak_gib else max(setting.peak_gib, peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    parser.add_argument("--preset", default=None, help="demo | paper | tiny (default: paper on CUDA, demo on CPU)")
    parser.add_argument("--method", default="pss", help="registered method name (default pss)")
    parser.add_argument("--settings", default=None, help=f"comma-separated subset of {','.join(SETTINGS)}")
    parser.add_argument("--compile", action="store_true", help="add the compile setting to the defaults")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every setting")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    preset = args.preset or ("paper" if cuda else "demo")
    if args.settings:
        labels = [s.strip() for s in args.settings.split(",") if s.strip()]
        unknown = [s for s in labels if s not in SETTINGS]
        if unknown:
            parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    else:
        bf16 = cuda or cpu_has_native_bf16()
        labels = ["stock"] + ([] if cuda else ["fp32"]) + ["cl"] + (["bf16", "bf16+cl"] if bf16 else []) \
            + (["compile"] if args.compile else [])
    if "stock" not in labels:
        labels.insert(0, "stock")
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads, " \
        f"native bf16: {cpu_has_native_bf16()})"
    print(f"device: {name} · preset {preset} · method {args.method} · torch {torch.__version__} · "
          f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up", flush=True)
    base = [f"method.name={args.method}", "model.pretrained=false"] + args.overrides

    settings: list[Setting] = []
    for label in labels:
        trainer = build_trainer(build_config(preset, base + SETTINGS[label]), device)
        with stock_kernels() if label == "stock" else contextlib.nullcontext():
            start = time.perf_counter()
            trainer.train_step()
            first = time.perf_counter() - start
            for _ in range(max(0, args.warmup - 1)):
                trainer.train_step()
        settings.append(Setting(label, trainer, first))
    for _ in range(args.rounds):
        for setting in settings:
            time_steps(setting, device, args.steps)

    batch = settings[0].trainer.train_cfg.batch_size
    images = batch * (2 if settings[0].trainer.method.uses("target") else 1)
    base_ms = settings[0].ms
    for s in settings:
        spread = f"{min(s.times_ms):.0f}-{max(s.times_ms):.0f}"
        print(f"{s.label:8s} {s.ms:8.1f} ms/step (rounds {spread})  {images * 1000 / s.ms:7.1f} img/s  "
              f"peak {s.peak_gib:.2f} GiB  first step {s.first_step_s:.1f} s  x{base_ms / s.ms:.2f} vs stock",
              flush=True)


if __name__ == "__main__":
    main()
