"""Latency of the Annotate tab's server work, each against its target (a ratio < 1 meets it).

* brush save round trip — one stroke's JSON in, the draft version on disk: through ``gradio_client`` against the
  running app (``/annotate_stroke``, reply) and the server's own part (``save_stroke``: the stroke's footprint over
  the newest version -> palette PNG -> stack). Target < 300 ms.
* pre-label — ``apply_prelabel`` on an image the run has not seen yet (model loaded: inference + restriction to
  the tags), and again (cached inference). No target in the issue; shown against the click target (1 s).
* click refinement — GrabCut seeded by the run's probabilities plus 2 clicks, on the demo image and on the same
  image enlarged to VOC size (500x375). Target < 1 s on two cores.

Usage: ``python bench/annotate_bench.py [--workspace WS --run RUN_ID] [--threads 2] [--repeats 5]``. Without
``--workspace`` a small demo workspace is generated in a temporary folder and a 2-step ``demo`` run trained
(the cost does not depend on the weights).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pss.api import annotate as ann
from pss.api import annotate_tools as tools
from pss.api.users import read_user
from pss.workspace import Workspace

SAVE_TARGET_S, CLICK_TARGET_S = 0.3, 1.0


def prepare(root: Path) -> tuple[Workspace, str]:
    from pss.api.runs import make_config, train
    from pss.data.demo import DemoConfig, generate_demo

    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=24, num_users=1, images_per_user=40))
    ws = Workspace(root)
    config = make_config(ws, "demo", ["method.name=source_only", "train.steps=2", "data.user=id1"])
    print("training a 2-step demo run (lite0) ...", flush=True)
    return ws, train(ws, config, device="cpu", console=False).run_id


def report(label: str, seconds: list[float], target: float) -> None:
    median = statistics.median(seconds)
    print(f"{label:<46} median {median * 1000:8.1f} ms  (n={len(seconds)}, max {max(seconds) * 1000:.1f} ms)  "
          f"target {target * 1000:.0f} ms  ratio {median / target:.3f}", flush=True)


def stroke_json(height: int, width: int, row: int, class_id: int) -> dict:
    """One horizontal 7-pixel brush stroke across the middle three fifths of the image, as the editor sends it."""
    return {"points": [[width / 5 + k * (3 * width / 5) / 10, row + 0.5] for k in range(11)], "size": 7,
            "class_id": class_id}


def bench_save_server(ws: Workspace, user: str, names: list[str], repeats: int) -> list[float]:
    from pss_app.services import annotate as svc

    times = []
    for i in range(repeats):
        name = names[i % len(names)]
        t = ann.target(ws, user, name)
        key = svc.image_view(ws, user, name).key
        stroke = stroke_json(t.height, t.width, 10 + 8 * (i // len(names)) % (t.height - 20), 15)
        started = time.perf_counter()
        saved = svc.save_stroke(ws, user, name, key, stroke)
        times.append(time.perf_counter() - started)
        assert saved.pushed
    return times


def bench_save_client(ws: Workspace, user: str, names: list[str], repeats: int,
                      folder: Path) -> tuple[list[float], list[float]]:
    """``/annotate_stroke`` through gradio_client, and the baseline: the round trip of an endpoint that does
    nothing (``/annotate_diff`` without a version)."""
    from gradio_client import Client

    from pss_app.services import annotate as svc

    from pss_app.app import build_app, launch_kwargs

    demo = build_app(ws)
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(ws, "127.0.0.1", None, None, quiet=True))
    client = Client(url, verbose=False, download_files=str(folder / "downloads"))
    times, baseline = [], []
    try:
        for i in range(repeats):
            name = names[i % len(names)]
            started = time.perf_counter()
            client.predict(user, name, None, api_name="/annotate_diff")
            baseline.append(time.perf_counter() - started)
            t = ann.target(ws, user, name)
            key = svc.image_view(ws, user, name).key
            stroke = stroke_json(t.height, t.width, t.height // 2 + 8 * (i // len(names)) % (t.height // 2 - 4), 12)
            before = ann.read_draft(ws, user, name)
            started = time.perf_counter()
            message = client.predict(user, name, key, stroke, api_name="/annotate_stroke")
            times.append(time.perf_counter() - started)
            after = ann.read_draft(ws, user, name)
            assert after is not None and (before is None or len(after.versions) > len(before.versions)), message
    finally:
        client.close()
        demo.close()
    return times, baseline


def tools_name() -> str:
    from pss_app.services.annotate import TOOLS

    return TOOLS[0]


def bench_prelabel(ws: Workspace, user: str, run_id: str, names: list[str]) -> tuple[list[float], list[float]]:
    from pss.api.inspect import image_inference
    from pss_app.services import annotate as svc

    image_inference(ws, run_id, names[-1])  # the model loads once (as after the first request in the app)
    cold, warm = [], []
    for name in names[:-1]:
        started = time.perf_counter()
        svc.apply_prelabel(ws, user, name, run_id, 0.0, 0.5, svc.TOOLS[0])  # 0: an untrained model is unsure
        cold.append(time.perf_counter() - started)
        ann.discard_draft(ws, user, name)  # so the second pre-label changes the mask again
        started = time.perf_counter()
        svc.apply_prelabel(ws, user, name, run_id, 0.0, 0.5, svc.TOOLS[0])
        warm.append(time.perf_counter() - started)
    return cold, warm


def bench_click(ws: Workspace, user: str, run_id: str, names: list[str]) -> tuple[list[float], list[float]]:
    import cv2

    from pss.api.data import load_image

    demo_times, voc_times = [], []
    for name in names:
        t = ann.target(ws, user, name)
        prob = tools._probabilities(ws, run_id, t)
        class_id = int(prob[1:].mean((1, 2)).argmax()) + 1
        image = load_image(t.record.image_path)
        clicks = [tools.Click(t.width // 2, t.height // 2, True), tools.Click(3, 3, False)]
        mask = np.full((t.height, t.width), 255, np.uint8)
        started = time.perf_counter()
        tools.grabcut_refine(image, mask, class_id, clicks, prob[class_id])
        demo_times.append(time.perf_counter() - started)
        big = cv2.resize(image, (500, 375), interpolation=cv2.INTER_LINEAR)
        big_prob = cv2.resize(prob[class_id], (500, 375), interpolation=cv2.INTER_LINEAR)
        big_clicks = [tools.Click(250, 187, True), tools.Click(5, 5, False)]
        started = time.perf_counter()
        tools.grabcut_refine(big, np.full((375, 500), 255, np.uint8), class_id, big_clicks, big_prob)
        voc_times.append(time.perf_counter() - started)
    return demo_times, voc_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--run")
    parser.add_argument("--user", default="id1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.workspace:
            ws, run_id = Workspace(args.workspace), args.run
        else:
            ws, run_id = prepare(Path(tmp) / "ws")
        unlabelled = [r.name for r in read_user(ws, args.user).records if r.mask_path is None]
        names = unlabelled[:args.repeats + 1]
        first = ann.target(ws, args.user, names[0])
        print(f"workspace {ws.root}, run {run_id}, {args.threads} threads, images {first.width}x{first.height}",
              flush=True)
        try:
            report("brush save, server (save_stroke)", bench_save_server(ws, args.user, names, args.repeats),
                   SAVE_TARGET_S)
            trip, baseline = bench_save_client(ws, args.user, names, args.repeats, Path(tmp))
            report("brush save round trip (gradio_client)", trip, SAVE_TARGET_S)
            report("  baseline: round trip of a no-op endpoint", baseline, SAVE_TARGET_S)
            print(f"  save round trip / no-op round trip: {statistics.median(trip) / statistics.median(baseline):.2f}",
                  flush=True)
            cold, warm = bench_prelabel(ws, args.user, run_id, names)
            report("pre-label, new image (inference + restrict)", cold, CLICK_TARGET_S)
            report("pre-label, cached inference", warm, CLICK_TARGET_S)
            demo_times, voc_times = bench_click(ws, args.user, run_id, names)
            report("click refinement (GrabCut), demo image", demo_times, CLICK_TARGET_S)
            report("click refinement (GrabCut), 500x375", voc_times, CLICK_TARGET_S)
        finally:
            for name in names:  # leave a given workspace as it was: drafts only were written
                ann.discard_draft(ws, args.user, name)


if __name__ == "__main__":
    main()
