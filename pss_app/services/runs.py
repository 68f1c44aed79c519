"""The Runs view: launch form values, a run's live progress (ETA, throughput, curves, log) and the history table.

Plain functions over the run store (through ``pss.api.jobs``); the tab module only wires them to components.
Curves come from the run's events (``metrics.jsonl``): ``train`` (step, lr, seconds, losses), ``eval``
(fiou, miou), ``checkpoint`` and ``end``. A resumed run logs the steps after its checkpoint again; the
later events win, so curves never zig-zag.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import yaml

from pss.api import Workspace
from pss.api.jobs import ACTIVE_JOB_STATUSES, JobService, job_service
from pss.errors import RunStoreError
from pss.runs import RunRecord

ALL = "all"
STATUS_CHOICES = [ALL, "queued", "running", "done", "failed", "cancelled"]
HISTORY_COLUMNS = ["user", "method", "settings", "status", "steps", "FIoU", "MIoU", "duration", "device", "created",
                   "run"]
NOT_LOSSES = {"step", "time", "kind", "lr", "seconds"}
LOG_LINES = 10
_BAR = re.compile(r"^(.*?):\s+\d+%\|")  # a tqdm bar line: "<desc>:  45%|████  | 18/40 [...]"
_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10), height=300,
               legend=dict(orientation="h", y=-0.25))


def service(ws: Workspace) -> JobService:
    """The workspace's job service (started on first use: worker thread + reaping)."""
    return job_service(ws)


# ---- progress ------------------------------------------------------------------------------------------

def latest_series(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Events of ``kind`` in step order, where a later event replaces every earlier one at the same or a later
    step (a resumed run repeats the steps after its checkpoint)."""
    series: list[dict[str, Any]] = []
    for event in events:
        if event.get("kind") != kind:
            continue
        while series and series[-1]["step"] >= event["step"]:
            series.pop()
        series.append(event)
    return series


@dataclass
class Progress:
    """Step counts and speed of a run from its train events. ``eta_s``/rates are None until measurable."""

    step: int
    total: int
    steps_per_s: float | None
    images_per_s: float | None
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


def measure_progress(train: list[dict[str, Any]], total: int, batch_size: int, running: bool,
                     window: int = 20) -> Progress:
    """Throughput over the last ``window`` train events (after a resume, only the current segment counts);
    ETA = remaining steps / throughput, for a running run."""
    step = train[-1]["step"] if train else 0
    segment = train[-window:]
    for i in range(len(segment) - 1, 0, -1):
        if segment[i].get("seconds", 0) < segment[i - 1].get("seconds", 0):  # the clock restarts at a resume
            segment = segment[i:]
            break
    rate = None
    if len(segment) >= 2 and segment[-1]["time"] > segment[0]["time"]:
        rate = (segment[-1]["step"] - segment[0]["step"]) / (segment[-1]["time"] - segment[0]["time"])
    elif len(train) == 1 and train[0].get("seconds"):
        rate = train[0]["step"] / train[0]["seconds"]  # first event: steps since the loop started
    eta = (max(0, total - step) / rate) if (rate and running) else None
    return Progress(step, total, rate, rate * batch_size if rate else None, eta)


def format_duration(seconds: float | None) -> str:
    """``"1 h 02 min"``, ``"3 min 07 s"``, ``"12 s"``; ``"–"`` for None."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _pct(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(100 * value, 2)


# ---- figures -------------------------------------------------------------------------------------------

def _empty(title: str, message: str, height: int = 300) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                          font=dict(size=14, color="#888"))
    figure.update_layout(title=title, xaxis=dict(visible=False), yaxis=dict(visible=False),
                         **{**_LAYOUT, "height": height})
    return figure


def loss_figure(train: list[dict[str, Any]]) -> go.Figure:
    """One line per named loss against the step."""
    if not train:
        return _empty("Losses", "waiting for the first step")
    names = [k for k in train[-1] if k not in NOT_LOSSES]
    figure = go.Figure()
    for name in names:
        points = [(e["step"], e[name]) for e in train if e.get(name) is not None]
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                    name=name, marker=dict(size=4)))
    figure.update_layout(title="Losses", xaxis_title="step", **_LAYOUT)
    return figure


def eval_figure(evals: list[dict[str, Any]], total_steps: int = 0,
                source_evals: list[dict[str, Any]] | None = None) -> go.Figure:
    """FIoU and MIoU (PSS convention), in %, at each evaluation of the user and (dashed) of the source's held-out
    split (``source_val`` events); the x axis spans the whole run."""
    source_evals = source_evals or []
    if not evals and not source_evals:
        return _empty("Evaluation (%)", "no evaluation yet (at the end, or every train.eval_every steps)")
    figure = go.Figure()
    for series, prefix, dash in ((evals, "", None), (source_evals, "source val ", "dash")):
        for key, label in (("fiou", "FIoU"), ("miou", "MIoU")):
            if series:
                figure.add_trace(go.Scatter(x=[e["step"] for e in series], y=[_pct(e.get(key)) for e in series],
                                            mode="lines+markers", name=prefix + label, line=dict(dash=dash)))
    last = max([total_steps, *(e["step"] for e in evals + source_evals)])
    figure.update_layout(title="Evaluation (%)", xaxis=dict(title="step", range=[0, last * 1.03]), **_LAYOUT)
    return figure


def class_iou_figure(report: dict[str, Any] | None) -> go.Figure:
    """Per-class IoU (PSS convention) of the final evaluation."""
    if not report:
        return _empty("Per-class IoU (%)", "available when the run is done", height=150)
    values = [_pct(v) for v in report["per_class_iou"]["pss"]]
    figure = go.Figure(go.Bar(x=report["class_names"], y=values, marker_color="#1f77b4"))
    figure.update_layout(title="Per-class IoU (%) of the final evaluation", **{**_LAYOUT, "height": 320})
    return figure


# ---- one run -------------------------------------------------------------------------------------------

@dataclass
class RunView:
    """Everything the live view shows for one run."""

    run_id: str
    status: str
    header: str
    progress: Progress
    losses: go.Figure
    evaluation: go.Figure
    classes: go.Figure
    metrics: str
    config_yaml: str
    log: str
    can_cancel: bool
    can_resume: bool
    can_delete: bool
    signature: str = ""
    warnings: list[str] = field(default_factory=list)


def compact_log(lines: list[str]) -> list[str]:
    """Log lines with each run of progress-bar updates (tqdm, written with carriage returns) reduced to its
    last state, and empty lines dropped."""
    out: list[str] = []
    for line in lines:
        line = line.rsplit("\r", 1)[-1].rstrip()
        if not line:
            continue
        bar = _BAR.match(line)
        if bar and out and (previous := _BAR.match(out[-1])) and previous.group(1) == bar.group(1):
            out[-1] = line
        else:
            out.append(line)
    return out


def selected_run(run_id: str | None) -> str:
    """The run id the Cancel/Resume/Delete buttons act on, or RunStoreError saying how to pick one."""
    run_id = (run_id or "").strip()
    if not run_id:
        raise RunStoreError("no run selected: pick a run in the history below (or type its id in the Run field)")
    return run_id


def view_signature(ws: Workspace, run_id: str) -> str:
    """Changes whenever the view would: the run's status/steps, its event and log files, its latest job."""
    svc = service(ws)
    record = svc.store.index.get_run(run_id)
    run_dir = svc.store.run_dir(run_id)
    sizes = []
    for name in ("metrics.jsonl", "log.txt", "run.json", "jobs.json"):
        try:
            stat = os.stat(run_dir / name)
            sizes.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            sizes.append("-")
    row = (record.status, record.steps) if record else None
    return json.dumps([run_id, row, sizes])


def settings_text(config: dict[str, Any]) -> str:
    """The settings a run is told apart by: context mode, K, steps, lr, batch, seed, init-from."""
    train, model = config.get("train", {}), config.get("model", {})
    parts = [f"ctx={model.get('context', {}).get('mode', '?')}", f"K={config.get('grouping', {}).get('k', '?')}",
             f"steps={train.get('steps', '?')}", f"lr={train.get('lr', '?')}", f"bs={train.get('batch_size', '?')}",
             f"seed={train.get('seed', '?')}"]
    if train.get("init_from"):
        parts.append(f"init={train['init_from']}")
    return " ".join(parts)


def queue_position(svc: JobService, job: Any) -> str:
    """``"waiting for cpu: 1 running, 2 ahead"`` for a queued job, else ``""``."""
    if job is None or job.status != "queued":
        return ""
    same = [j for j in svc.queue.list_jobs() if j.device == job.device and j.job_id != job.job_id]
    running = sum(j.status == "running" for j in same)
    ahead = sum(j.status == "queued" and (j.created, j.job_id) < (job.created, job.job_id) for j in same)
    return f"waiting for {job.device}: {running} running, {ahead} ahead"


def _header(record: RunRecord, meta: dict[str, Any], progress: Progress, job: Any, starting: bool,
            waiting: str = "") -> str:
    status = record.status
    if waiting:
        status += f" · {waiting}"
    elif status == "running" and starting:
        status = "running · starting (loading data, grouping)"
    elif status == "running" and progress.step >= progress.total > 0:
        status = "running · final evaluation"
    elif status in ("done", "failed", "cancelled") and job is not None and job.status in ACTIVE_JOB_STATUSES:
        status += " · process exiting"
    lines = [f"**{record.run_id}** · {record.user} · {record.method} · **{status}** on `{record.device}`",
             f"step **{progress.step} / {progress.total}** ({100 * progress.fraction:.0f} %)"]
    if progress.steps_per_s:
        lines[-1] += f" · {progress.steps_per_s:.2f} steps/s ({progress.images_per_s:.1f} img/s)"
    if progress.eta_s is not None and progress.step < progress.total:
        lines[-1] += f" · ETA {format_duration(progress.eta_s)}"
    timings = meta.get("timings") or {}
    if timings.get("duration_s") is not None:
        lines.append(f"duration {format_duration(timings['duration_s'])}")
    if meta.get("error") and record.status != "done":
        lines.append(f"⚠ {meta['error']}")
    elif job is not None and job.error and job.status in ("failed", "cancelled"):
        lines.append(f"⚠ {job.error}")
    return "  \n".join(lines)


def _metrics(record: RunRecord, report: dict[str, Any] | None) -> str:
    if record.fiou is None and not report:
        return ""
    text = f"**FIoU {_pct(record.fiou)} %** · **MIoU {_pct(record.miou)} %** (PSS convention: 21 classes, absent = 0)"
    if report:
        text += (f" · MIoU over present classes {_pct(report['miou'].get('present'))} % · "
                 f"{report['num_images']} labelled images")
    return text


def run_view(ws: Workspace, run_id: str) -> RunView:
    """The live view of ``run_id`` (RunStoreError if it does not exist)."""
    svc = service(ws)
    run = svc.store.open_run(run_id)
    meta, record, events = run.meta, run.record, run.events()
    train, evals = latest_series(events, "train"), latest_series(events, "eval")
    job = svc.queue.latest_job(run_id)
    running = record.status == "running"
    active = job is not None and job.status in ACTIVE_JOB_STATUSES
    ended = record.status in ("done", "failed", "cancelled")  # by the engine; its process may still be exiting
    batch = int(run.config.get("train", {}).get("batch_size", 1))
    progress = measure_progress(train, record.total_steps, batch, running)
    report = run.read_report()
    log = "\n".join(compact_log(run.tail_log(4 * LOG_LINES))[-LOG_LINES:])
    return RunView(
        run_id=run_id, status=record.status, header=_header(record, meta, progress, job, running and not train,
                                                      queue_position(svc, job)),
        progress=progress, losses=loss_figure(train),
        evaluation=eval_figure(evals, record.total_steps, latest_series(events, "source_val")),
        classes=class_iou_figure(report),
        metrics=_metrics(record, report), config_yaml=yaml.safe_dump(run.config, sort_keys=False),
        log=log, can_cancel=active and not ended, can_resume=svc.can_resume(run_id), can_delete=ended or not active,
        signature=view_signature(ws, run_id))


def view_state(view: RunView) -> dict[str, Any]:
    """The view's numbers and allowed actions as plain JSON (the API's view of the buttons)."""
    p = view.progress
    return {"run_id": view.run_id, "status": view.status, "step": p.step, "total": p.total,
            "steps_per_s": p.steps_per_s, "eta_s": p.eta_s, "can_cancel": view.can_cancel,
            "can_resume": view.can_resume, "can_delete": view.can_delete}


def progress_html(progress: Progress, status: str) -> str:
    """A thin progress bar (HTML ``<progress>``) with the step count."""
    return (f'<div class="pss-progress"><progress max="{max(progress.total, 1)}" value="{progress.step}" '
            f'data-status="{status}" style="width:100%"></progress></div>')


# ---- history -------------------------------------------------------------------------------------------

def history_table(ws: Workspace, search: str = "", status: str = ALL, method: str = ALL,
                  user: str = ALL) -> pd.DataFrame:
    """Every run matching the filters (``all`` = no filter), newest first, with the History columns."""
    def value(x: str | None) -> str | None:
        return None if x in (None, "", ALL) else x

    records = service(ws).store.list_runs(user=value(user), method=value(method), status=value(status),
                                          search=(search or "").strip() or None)
    rows = [[r.user, r.method, settings_text(r.config), r.status, f"{r.steps}/{r.total_steps}", _pct(r.fiou),
             _pct(r.miou), format_duration(r.duration_s), r.device, r.created.replace("T", " ")[:19], r.run_id]
            for r in records]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def history_signature(ws: Workspace) -> str:
    """Changes when any run is added, removed, or changes status, steps or scores (one aggregate query)."""
    with service(ws).store.index.connect() as conn:
        row = conn.execute("SELECT COUNT(*), MAX(updated), TOTAL(steps), TOTAL(fiou), "
                           "GROUP_CONCAT(run_id || status, ',') FROM runs").fetchone()
    return json.dumps(list(row))


def init_choices(ws: Workspace) -> list[tuple[str, str]]:
    """``(label, run id)`` of runs with a checkpoint, for the form's init-from dropdown (first: none)."""
    svc = service(ws)
    choices = [("none (ImageNet / random init)", "")]
    for record in svc.store.list_runs():
        if record.status == "done":
            choices.append((f"{record.method} · {record.user} · {record.run_id}", record.run_id))
    return choices


# ---- the launch form -----------------------------------------------------------------------------------

PRESETS = ["demo", "tiny", "paper"]


def method_choices() -> list[str]:
    """Every registered training method, in the registry's order."""
    from pss.api.runs import registered_methods

    return registered_methods()


def context_choices(method: str) -> list[tuple[str, str]]:
    """``(label, value)`` pairs: the method's default first, then each mode."""
    from pss.api.jobs import CONTEXT_MODES, METHOD_DEFAULT, method_default_context

    return [(f"method default ({method_default_context(method)})", METHOD_DEFAULT),
            *[(mode, mode) for mode in CONTEXT_MODES]]


def form_defaults(preset: str) -> dict[str, Any]:
    """Starting values of the form's number fields for ``preset`` (``k``, ``steps``, ``lr``, ``batch_size``,
    ``seed``) and its method."""
    from pss.api.jobs import preset_defaults

    return preset_defaults(preset)


@dataclass
class LaunchResult:
    """The new run's id and the message for the form (``⚠`` lines for warnings)."""

    run_id: str
    message: str


def launch_from_form(ws: Workspace, preset: str, user: str, method: str, context: str, k: float | None,
                     steps: float | None, lr: float | None, batch_size: float | None, seed: float | None,
                     device: str, init_from: str | None) -> LaunchResult:
    """Validate the form and queue the run (ConfigError/RunStoreError with the reason, before anything starts)."""
    from pss.api.jobs import LaunchRequest

    request = LaunchRequest(user=user, method=method, context=context or "default", k=k, steps=steps, lr=lr,
                            batch_size=batch_size, seed=seed, device=device or "auto", init_from=init_from or None,
                            preset=preset or "demo")
    launched = service(ws).launch(request)
    job = service(ws).queue.get(launched.job_id)
    message = f"run `{launched.run_id}` {job.status} on `{launched.device}`"
    return LaunchResult(launched.run_id, "  \n".join([message, *[f"⚠ {w}" for w in launched.warnings]]))
