"""CPU cost of the transfer pipeline (issue 18) against the fully supervised run it is compared with, measured in the
same process, and the estimate of ``pss experiment transfer`` that follows.

Runs, on a demo workspace (``--workspace``; default: a fresh ``pss demo`` in a temporary folder), with the ``demo``
preset and ``--steps`` steps per training stage (log every step):

1. ``source_only`` (the table's fully supervised row; the baseline);
2. ``transfer`` at 50 % strong (L-Net + P-Net) and 3. at 0 % strong (no object map).

Prints each run's seconds per step of every training stage (from its ``train`` events, the first step left out:
it pays for start-up), its fixed part (everything but the training steps: the split, the object maps, L-Net's coarse
labels, the evaluations), the ratio of each stage's s/step to the baseline's, and the table's estimated time for
``--table-steps`` steps and ``--seeds`` seeds: per seed one fully supervised run plus two transfer runs of each
setting (L-Net only is the same pipeline without the discriminator: counted at the L-Net + P-Net cost, an upper
bound), one process (``--jobs 1``; ``--jobs 2`` runs two rows at a time on two idle cores).

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/transfer_bench.py --steps 8
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any


def stage_rates(run: Any) -> dict[str, float]:
    """Seconds per step of each training stage from a run's ``train`` events (``seconds`` since the stage's start),
    without the first step."""
    by_stage: dict[str, list[tuple[int, float]]] = {}
    for event in run.events("train"):
        by_stage.setdefault(event.get("stage") or "train", []).append((int(event["step"]), float(event["seconds"])))
    rates = {}
    for stage, points in by_stage.items():
        points.sort()
        if len(points) >= 2:
            (s0, t0), (s1, t1) = points[0], points[-1]
            rates[stage] = (t1 - t0) / (s1 - s0)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace with the demo data (default: a fresh demo)")
    parser.add_argument("--steps", type=int, default=8, help="steps of every training stage here")
    parser.add_argument("--table-steps", type=int, nargs="+", default=[1200, 400],
                        help="--steps of the table to estimate (default: the demo preset's 1200, and 400)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    from pss.api import runs as api
    from pss.data.demo import generate_demo
    from pss.runs.execute import execute_run, prepare_run
    from pss.workspace import Workspace

    tmp = None
    if args.workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="pss-transfer-bench-")
        args.workspace = Path(tmp.name)
        generate_demo(args.workspace / "data", seed=0)
    ws = Workspace(args.workspace)
    common = [f"train.steps={args.steps}", "train.log_every=1", "tag=transfer-bench"]
    settings = {
        "fully supervised (source_only)": ["method.name=source_only", "model.context.mode=none"],
        "transfer 50 % strong": ["method.name=transfer", "method.strong_fraction=0.5",
                                 f"method.objectness_steps={args.steps}", f"method.cam_steps={args.steps}"],
        "transfer 0 % strong": ["method.name=transfer", "method.strong_fraction=0", f"method.cam_steps={args.steps}"],
    }
    measured: dict[str, tuple[dict[str, float], float, float]] = {}
    for label, overrides in settings.items():
        config = api.make_config(ws, "demo", [*common, *overrides])
        run = prepare_run(config, ws, "cpu")
        outcome = execute_run(run, config, ws, "cpu", console=False)
        rates = stage_rates(run)
        steps = {e.get("stage") or "train": args.steps for e in run.events("train")}
        fixed = outcome.seconds - sum(rates[s] * steps[s] for s in rates)
        measured[label] = (rates, fixed, outcome.seconds)
        if label.startswith("fully"):
            full_id = run.run_id
        print(f"{label:32s} {outcome.seconds:7.1f} s in all; fixed {fixed:6.1f} s; "
              + ", ".join(f"{s} {r:.3f} s/step" for s, r in rates.items()))
    # the fully supervised run scores the source val every train.source_val_every steps (demo: 100); at --steps only
    # the final score happened: its cost (the last train event to the source_val event) times the missing ones
    full_run = ws.store().open_run(full_id)
    last_train = max(float(e["time"]) for e in full_run.events("train"))
    source_val = [float(e["time"]) - last_train for e in full_run.events("source_val")]
    every = api.make_config(ws, "demo").train.source_val_every
    score_s = source_val[-1] if source_val else 0.0
    print(f"one source-val scoring: {score_s:.1f} s (the fully supervised run scores every {every} steps)")
    base = statistics.fmean(measured["fully supervised (source_only)"][0].values())
    for label, (rates, _, _) in measured.items():
        print(f"{label:32s} s/step vs source_only: " + ", ".join(f"{s} {r / base:.2f}x" for s, r in rates.items()))
    for steps in args.table_steps:
        full = transfer = 0.0
        for label, count in (("fully supervised (source_only)", 1), ("transfer 50 % strong", 2),
                             ("transfer 0 % strong", 2)):
            rates, fixed, _ = measured[label]
            extra = score_s * max(0, steps // every - 1) if every and count == 1 else 0.0
            seconds = count * (fixed + extra + sum(r * steps for r in rates.values()))
            full, transfer = (full + seconds, transfer) if count == 1 else (full, transfer + seconds)
        per_seed = full + transfer
        # --jobs 2: the fully supervised run trains alone first (the runner's order), the four transfer rows two at
        # a time
        print(f"pss experiment transfer --steps {steps} --seeds {args.seeds}: about {per_seed * args.seeds / 3600:.1f} "
              f"h of one process ({per_seed / 60:.0f} min per seed); --jobs 2 on two idle cores about "
              f"{(full + transfer / 2) * args.seeds / 3600:.1f} h")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
