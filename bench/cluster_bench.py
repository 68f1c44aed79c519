"""Cluster paths: (a) a 4-cell tiny experiment with the local process backend vs on a local Ray, (b) one run's
step time with 1 vs N torchrun processes (DDP; gloo on CPU, nccl on CUDA).

(a) ``pss experiment table3 --methods none`` on 2 demo users = 4 cells (ADVENT and its control "No-DA
    continued" per user; 5 runs with the shared No-DA model). Baseline: the local backend with ``--jobs J``
    (J spawned processes), measured in the same run before and after ``--backend ray`` on a local Ray with J
    CPUs, whose start-up (``ray.init``) is timed on its own and included in the Ray total. Each backend trains its own runs
    (a tag of its own), so neither reuses the other's.
(b) ``pss train`` of the tiny preset (context none, source only), global batch ``--batch``: mean step time
    over the logged steps after the first few, with ``torchrun --nproc-per-node 1`` (the single-process path)
    as the baseline and ``--nproc-per-node N``. On CPU the N processes share the machine's cores (each with
    ``OMP_NUM_THREADS=1``), so this measures the overhead of DDP (gloo all-reduce, per-rank data loading) as
    much as any speed-up; on GPUs it is the multi-GPU scaling.

Usage: ``python bench/cluster_bench.py [--jobs 2] [--steps 20] [--ddp-steps 40] [--nproc 2] [--batch 8]
[--device cpu] [--skip-ray] [--skip-ddp]``. A tiny demo workspace is generated in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pss.data.demo import DemoConfig, generate_demo
from pss.experiments import ExperimentOptions, run_experiment
from pss.workspace import Workspace


def experiment_seconds(ws: Workspace, backend: str, jobs: int, steps: int, device: str,
                       tag: str) -> tuple[float, int]:
    opts = ExperimentOptions(table="table3", methods=["none"], steps=steps, source_steps=steps, preset="tiny",
                             device=device, jobs=jobs, console=False, backend=backend, tag=tag)
    started = time.perf_counter()
    result = run_experiment(ws, opts, lambda _: None)
    if result.failed:
        raise SystemExit(f"{backend}: cells failed: {result.failed}")
    return time.perf_counter() - started, len(result.cells)


def ddp_step_seconds(ws: Workspace, nproc: int, steps: int, batch: int, device: str, skip: int = 5) -> float:
    run_id = f"ddp-bench-{nproc}-{time.time_ns()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "pss", "train", "-w", str(ws.root), "-c", "tiny", "--method", "source_only", "--user", "id1",
               "--context", "none", "--device", device, "--steps", str(steps), "--run-id", run_id,
               "--set", "train.log_every=1", "--set", f"train.batch_size={batch}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=1800)
    events = [json.loads(line) for line in (ws.runs / run_id / "metrics.jsonl").read_text().splitlines()]
    times = [e["time"] for e in events if e["kind"] == "train"][skip:]
    return (times[-1] - times[0]) / (len(times) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps of every run of the experiment")
    parser.add_argument("--ddp-steps", type=int, default=40)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="global batch of the DDP runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-ddp", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pss-cluster-bench-"))
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=2, images_per_user=12))
    ws = Workspace(root)
    print(f"workspace {root}; {os.cpu_count()} CPUs; device {args.device}")

    if not args.skip_ray:
        # local, Ray, local again: the first experiment also pays for cold file caches; the baseline is the mean
        first, cells = experiment_seconds(ws, "local", args.jobs, args.steps, args.device, "bench-local-1")
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        ray_s, _ = experiment_seconds(ws, "ray", args.jobs, args.steps, args.device, "bench-ray")
        ray.shutdown()
        second, _ = experiment_seconds(ws, "local", args.jobs, args.steps, args.device, "bench-local-2")
        local_s = (first + second) / 2
        print(f"(a) {cells}-cell table3 experiment, {args.steps} steps per run, local backend --jobs {args.jobs}: "
              f"{first:.1f} s and {second:.1f} s, mean {local_s:.1f} s (baseline)")
        print(f"    Ray backend (local Ray, {args.jobs} CPUs): ray.init {init_s:.1f} s + experiment {ray_s:.1f} s "
              f"= {init_s + ray_s:.1f} s; ratio to local: {(init_s + ray_s) / local_s:.2f} "
              f"(experiment alone {ray_s / local_s:.2f})")

    if not args.skip_ddp:
        one = ddp_step_seconds(ws, 1, args.ddp_steps, args.batch, args.device)
        many = ddp_step_seconds(ws, args.nproc, args.ddp_steps, args.batch, args.device)
        print(f"(b) DDP step time, tiny preset, global batch {args.batch}, {args.device}: 1 process {one * 1000:.0f} ms "
              f"(baseline), {args.nproc} processes {many * 1000:.0f} ms; ratio {many / one:.2f} "
              f"(throughput x{one / many:.2f})")


if __name__ == "__main__":
    main()
