"""The app's job service: one tiny run launched on this machine (a local job process) vs on a local Ray (a Ray task).

Each run is launched through ``pss.api.jobs.JobService.launch`` exactly as the Runs tab does, and timed from the
launch to its job ending ``done`` (and to its first train event: what the Runs tab shows as progress). In one run of
this script, in this order:

1. local, cold: a fresh ``pss train`` process (``PSS_WARM_JOBS=0``) — the baseline;
2. local, warm: the app's default, a pre-started job process (``pss.runs.warm``) that already imported torch;
3. Ray: ``ray.init`` of a local Ray (timed on its own), then the first Ray job (Ray starts a worker process, which
   imports torch and the engine) and a second one (the same worker, imports done).

Usage: ``python bench/ray_job_bench.py [--steps 20] [--cpus 2] [--device cpu]``. A tiny demo workspace is generated in
a temporary folder; every job uses one torch thread (``OMP_NUM_THREADS=1``, one CPU asked of Ray).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pss.api.jobs import JobService
from pss.api.launch_form import LaunchRequest
from pss.data.demo import DemoConfig, generate_demo
from pss.runs.ray_jobs import RaySettings
from pss.workspace import Workspace


@dataclass
class Timing:
    total_s: float
    first_step_s: float


def timed_run(svc: JobService, run_on: str, steps: int, device: str) -> Timing:
    started = time.perf_counter()
    launched = svc.launch(LaunchRequest(user="id1", method="source_only", preset="tiny", steps=steps, device=device,
                                        run_on=run_on))
    run = svc.store.open_run(launched.run_id)
    first: float | None = None
    while True:
        job = svc.queue.get(launched.job_id)
        if first is None and run.events("train"):
            first = time.perf_counter() - started
        if job.status in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    total = time.perf_counter() - started
    if job.status != "done":
        raise SystemExit(f"{run_on} job {job.job_id} ended {job.status}: {job.error}")
    return Timing(total, first if first is not None else total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # the local job processes inherit it; a Ray task sets its threads itself
    root = Path(tempfile.mkdtemp(prefix="pss-ray-job-bench-"))
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=2, images_per_user=12))
    ws = Workspace(root)
    print(f"workspace {root}; {os.cpu_count()} CPUs; device {args.device}; tiny preset, source_only, "
          f"{args.steps} steps")

    cold_svc = JobService(ws, poll_s=0.1, warm=False).start()
    cold = timed_run(cold_svc, "local", args.steps, args.device)
    cold_svc.stop()
    warm_svc = JobService(ws, poll_s=0.1, warm=True).start()
    time.sleep(8.0)  # the spare job process imports torch and the engine while the app is idle
    warm = timed_run(warm_svc, "local", args.steps, args.device)
    warm_svc.stop()

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - started
    ray_svc = JobService(ws, poll_s=0.1, warm=False, ray=RaySettings()).start()
    first_ray = timed_run(ray_svc, "ray", args.steps, args.device)
    second_ray = timed_run(ray_svc, "ray", args.steps, args.device)
    ray_svc.stop()
    ray.shutdown()

    def line(name: str, t: Timing) -> str:
        return (f"  {name:<34} launch -> done {t.total_s:6.1f} s ({t.total_s / cold.total_s:.2f}x)   "
                f"launch -> first step {t.first_step_s:6.1f} s ({t.first_step_s / cold.first_step_s:.2f}x)")

    print(line("local job, fresh process (baseline)", cold))
    print(line("local job, pre-started process", warm))
    print(f"  ray.init of a local Ray ({args.cpus} CPUs): {init_s:.1f} s (once per app, on its first Ray job)")
    print(line("Ray job, first (worker starts)", first_ray))
    print(line("Ray job, second (worker reused)", second_ray))
    print(f"  ratio Ray (first, with ray.init) / local: {(init_s + first_ray.total_s) / cold.total_s:.2f}; "
          f"Ray (second) / local: {second_ray.total_s / cold.total_s:.2f}")


if __name__ == "__main__":
    main()
