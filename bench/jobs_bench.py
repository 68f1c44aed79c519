"""Runs tab latency: Launch → first progress event, and progress lag (event written → seen by the UI poll).

(a) Launch → first progress event: a client presses Launch (``/launch_run`` of a served app holding the Runs
    tab) and we wait for the run's first ``train`` event in ``metrics.jsonl``. Target < 5 s. Baseline measured
    in the same run: a fresh ``python -c "import pss.cli, pss.api.runs, pss.runs.execute"`` (the imports
    every job pays before it can do anything), so the ratio shows how much is the queue/app and how much is
    Python + torch start-up.
(b) Progress lag: while the run trains (``tiny`` preset, one event per step), a client calls the timer's
    endpoint (``/runs_poll``) every ``POLL_S`` like the page's ``gr.Timer``; for each event, lag = first
    poll answer showing its step − the event's write time. Target < 2 s.
(c) ``--devices cuda:0,cpu``: the same demo PSS run (``demo`` preset) launched from the app service on each
    device; wall time Launch → job done, and the ratio to the last device listed.

Usage: ``python bench/jobs_bench.py [--launches 3] [--steps 60] [--gap 10] [--threads N] [--devices cuda:0,cpu]``.
``PSS_WARM_JOBS=0`` measures the cold path (no pre-started job process, pss.runs.warm).
A tiny demo workspace is generated in a temporary folder. ``--threads`` sets OMP_NUM_THREADS for the jobs.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pss.api import create_demo_workspace
from pss.api.jobs import job_service, stop_job_service
from pss.api.launch_form import LaunchRequest
from pss.data.demo import DemoConfig

# (a) and (b) drive a served app; (c) needs only the job service, so it also runs where gradio is not installed
# (the GPU machines).
if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr
    from gradio_client import Client

LAUNCH_TARGET_S, LAG_TARGET_S = 5.0, 2.0
STATE = 8  # index of the run state JSON in /runs_poll's outputs


def serve(ws) -> tuple["gr.Blocks", str]:
    import gradio as gr

    from pss_app.app import launch_kwargs, shared_context
    from pss_app.tabs import runs as runs_tab

    with gr.Blocks() as demo:
        runs_tab.build(shared_context(ws, demo))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(ws, "127.0.0.1", port, None, quiet=True))
    return demo, url


def import_floor(repeats: int = 3) -> float:
    """Median seconds of a fresh interpreter importing what a job imports before its first step."""
    code = "import pss.cli, pss.api.runs, pss.runs.execute"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_launch(client: "Client", ws, steps: int, user: str) -> tuple[float, list[float], int]:
    """(Launch → first train event in s, the lags of every event in s, number of events)."""
    from pss_app.tabs import runs as runs_tab

    store = job_service(ws).store
    form = ("tiny", user, "source_only", "default", 4, steps, 0.01, 4, 1, "cpu", "")
    pressed = time.time()
    run_id, message = client.predict(*form, api_name="/launch_run")
    if not run_id:
        raise SystemExit(f"launch failed: {message}")
    run = store.open_run(run_id)
    seen: list[tuple[float, int]] = []  # (answer received, step shown)
    next_tick = time.monotonic()
    while True:  # the page's timer: one call every POLL_S, whatever the previous call took
        next_tick += runs_tab.POLL_S
        out = client.predict(run_id, "", "all", "all", "all", api_name="/runs_poll")
        if isinstance(out[STATE], dict) and "step" in out[STATE]:
            seen.append((time.time(), out[STATE]["step"]))
            if out[STATE]["status"] in ("done", "failed", "cancelled"):
                break
        time.sleep(max(0.0, next_tick - time.monotonic()))
    job = job_service(ws).queue.latest_job(run_id)
    while job.status == "running":
        time.sleep(0.1)
        job = job_service(ws).queue.latest_job(run_id)
    events = run.events("train")
    if not events:
        raise SystemExit(f"run {run_id} logged no train event; see {run.dir / 'log.txt'}")
    lags = []
    for event in events:
        shown = [t for t, step in seen if step >= event["step"]]
        if shown:
            lags.append(shown[0] - event["time"])
    return events[0]["time"] - pressed, lags, len(events)


def device_comparison(ws, devices: list[str], steps: int) -> None:
    service = job_service(ws)
    walls = {}
    for device in devices:
        request = LaunchRequest(user="id1", method="pss", preset="demo", steps=steps, device=device)
        start = time.time()
        launched = service.launch(request)
        while service.queue.get(launched.job_id).status in ("queued", "running"):
            time.sleep(0.2)
        status = service.queue.get(launched.job_id).status
        walls[device] = time.time() - start
        print(f"demo PSS run, {steps} steps on {device}: {status}, Launch → job done {walls[device]:.1f} s")
    base = devices[-1]
    for device in devices[:-1]:
        print(f"  {device} vs {base}: {walls[base] / walls[device]:.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the jobs")
    parser.add_argument("--gap", type=float, default=10.0,
                        help="seconds idle before each launch (the worker prepares its pre-started job process)")
    parser.add_argument("--devices", default=None, help="e.g. cuda:0,cpu: compare a demo PSS run on each")
    parser.add_argument("--device-steps", type=int, default=100)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.devices:
            ws, _ = create_demo_workspace(Path(tmp) / "ws", seed=0)
            try:
                device_comparison(ws, [d.strip() for d in args.devices.split(",")], args.device_steps)
            finally:
                stop_job_service(ws)
            return
        from gradio_client import Client

        from pss_app.tabs import runs as runs_tab

        ws, _ = create_demo_workspace(Path(tmp) / "ws", seed=0,
                                      config=DemoConfig(num_source=16, num_users=2, images_per_user=12))
        demo, url = serve(ws)
        client = Client(url, verbose=False)
        try:
            floor = import_floor()
            firsts, lags = [], []
            for index in range(args.launches):
                time.sleep(args.gap)  # a user's pause between launches; the worker readies its spare process
                first, run_lags, events = one_launch(client, ws, args.steps, ("id1", "id2")[index % 2])
                firsts.append(first)
                lags += run_lags
                print(f"launch {index + 1}: first progress event after {first:.2f} s; {events} events, "
                      f"lag median {statistics.median(run_lags):.2f} s, max {max(run_lags):.2f} s")
            first = statistics.median(firsts)
            lags.sort()
            p95 = lags[min(len(lags) - 1, int(0.95 * len(lags)))]
            print(f"\nLaunch → first progress event: median {first:.2f} s over {args.launches} launches "
                  f"(target {LAUNCH_TARGET_S:.0f} s: {first / LAUNCH_TARGET_S:.2f}x of target); "
                  f"baseline, a job's imports in a fresh process: {floor:.2f} s ({first / floor:.2f}x baseline)")
            print(f"progress lag (event written → seen by a {runs_tab.POLL_S:.0f} s poll): median "
                  f"{statistics.median(lags):.2f} s, p95 {p95:.2f} s, max {lags[-1]:.2f} s over {len(lags)} events "
                  f"(target {LAG_TARGET_S:.0f} s: p95 {p95 / LAG_TARGET_S:.2f}x of target; baseline = the poll "
                  f"period {runs_tab.POLL_S:.0f} s: median {statistics.median(lags) / runs_tab.POLL_S:.2f}x)")
        finally:
            client.close()
            demo.close()
            stop_job_service(ws)


if __name__ == "__main__":
    main()
