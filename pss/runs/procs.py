"""Process identity and signalling for the job queue (Linux ``/proc``; plain ``kill(pid, 0)`` elsewhere).

A pid alone does not identify a process: after a job dies its pid can be reused by an unrelated
process. The queue therefore stores the process *start time* (field 22 of ``/proc/<pid>/stat``,
clock ticks since boot) and treats a pid whose start time differs as gone. A zombie (exited, not
yet waited for by its parent) is gone too.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

_PROC = Path("/proc")
_HAS_PROC = (_PROC / "self" / "stat").exists()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (index 0 = state), or None if there is no such pid."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) is in parentheses and may itself contain ') ' — split after the last ')'
    return text[text.rindex(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (None without /proc or if the pid is gone)."""
    if not _HAS_PROC:
        return None
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None  # field 22 overall = index 19 after the state


def process_alive(pid: int, start_time: int | None) -> bool:
    """True if ``pid`` runs, is not a zombie, and (when ``start_time`` is given) is the same process."""
    if _HAS_PROC:
        fields = _stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X", "x"):
            return False
        return start_time is None or int(fields[19]) == start_time
    try:  # pragma: no cover - systems without /proc
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group led by ``pid`` (jobs start with a new session, so the
    engine and any data-loader workers it forked all get it); to ``pid`` alone if it leads no group.
    Returns False if the process is already gone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def describe_exit(returncode: int) -> str:
    """``"exited with code 1"`` / ``"killed by SIGKILL"`` for a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
