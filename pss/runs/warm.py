"""A pre-started job process: Python, torch and the training code already imported, waiting for its job.

Starting a training job costs about 5 s of imports (torch, then torchvision, which imports ``torch._dynamo``)
before it can do anything. The job worker keeps one such process ready while it is idle
(:class:`pss.runs.worker.Worker` with ``warm=True``) and hands it the next job's command instead of starting a
fresh interpreter, so Launch shows progress that much sooner.

Protocol: the worker starts ``python -m pss.runs.warm`` in a new session (so cancel/kill reach it as a process
group, as any job) with a pipe on stdin, and later writes one JSON line ``{"argv", "env", "cwd", "log"}``
where ``argv`` is a job command of the form ``[python, -m, module, args...]``. The process then points its
stdout/stderr at the run's log, takes the job's environment and working directory, and runs the module as
``__main__``, exactly what ``python -m module args...`` would do; its exit status is the job's. When stdin
closes without a line (the worker or the app went away) it exits quietly.
"""
from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
from typing import Any

# What every training job imports before its first step (measured with ``python -X importtime``).
PRELOAD = ("torch", "torchvision", "pss.cli", "pss.runs.execute", "pss.api.runs")


def is_module_command(argv: list[str]) -> bool:
    """True for ``[this python, -m, module, ...]``: the commands a warm process can run."""
    return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m"


def order_line(argv: list[str], env: dict[str, str], cwd: str, log_path: str) -> bytes:
    """The one line the worker writes to a warm process's stdin."""
    return (json.dumps({"argv": argv, "env": env, "cwd": cwd, "log": log_path}) + "\n").encode()


def _become(order: dict[str, Any]) -> None:
    """Take the job's output, environment and directory (before anything of the job runs)."""
    log_fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    os.environ.clear()
    os.environ.update(order["env"])
    os.chdir(order["cwd"])
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # read by torch at import time, i.e. before the order came
        import torch

        torch.set_num_threads(int(threads))


def main() -> int:
    for name in PRELOAD:
        importlib.import_module(name)
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    argv = order["argv"]
    _become(order)
    sys.argv = [argv[2], *argv[3:]]
    sys.modules.pop(argv[2], None)  # preloaded as a library; `python -m` runs it fresh as __main__ (runpy warns)
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
