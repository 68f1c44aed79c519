"""The app's one-action path for real: a fresh demo workspace, then the quickstart chain (No-DA, group-context No-DA,
ADVENT, OURS-S1, OURS-S2 of one user) through the job service, exactly what the app's button calls.

    python bench/quickstart_bench.py --workspace /tmp/qs-real [--user id1] [--preset demo]

Prints the demo generation time, the estimate shown before the start, the wall time to a filled Compare view (all
runs done), each run's duration with its measured seconds per step and fixed seconds (the numbers
``pss.api.quickstart.MEASURED`` holds), the ratio measured / estimated, and the load average along the way.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True, help="a folder that does not exist yet")
    p.add_argument("--user", default="id1")
    p.add_argument("--preset", default=None)
    p.add_argument("--poll", type=float, default=10.0)
    args = p.parse_args()
    if args.workspace.exists():
        print(f"{args.workspace} exists; give a fresh folder", file=sys.stderr)
        return 2
    started = time.time()
    from pss.api import create_demo_workspace
    from pss.api import quickstart as qs
    from pss.api.jobs import job_service

    ws, _ = create_demo_workspace(args.workspace)
    print(f"demo generated in {time.time() - started:.1f} s (load {os.getloadavg()})", flush=True)
    before = qs.status(ws, args.user, args.preset)
    estimate = qs.estimate(ws, before)
    print(f"estimate before the start: {qs.format_minutes(estimate.total_s)} ({', '.join(estimate.bases)})",
          flush=True)
    t0 = time.time()
    state = qs.start(ws, args.user, args.preset)
    print("\n".join(state.messages), flush=True)
    loads = []
    from pss.errors import PssError

    while True:
        try:
            state = qs.status(ws, args.user, args.preset)
        except PssError as exc:  # e.g. a config file being edited right now: poll again (the jobs go on)
            print(f"status failed ({exc}); polling again", flush=True)
            time.sleep(args.poll)
            continue
        loads.append(os.getloadavg()[0])
        line = " | ".join(f"{r.label.split(',')[0]} {r.status} {r.step}/{r.steps}" for r in state.runs)
        print(f"{(time.time() - t0) / 60:6.1f} min  load {loads[-1]:.2f}  {line}", flush=True)
        if not state.active:
            break
        time.sleep(args.poll)
    wall = time.time() - t0
    print(f"\nall runs ended after {wall / 60:.1f} min (load average 1-min mean {sum(loads) / len(loads):.2f}, "
          f"max {max(loads):.2f}); done {state.finished}/{len(state.runs)}; compare runs {state.compare_runs}")
    store = ws.store()
    for run in state.runs:
        if not run.run_id:
            continue
        record = store.index.get_run(run.run_id)
        train = [e for e in store.open_run(run.run_id).events("train") if e["step"] > 0]
        rate = ((train[-1]["seconds"] - train[0]["seconds"]) / (train[-1]["step"] - train[0]["step"])
                if len(train) >= 2 else float("nan"))
        fixed = (record.duration_s or 0) - rate * (train[-1]["step"] if train else 0)
        print(f"  {run.key:14s} {run.method:12s} {record.status:9s} {record.total_steps:5d} steps  "
              f"{(record.duration_s or 0):7.1f} s  {rate:.3f} s/step  fixed {fixed:.1f} s")
    if estimate.total_s:
        print(f"measured / estimated: {wall / estimate.total_s:.2f}")
    job_service(ws).stop()
    return 0 if state.done else 1


if __name__ == "__main__":
    sys.exit(main())
