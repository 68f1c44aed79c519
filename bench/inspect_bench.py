"""Server time to inspect one image (prediction + entropy + pseudo label + attention at a pixel), cold and cached.

What one "inspect" is: ``inspect_maps`` (prediction overlay, entropy heat map, pseudo label, as PNG) followed by
``inspect_pixel`` (probabilities, entropy and group attention at a pixel, with region soft-mask maps) — what the
Inspect tab's two server calls do. Measured on CPU with the demo model (preset ``demo`` = EfficientNet-Lite0 with
the group region context; a 2-step run is enough for timing: the cost does not depend on the weights):

* first    — the run's first request in a fresh process: model load + inference + drawing;
* cold     — a new image, model already loaded: inference (the image with its group chunk) + npz + drawing;
* disk     — after an app restart: memory caches empty, npz and PNGs on disk;
* memory   — a repeated request (in-memory inference, PNGs on disk).

Baseline, measured in the same run: the bare forward pass ``infer_image`` of the same image and group chunk.
Targets: cold < 1 s, cached < 100 ms.

``--large 6000x4000``: instead, one of the user's photos is replaced by an upscaled copy of that size (a phone
photo) and its cold inspect is timed with the maps at the bounded size (``pss.inference.MAX_MAP_SIDE``) against the
maps at the photo's full size (how it ran before; baseline in the same run). Only with the generated workspace.

Usage: ``python bench/inspect_bench.py [--workspace WS --run RUN_ID] [--images 5] [--threads N] [--large WxH]``.
Without ``--workspace`` a small demo workspace is generated in a temporary folder and a 2-step ``pss`` run trained.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pss.api.inspect import clear_caches, evaluation_group, run_context, user_records
from pss.api.inspect_maps import inspect_maps, inspect_pixel
from pss.workspace import Workspace


def prepare(root: Path) -> tuple[Workspace, str]:
    from pss.api.runs import make_config, train
    from pss.data.demo import DemoConfig, generate_demo

    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=24, num_users=1, images_per_user=40))
    ws = Workspace(root)
    config = make_config(ws, "demo", ["method.name=pss", "train.steps=2", "data.user=id1"])
    print("training a 2-step demo pss run (lite0, group context) ...", flush=True)
    return ws, train(ws, config, device="cpu", console=False).run_id


CPU: dict[str, list[float]] = {}  # CPU seconds (all threads of this process) per measurement kind


def inspect_once(ws: Workspace, run_id: str, name: str, kind: str = "") -> float:
    """Wall seconds for the Inspect tab's two calls on ``name`` (pixel at the image centre)."""
    start, cpu = time.perf_counter(), time.process_time()
    maps = inspect_maps(ws, run_id, name, 0.6, device="cpu")
    inspect_pixel(ws, run_id, name, maps.width // 2, maps.height // 2, device="cpu")
    CPU.setdefault(kind, []).append(time.process_time() - cpu)
    return time.perf_counter() - start


def bare_forward(ws: Workspace, run_id: str, name: str) -> float:
    """Seconds of the engine's ``infer_image`` alone (model loaded, same group chunk)."""
    from pss.api.inspect import _load_model
    from pss.inference import infer_image

    ctx = run_context(ws, run_id)
    model, config, device = _load_model(ws, ctx, "cpu")
    records = user_records(ws, ctx.user)
    record = next(r for r in records if r.name == name)
    group = evaluation_group(ctx, records, record, ws, device)
    start, cpu = time.perf_counter(), time.process_time()
    infer_image(model, record, group, device, config.data.eval_short_side)
    CPU.setdefault("bare", []).append(time.process_time() - cpu)
    return time.perf_counter() - start


def large_photo(ws: Workspace, run_id: str, size: str) -> None:
    """Cold inspect of a ``size`` (``WxH``) photo: bounded maps vs full-size maps, each from empty caches."""
    from PIL import Image

    import pss.inference as inference

    width, height = (int(v) for v in size.lower().split("x"))
    ctx = run_context(ws, run_id)
    record = user_records(ws, ctx.user)[0]
    with Image.open(record.image_path) as im:
        im.convert("RGB").resize((width, height), Image.BILINEAR).save(record.image_path, quality=90)
    bounded = inference.MAX_MAP_SIDE
    times: dict[str, list[float]] = {"full": [], "bounded": []}
    for _ in range(2):
        for kind, side in (("full", 10 ** 6), ("bounded", bounded)):
            inference.MAX_MAP_SIDE = side
            clear_caches(memory_only=False, ws=ws)
            clear_caches(keep_models=True)
            times[kind].append(inspect_once(ws, run_id, record.name, kind))
    inference.MAX_MAP_SIDE = bounded
    full, fast = min(times["full"]), min(times["bounded"])
    print(f"{width}x{height} photo, cold inspect (best of 2): maps at full size {full:.2f} s (baseline), "
          f"maps at long side {bounded} {fast:.2f} s: {full / fast:.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--run")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--large", help="WxH: time the cold inspect of a photo of this size (generated workspace)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.workspace:
            ws, run_id = Workspace(args.workspace), args.run
        else:
            ws, run_id = prepare(Path(tmp) / "ws")
        if args.large:
            if args.workspace:
                parser.error("--large replaces a photo: only with the generated workspace")
            large_photo(ws, run_id, args.large)
            return
        ctx = run_context(ws, run_id)
        names = [r.name for r in user_records(ws, ctx.user)][:args.images + 1]
        print(f"run {run_id} · backbone {ctx.config.model.backbone} · context {ctx.config.model.context.mode} · "
              f"eval short side {ctx.config.data.eval_short_side} · batch {ctx.config.eval.batch_size} · "
              f"torch threads {torch.get_num_threads()}")
        clear_caches(memory_only=False, ws=ws)
        first = inspect_once(ws, run_id, names[0], "first")
        cold, disk, memory, bare = [], [], [], []
        for name in names[1:]:
            bare.append(bare_forward(ws, run_id, name))
            cold.append(inspect_once(ws, run_id, name, "cold"))
            clear_caches(keep_models=True)  # as after a restart (the model is not needed for a cached image)
            disk.append(inspect_once(ws, run_id, name, "disk"))
            memory.append(min(inspect_once(ws, run_id, name, "memory") for _ in range(5)))
        rows = [("first request (model load)", [first], "first"), ("bare infer_image (baseline)", bare, "bare"),
                ("cold", cold, "cold"), ("cached on disk", disk, "disk"), ("cached in memory", memory, "memory")]
        base = statistics.median(bare)
        print(f"\n{'':30s} {'wall ms':>9s} {'x baseline':>11s} {'CPU ms':>9s}   (medians over {len(cold)} images; "
              f"CPU = all threads of this process)")
        for label, values, kind in rows:
            value = statistics.median(values)
            print(f"{label:30s} {value * 1000:9.1f} {value / base:11.2f} {statistics.median(CPU[kind]) * 1000:9.1f}")
        print(f"\ncold: {statistics.median(cold) * 1000:.0f} ms (target < 1000) · disk-cached: "
              f"{statistics.median(disk) * 1000:.1f} ms · memory-cached: {statistics.median(memory) * 1000:.1f} ms "
              f"(target < 100) · cold / memory-cached = {statistics.median(cold) / statistics.median(memory):.0f}x")


if __name__ == "__main__":
    main()
