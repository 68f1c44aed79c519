"""Time one training step of the paper's model through the engine's own loop, fp32 vs the CUDA fast path.

What one step is: ``Trainer.train_step`` of the ``pss`` method (ADVENT + group region context, OURS-S1) on the
paper's model — ResNet-50 dilated OS8 + PSP (512) + aux head + group OCR context, 320x320, batch 8 source +
8 target, two entropy discriminators — the same code path ``pss train -c paper`` runs. Random images and labels
(the cost does not depend on the data); the backbone is built without pretrained weights (nor does it depend on
those).

Settings, each measured in the same process after warm-up steps:

* ``fp32``     — plain fp32 NCHW (PyTorch's defaults: TF32 convolutions on CUDA), how the official code runs;
* ``bf16+cl``  — bf16 autocast + channels_last, the engine's default on CUDA (``train.amp=auto``);
* ``compile``  — the same plus ``torch.compile`` of the segmenter (``train.compile=true``), with ``--compile``.

Prints ms / step, images / s and peak GPU memory per setting and the speed-up ratio against ``fp32``.
On a machine without CUDA it runs the ``demo`` model on CPU instead (fp32 only; there is no fast path there).

Usage: ``python bench/train_step.py [--steps 20] [--warmup 5] [--compile] [--preset paper]``
"""
from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator

import torch

from pss.config import ExperimentConfig, build_config
from pss.engine.device import resolve_device
from pss.engine.trainer import Trainer
from pss.methods import build_method
from pss.models.segmenter import build_segmenter


def random_batches(batch: int, size: int, classes: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """An endless stream of random (image, label) batches in the loaders' format (CPU tensors)."""
    gen = torch.Generator().manual_seed(seed)
    pool = [{"image": torch.rand(batch, 3, size, size, generator=gen),
             "label": torch.randint(0, classes, (batch, size, size), generator=gen)} for _ in range(4)]
    return itertools.cycle(pool)


def measure(config: ExperimentConfig, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """ms / step and peak memory of ``steps`` timed steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    model = build_segmenter(config.model)
    method = build_method(config.method_name, config.method_params(), config.model.num_classes)
    size, batch = config.data.crop, config.train.batch_size
    streams = {"source": random_batches(batch, size, config.model.num_classes, 0),
               "target": random_batches(batch, size, config.model.num_classes, 1)}
    trainer = Trainer(config, model, method, streams, device)  # type: ignore[arg-type]
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        trainer.train_step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    ms = 1000 * (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return {"ms": ms, "img_s": 2 * batch * 1000 / ms, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--preset", default=None, help="default: paper on CUDA, demo on CPU")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the segmenter")
    args = parser.parse_args()

    device = resolve_device("auto")
    preset = args.preset or ("paper" if device.type == "cuda" else "demo")
    base = ["method.name=pss", "model.pretrained=false"]
    settings = {"fp32": ["train.amp=off", "train.channels_last=off"]}
    if device.type == "cuda":
        settings["bf16+cl"] = ["train.amp=bf16", "train.channels_last=on"]
        if args.compile:
            settings["compile"] = ["train.amp=bf16", "train.channels_last=on", "train.compile=true"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name} · preset {preset} · torch {torch.__version__} · {args.steps} timed steps "
          f"after {args.warmup} warm-up", flush=True)
    results: dict[str, dict[str, float]] = {}
    for label, overrides in settings.items():
        config = build_config(preset, base + overrides)
        results[label] = measure(config, device, args.steps, args.warmup)
        r = results[label]
        print(f"{label:8s} {r['ms']:8.1f} ms/step  {r['img_s']:7.1f} img/s  peak {r['peak_gib']:.2f} GiB  "
              f"x{results['fp32']['ms'] / r['ms']:.2f} vs fp32", flush=True)


if __name__ == "__main__":
    main()
