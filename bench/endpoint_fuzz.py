"""Endpoint fuzz over every parameter of every named endpoint, with every bad value (the CI test samples 3).

    python bench/endpoint_fuzz.py [--workspace DIR] [--limit N] [--show 20]

Builds a small demo workspace (2 users x 16 images, plus a broken user ``id3`` without ``JPEGImages/``) unless
``--workspace`` is given, serves the app in this process, and calls each endpoint of its API description
(``gradio_client.view_api``) with bad values one parameter at a time (``tests/reliability/fuzzing.py``). Prints
how many calls got a specific message, a warning status, were accepted, or got Gradio's generic "has raised an
exception" — split into the app's own code (the target is 0) and Gradio's preprocessing of the value — and the
generic ones from the app's code, if any, with their exception. Launches the fuzz gets accepted are queued but
never run (the job worker is stopped for the fuzz) and are cancelled at the end. Exit status 1 if any generic
error came from the app's code.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from fuzzing import fuzz  # noqa: E402  (the shared fuzz engine of the reliability tests)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="an existing workspace (default: a fresh small demo)")
    parser.add_argument("--limit", type=int, default=None, help="bad values per parameter (default: all)")
    parser.add_argument("--show", type=int, default=20, help="generic outcomes to list")
    args = parser.parse_args()
    os.environ["PSS_WARM_JOBS"] = "0"

    from gradio_client import Client

    from pss.api import create_demo_workspace, open_workspace
    from pss.api.jobs import job_service
    from pss.data.demo import DemoConfig
    from pss.runs.worker import Worker
    from pss_app.app import build_app, launch_kwargs

    Worker.run_once = lambda self: []  # accepted launches stay queued (cancelled below), nothing trains
    scratch = None
    if args.workspace:
        ws = open_workspace(args.workspace)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="pss-fuzz-"))
        ws, _ = create_demo_workspace(scratch / "ws", seed=0,
                                      config=DemoConfig(num_source=12, num_users=2, images_per_user=16))
        (ws.personal / "id3").mkdir()  # a broken user: every endpoint must still answer
    demo = build_app(ws, default_k=4)
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(ws, "127.0.0.1", _port(), None, quiet=True))
    client = Client(url, verbose=False, download_files=False)
    start = time.perf_counter()
    report = fuzz(client, limit=args.limit, overrides={"/launch_run": {"preset_name": "tiny"}})
    seconds = time.perf_counter() - start
    queue = job_service(ws).queue
    for job in queue.list_jobs(status="queued"):
        queue.cancel(job.job_id)
    client.close()
    demo.close()

    print(f"endpoint fuzz: {report.summary()} in {seconds:.0f} s")
    by_kind = collections.Counter(o.kind for o in report.outcomes)
    print("  " + ", ".join(f"{kind} {count}" for kind, count in sorted(by_kind.items())))
    gradio = collections.Counter(o.param.component for o in report.outcomes
                                 if o.kind == "generic" and o.origin == "gradio-input")
    if gradio:
        print("  generic from Gradio's preprocessing, by component: "
              + ", ".join(f"{name} {count}" for name, count in gradio.most_common()))
    app = report.generic_from_app()
    for outcome in app[: args.show]:
        print(f"  GENERIC (app) {outcome.param.endpoint} {outcome.param.name}={outcome.bad.label}: {outcome.message}")
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if app else 0


if __name__ == "__main__":
    sys.exit(main())
