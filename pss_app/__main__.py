"""``pss-app`` / ``python -m pss_app``: serve the workbench on a workspace (generating the demo on first run).

    pss-app [--workspace DIR] [--host 127.0.0.1] [--port 7860] [--auth user:pass] [--k 8] [--ray-address HEAD:6379]

Without ``--workspace`` the app uses ``./pss-workspace``. A workspace folder that is missing or has no
``data/personal`` folder gets the embedded demo generated into ``DIR/data`` first (well under a minute on two
CPU cores, with a progress bar), then the app is served.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

from pss.api import DEFAULT_WORKSPACE, Workspace, create_demo_workspace, open_workspace
from pss.api.jobs import RAY_ADDRESS_ENV
from pss.errors import ConfigError, PssError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pss.api.data import DemoConfig


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")`` (the password may contain ``:``); ConfigError if malformed."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"--auth must look like 'user:password' (got {text!r} without a user, ':' or password)")
    return user, password


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pss-app", description="Serve the pss workbench (Gradio) on a workspace.")
    p.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                   help=f"workspace folder (default ./{DEFAULT_WORKSPACE}); the demo is generated into an empty one")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login")
    p.add_argument("--k", type=int, default=8, help="initial number of k-means groups per user (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated demo (default 0)")
    p.add_argument("--annotator", default="local",
                   help="your name in the Annotate tab's history of submitted masks (default 'local')")
    p.add_argument("--ray-address", default=None, metavar="HEAD:6379",
                   help="the Ray cluster that the Runs tab's \"Run on: Ray cluster\" sends jobs to (or 'local': a "
                        f"local Ray started on first use; default ${RAY_ADDRESS_ENV}, else local). The workspace "
                        "must be on a filesystem every node mounts at the same path")
    return p


def prepare_workspace(root: Path, seed: int = 0, config: DemoConfig | None = None) -> Workspace:
    """Open ``root``; if it holds no data yet, generate the demo (``config``, default size) into it with a
    terminal progress bar."""
    if (root / "data" / "personal").is_dir():
        return open_workspace(root)
    from tqdm import tqdm

    print(f"No data in {root.resolve()}: generating the embedded demo there (first run only)...", flush=True)
    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {postfix}",
              mininterval=0.5) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message[:60], refresh=False)
            bar.update(max(0.0, min(100.0, 100.0 * fraction)) - bar.n)  # tqdm redraws at most every 0.5 s

        ws, summary = create_demo_workspace(root, seed=seed, config=config, progress=progress)
        bar.update(100 - bar.n)
    if summary is not None:
        print(f"Demo written to {ws.data}", flush=True)
    return ws


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for a bad workspace or option)."""
    args = parser().parse_args(argv)
    try:
        auth = parse_auth(args.auth)
        if not 2 <= args.k <= 80:
            raise ConfigError(f"--k must be between 2 and 80 (got {args.k})")
        ws = prepare_workspace(args.workspace, seed=args.seed)
        if args.ray_address is not None:  # read by the workspace's job service (pss.api.jobs) when it starts
            if not args.ray_address.strip():
                raise ConfigError("--ray-address is empty; give HEAD:6379, auto, ray://HOST:10001 or local")
            os.environ[RAY_ADDRESS_ENV] = args.ray_address.strip()
    except PssError as exc:
        print(f"pss-app: error: {exc}", file=sys.stderr)
        return 2
    from pss_app.app import build_app, launch_kwargs  # gradio import only once the workspace is ready

    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(f"pss-app: warning: serving on {args.host} without --auth: anyone who can reach this machine "
              f"can see the photos", file=sys.stderr)
    # private: nothing of the workspace before login
    demo = build_app(ws, default_k=args.k, private=auth is not None, annotator=args.annotator)
    print(f"Serving workspace {ws.root}", flush=True)
    demo.launch(**launch_kwargs(ws, args.host, args.port, auth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
