"""What the app costs while nobody uses it: CPU ticks of an idle ``pss-app`` (no browser, no job) over a window.

Starts ``pss-app`` on a demo workspace, waits until it serves and its job worker (and the pre-started job process,
``pss.runs.warm``) are up, lets it settle, then counts the CPU ticks (``/proc/PID/stat`` utime + stime, 100 per
second on Linux) of the app and of all its descendants over ``--window`` seconds. The baseline, measured in the
same run: a Python process that imports the same libraries (torch, gradio, the app) and sleeps — what an idle app
cannot go below. Prints ticks, the share of one core, and the app's ratio to the baseline.

Usage::

    python bench/idle_cost.py [--window 10] [--settle 20] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _ticks(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    return out


def _threads(pid: int) -> dict[str, int]:
    """CPU ticks so far per thread name of ``pid``."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def measure(pid: int, window: float) -> tuple[int, list[str]]:
    """(CPU ticks over ``window`` s of ``pid`` and its descendants, a line per process and busy thread)."""
    pids = _descendants(pid)
    before, threads_before = _ticks(pids), {p: _threads(p) for p in pids}
    time.sleep(window)
    after = _ticks(pids)
    lines = []
    for p in after:
        used = after[p] - before.get(p, after[p])
        try:
            command = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:70]
        except OSError:
            command = "?"
        threads = {name: ticks - threads_before[p].get(name, ticks) for name, ticks in _threads(p).items()}
        busy = ", ".join(f"{name} {t}" for name, t in sorted(threads.items(), key=lambda kv: -kv[1]) if t > 0)
        lines.append(f"  pid {p} {command}: {used} ticks" + (f" (threads: {busy})" if busy else ""))
    return sum(after[p] - before.get(p, after[p]) for p in after), lines


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds counted")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after start-up before counting")
    parser.add_argument("--keep", type=Path, default=None, help="workspace to use (default: a fresh demo in /tmp)")
    args = parser.parse_args()

    from pss.api import create_demo_workspace

    tmp = None
    if args.keep is None:
        tmp = Path(tempfile.mkdtemp(prefix="pss-idle-"))
        create_demo_workspace(tmp / "ws")
        workspace = tmp / "ws"
    else:
        workspace = args.keep
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    port = _free_port()
    app = subprocess.Popen([sys.executable, "-m", "pss_app", "--workspace", str(workspace), "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    baseline = subprocess.Popen([sys.executable, "-c", "import torch, gradio, pss_app.app, time; time.sleep(3600)"],
                                env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", 120)
        time.sleep(args.settle)
        app_ticks, app_lines = measure(app.pid, args.window)
        base_ticks, _ = measure(baseline.pid, args.window)
    finally:
        for proc in (app, baseline):
            os.killpg(proc.pid, 9)
            proc.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    core = TICKS * args.window
    print(f"idle app ({len(app_lines)} processes): {app_ticks} ticks in {args.window:.0f} s = "
          f"{100 * app_ticks / core:.1f} % of a core")
    print("\n".join(app_lines))
    print(f"baseline (same imports, sleeping): {base_ticks} ticks = {100 * base_ticks / core:.1f} % of a core")
    print(f"app - baseline: {app_ticks - base_ticks} ticks; ratio app / baseline: "
          f"{app_ticks / max(base_ticks, 1):.1f}x (baseline clamped to >= 1 tick)")


if __name__ == "__main__":
    main()
