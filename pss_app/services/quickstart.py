"""The first minutes on the demo: the one-action banner (train No-DA, ADVENT, OURS-S1, OURS-S2 for the user, with the
time estimate before it starts and the chain's progress after), and the empty states of Inspect and Compare.

Plain functions over ``pss.api.quickstart`` (the chain, its reuse rule and its measured estimate); the tab module
``pss_app.tabs.quickstart`` only wires them to components.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

from pss.api import Status, Workspace, list_users
from pss.api import quickstart as qs
from pss.errors import ConfigError

SHOWN = "No-DA, ADVENT, OURS-S1 and OURS-S2"
ACTION = "Train the demo comparison"  # the button's words; the empty states name it
# no emoji: fonts lack them
_ICONS = {Status.DONE: "✓", Status.RUNNING: "▶", Status.FAILED: "⚠", Status.CANCELLED: "⚠", qs.MISSING: "⚠"}


@dataclass
class QuickstartView:
    """What the banner shows. ``active``: poll (a run of the chain is waiting, queued or running)."""

    text: str
    progress: str  # HTML: a bar and one line per run ("" before the start)
    button: str
    can_start: bool
    active: bool
    can_compare: bool
    compare_runs: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # plain numbers for API clients


def _run_line(run: qs.RunState) -> str:
    steps = f" · step {run.step}/{run.steps}" if run.status in (Status.RUNNING, Status.FAILED, Status.CANCELLED) else ""
    role = "" if run.shown else " (a start run)"
    error = f" — {html.escape(run.error)}" if run.error and run.status != Status.DONE else ""
    what = "waiting for its start run" if run.status == qs.WAITING else run.status
    ident = f" <code>{html.escape(run.run_id)}</code>" if run.run_id else ""
    return (f"<li>{_ICONS.get(run.status, '')} <b>{html.escape(run.label)}</b>{role}: {html.escape(what)}{steps}"
            f"{ident}{error}</li>")


def _progress_html(state: qs.Quickstart) -> str:
    total = sum(r.steps for r in state.runs) or 1
    done = sum(r.steps * r.fraction for r in state.runs)
    lines = "".join(_run_line(r) for r in state.runs)
    return (f'<div class="pss-quickstart"><progress max="{total}" value="{done:.0f}" style="width:100%" '
            f'data-finished="{state.finished}" data-runs="{len(state.runs)}"></progress>'
            f'<ul style="margin:4px 0 0 0">{lines}</ul></div>')


def _state_json(state: qs.Quickstart, estimate: qs.Estimate) -> dict:
    return {"user": state.user, "preset": state.preset, "done": state.done, "active": state.active,
            "finished": state.finished, "runs": [{"key": r.key, "label": r.label, "run_id": r.run_id,
                                                  "status": r.status, "step": r.step, "steps": r.steps}
                                                 for r in state.runs],
            "estimate_s": estimate.total_s, "compare_runs": state.compare_runs}


def banner(ws: Workspace, user: str | None) -> QuickstartView:
    """The banner for ``user``: the offer with its estimate, the chain's progress, or where to look now."""
    if not user or user not in list_users(ws):
        return QuickstartView("Pick a user to train the demo comparison for.", "", ACTION, False, False, False)
    state = qs.status(ws, user)
    estimate = qs.estimate(ws, state)
    where = f"on `{estimate.device}`, one run after another"
    basis = f" (from {', '.join(estimate.bases)})" if estimate.bases else ""
    left = qs.format_minutes(estimate.total_s)
    data = _state_json(state, estimate)
    if state.done:
        text = (f"✓ **The demo comparison of {user} is ready**: {SHOWN} are trained (preset `{state.preset}`). "
                "Open **Compare** to see them side by side against the ground truth, or **Inspect** for one "
                "image's prediction, entropy and pseudo label.")
        return QuickstartView(text, _progress_html(state), f"{ACTION}: done", False, False, True,
                              state.compare_runs, data)
    if state.active:
        text = (f"▶ **Training the demo comparison of {user}** ({state.finished} of {len(state.runs)} runs done, "
                f"{where}): **{left} left**{basis}. Each run is a job of the Runs tab (live curves and log there); "
                "Inspect and Compare list the runs as they finish.")
        return QuickstartView(text, _progress_html(state), f"Training… {left} left", False, True,
                              bool(state.compare_runs), state.compare_runs, data)
    stopped = [r for r in state.runs if r.status in (Status.FAILED, Status.CANCELLED, qs.MISSING)]
    if stopped or state.finished:
        names = ", ".join(r.label for r in stopped) or "some runs"
        text = (f"⚠ **The demo comparison of {user} is incomplete** ({state.finished} of {len(state.runs)} runs "
                f"done; {names} stopped). Press the button to resume or relaunch what is missing — finished runs "
                f"are kept — estimated **{left}** {where}{basis}.")
        return QuickstartView(text, _progress_html(state), f"{ACTION} ({left})", True, False,
                              bool(state.compare_runs), state.compare_runs, data)
    text = (f"**New here?** One click trains the demo comparison of **{user}**: {SHOWN} (the paper's Table 1 "
            f"rows; {len(state.runs)} runs with OURS' group-context start, preset `{state.preset}`, {where}). "
            f"Estimated **{left}**{basis}. Progress shows here and in the Runs tab; then Compare shows the four "
            "methods side by side against the ground truth.")
    return QuickstartView(text, "", f"{ACTION} ({left})", True, False, False, [], data)


def start(ws: Workspace, user: str | None) -> QuickstartView:
    """The one action: launch (or reuse / resume) the chain of ``user``; returns the banner after it.

    Raises ConfigError when no user is picked (the user menu is empty) or the user is unknown."""
    if user is None:
        raise ConfigError(f"no user picked: pick a user in the user menu, then press {ACTION}")
    qs.start(ws, user)
    return banner(ws, user)


def compare_selection(ws: Workspace, user: str | None) -> list[str]:
    """The chain's finished compared runs of ``user`` (Compare preselects them), or [] when there are none."""
    if not user or user not in list_users(ws):
        return []
    return qs.status(ws, user).compare_runs


def empty_state(ws: Workspace, user: str | None, tab: str, finished_runs: int) -> str:
    """What Inspect / Compare say while the runs they need are missing (``""`` once there is something to show).

    ``finished_runs``: how many finished runs of the user the tab lists. Compare needs two to compare.
    """
    needed = 2 if tab == "compare" else 1
    if not user or finished_runs >= needed:
        return ""
    state = qs.status(ws, user)
    if state.active:
        running = next((r for r in state.runs if r.status == Status.RUNNING), None)
        now = f" ({running.label}: step {running.step}/{running.steps})" if running else ""
        return (f"▶ The demo comparison of **{user}** is training: {state.finished} of {len(state.runs)} runs "
                f"done{now}. Finished runs appear here when you open this tab again.")
    what = ("compare models on this user's photos: it needs at least two finished runs" if tab == "compare"
            else "look inside a model: it needs a finished run")
    return (f"**Nothing to show yet for {user}.** This tab lets you {what}, and {user} has "
            f"{finished_runs or 'no'} finished run{'s' * (finished_runs != 1)}. Press **{ACTION}** at the top of "
            f"the page ({SHOWN}, with its time estimate), or launch runs yourself in the **Runs** tab.")
