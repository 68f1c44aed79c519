"""One run on several processes: ``torchrun --nproc-per-node 2 -m pss train`` with gloo on CPU (tiny preset).

* The 2-process run finishes, and with context ``none`` its loss curve follows a single-process run with the same
  global batch (4 images: 2 per process). Not bit for bit: each process's BatchNorm normalises with the
  statistics of its own 2 images instead of all 4 (torch's SyncBatchNorm has no CPU kernel), and each process
  averages the pixel CE over its own valid pixels before DDP averages the two. On this random-init tiny net those
  move a step's loss by about 1-3 % (measured: at most 2.7 % over 8 steps), so the test allows 6 % per step
  and 3 % on average; the batches themselves are checked exactly (``test_shards_are_the_single_process_batches``).
* Resume under DDP equals the uninterrupted DDP run (the same losses after the checkpoint, to float precision).
* A killed rank fails the run: torchrun ends the other rank, which marks the run failed, within a timeout.
* SIGTERM (the app's Cancel) stops every rank at the same step, with a checkpoint; the run is cancelled.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pss.data.demo import DemoConfig, generate_demo
from pss.data.loaders import group_batches, shuffled_batches
from pss.engine.distributed import DistContext, shard_plan
from pss.workspace import Workspace
from support import wait_for

TIMEOUT_S = 240  # a broken run must not hang CI: every process is waited for with a deadline


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("ddp-ws")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=1, images_per_user=12))
    return Workspace(root)


def _env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo + (os.pathsep + path if path else ""),
            "PSS_DIST_TIMEOUT_S": "60"}


def _train_args(ws: Workspace, run_id: str, steps: int, *extra: str, method: str = "source_only") -> list[str]:
    return ["train", "-w", str(ws.root), "-c", "tiny", "--method", method, "--user", "id1", "--device",
            "cpu", "--context", "none", "--steps", str(steps), "--run-id", run_id, "--set", "train.log_every=1",
            *extra]


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pss",
            *args]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _losses(ws: Workspace, run_id: str, name: str = "source_main") -> list[tuple[int, float]]:
    return [(e["step"], e[name]) for e in ws.store().open_run(run_id).events("train")]


def test_shards_are_the_single_process_batches() -> None:
    """Every rank takes its contiguous slice of the same plan, so together the ranks see exactly the
    single-process batches (a one-group batch stays one group on every rank)."""
    for plan in (shuffled_batches(13, 4, seed=3), group_batches([0, 0, 0, 1, 1, 2, 2, 2, 2, 2], 4, seed=5)):
        ranks = [shard_plan(plan, DistContext(rank, 2)) for rank in (0, 1)]
        for epoch in range(3):
            together = [a + b for a, b in zip(ranks[0](epoch), ranks[1](epoch), strict=True)]
            assert together == plan(epoch)


def test_two_process_run_follows_the_single_process_loss_curve(workspace: Workspace) -> None:
    # ADVENT: target batches too, and two discriminators with their own optimizer (not DDP-wrapped: their
    # gradients are all-reduced by the trainer), whose state the exact resume below also checks
    steps = 8
    _run([sys.executable, "-m", "pss", *_train_args(workspace, "single", steps, method="advent")])
    _run(_torchrun(_train_args(workspace, "ddp", steps, "--set", "train.checkpoint_every=4", method="advent")))
    run = workspace.store().open_run("ddp")
    assert run.meta["status"] == "done" and run.read_report() is not None
    assert "rank 1 of 2" in "\n".join(run.tail_log(200))
    single, ddp = _losses(workspace, "single"), _losses(workspace, "ddp")
    assert [s for s, _ in ddp] == [s for s, _ in single] == list(range(1, steps + 1))  # one event per step
    gaps = [abs(d - s) / s for (_, s), (_, d) in zip(single, ddp, strict=True)]
    assert max(gaps) < 0.06 and sum(gaps) / len(gaps) < 0.03, gaps
    # only rank 0 wrote: one checkpoint per save, one event per step (no duplicates from rank 1)
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["step_00000004.pt", "step_00000008.pt"]

    # resume under DDP == the uninterrupted DDP run: drop the last checkpoint, resume from step 4
    (run.checkpoints_dir / "step_00000008.pt").unlink()
    run.set_status("cancelled")
    _run(_torchrun(["train", "-w", str(workspace.root), "--device", "cpu", "--resume", "ddp"]))
    resumed = _losses(workspace, "ddp")[steps:]
    assert [s for s, _ in resumed] == list(range(5, steps + 1))
    assert [v for _, v in resumed] == pytest.approx([v for _, v in ddp[4:]], rel=1e-5)
    critic = [v for _, v in _losses(workspace, "ddp", "d_main")]  # the discriminator's loss resumes too
    assert critic[steps:] == pytest.approx(critic[4:steps], rel=1e-5)
    assert workspace.store().open_run("ddp").meta["status"] == "done"


def test_a_killed_rank_fails_the_run(workspace: Workspace) -> None:
    proc = subprocess.Popen(_torchrun(_train_args(workspace, "killed", 100_000)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run_dir = workspace.store().run_dir("killed")
        wait_for(lambda: len(_losses(workspace, "killed")) >= 2 if (run_dir / "metrics.jsonl").exists() else False,
                 deadline_s=TIMEOUT_S)
        log = "\n".join(workspace.store().open_run("killed").tail_log(500))
        pid = int(re.search(r"rank 1 of 2 \(pid (\d+)\)", log).group(1))  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        returncode = proc.wait(timeout=TIMEOUT_S)
        assert returncode != 0
        wait_for(lambda: workspace.store().open_run("killed").meta["status"] == "failed", deadline_s=30)
        # the surviving rank gave up at once on the dead peer, not after the process-group timeout
        assert time.monotonic() - started < 60
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sigterm_cancels_a_ddp_run_with_a_checkpoint(workspace: Workspace) -> None:
    """What the app's Cancel does to a job: SIGTERM to torchrun, which passes it to every rank; the ranks agree on
    the step to stop at, rank 0 writes a checkpoint there and marks the run cancelled (resumable)."""
    proc = subprocess.Popen(_torchrun(_train_args(workspace, "sigterm", 100_000)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run_dir = workspace.store().run_dir("sigterm")
        wait_for(lambda: len(_losses(workspace, "sigterm")) >= 2 if (run_dir / "metrics.jsonl").exists() else False,
                 deadline_s=TIMEOUT_S)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=TIMEOUT_S)
        run = workspace.store().open_run("sigterm")
        wait_for(lambda: run.meta["status"] == "cancelled", deadline_s=30)
        checkpoint = run.latest_checkpoint()
        assert checkpoint is not None and int(checkpoint.stem.split("_")[1]) == _losses(workspace, "sigterm")[-1][0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
