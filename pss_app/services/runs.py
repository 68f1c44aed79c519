"""The Runs view: a run's live view (progress, ETA, throughput, curves, log, allowed actions) and the history table.

Plain functions over the run store (through ``pss.api.jobs``); the tab module only wires them to components.
Progress is measured from the run's events by ``pss.api.progress``; the figures are drawn by ``run_figures`` and
the launch form's values come from ``run_form``, both named here as well because the Runs tab reaches every
service through this module.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import yaml

from pss.api import (ACTIVE, FINISHED, JobService, Progress, Status, Workspace, job_service, latest_series,
                     measure_progress)
from pss.api.weak_views import split_info
from pss.errors import RunStoreError
from pss_app.services.run_figures import class_iou_figure, eval_figure, loss_figure, pct
from pss_app.services.run_form import (PRESETS, LaunchResult, RunOnChoices, context_choices, form_defaults,
                                       init_choices, launch_from_form, method_choices, run_on_choices)

if TYPE_CHECKING:  # pragma: no cover
    from pss.api import RunRecord

ALL = "all"
STATUS_CHOICES = [ALL, *(status.value for status in Status)]
HISTORY_COLUMNS = ["user", "method", "settings", "status", "steps", "FIoU", "MIoU", "duration", "device", "created",
                   "run"]
LOG_LINES = 10
_BAR = re.compile(r"^(.*?):\s+\d+%\|")  # a tqdm bar line: "<desc>:  45%|████  | 18/40 [...]"


def service(ws: Workspace) -> JobService:
    """The workspace's job service (started on first use: worker thread + reaping)."""
    return job_service(ws)


# ---- formatting ----------------------------------------------------------------------------------------

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
    if job is None or job.status != Status.QUEUED:
        return ""
    same = [j for j in svc.queue.list_jobs() if j.device == job.device and j.job_id != job.job_id]
    running = sum(j.status == Status.RUNNING for j in same)
    ahead = sum(j.status == Status.QUEUED and (j.created, j.job_id) < (job.created, job.job_id) for j in same)
    return f"waiting for {job.device}: {running} running, {ahead} ahead"


def _header(record: RunRecord, meta: dict[str, Any], progress: Progress, job: Any, starting: bool,
            waiting: str = "") -> str:
    status = record.status
    if waiting:
        status += f" · {waiting}"
    elif status == Status.RUNNING and starting:
        status = "running · starting (loading data, grouping)"
    elif status == Status.RUNNING and progress.step >= progress.total > 0:
        status = "running · final evaluation"
    elif status in FINISHED and job is not None and job.status in ACTIVE:
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
    if meta.get("error") and record.status != Status.DONE:
        lines.append(f"⚠ {meta['error']}")
    elif job is not None and job.error and job.status in (Status.FAILED, Status.CANCELLED):
        lines.append(f"⚠ {job.error}")
    return "  \n".join(lines)


def _metrics(record: RunRecord, report: dict[str, Any] | None) -> str:
    if record.fiou is None and not report:
        return ""
    text = f"**FIoU {pct(record.fiou)} %** · **MIoU {pct(record.miou)} %** (PSS convention: 21 classes, absent = 0)"
    if report:
        text += (f" · MIoU over present classes {pct(report['miou'].get('present'))} % · "
                 f"{report['num_images']} labelled images")
        split = split_info(report)  # a transfer run: which classes were weak (issue 18)
        if split is not None:
            text += "  \nSplit: " + split.text()
    return text


def run_view(ws: Workspace, run_id: str) -> RunView:
    """The live view of ``run_id`` (RunStoreError if it does not exist)."""
    svc = service(ws)
    run = svc.store.open_run(run_id)
    meta, record, events = run.meta, run.record, run.events()
    train, evals = latest_series(events, "train"), latest_series(events, "eval")
    job = svc.queue.latest_job(run_id)
    running = record.status == Status.RUNNING
    active = job is not None and job.status in ACTIVE
    ended = record.status in FINISHED  # by the engine; its process may still be exiting
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
    rows = [[r.user, r.method, settings_text(r.config), r.status, f"{r.steps}/{r.total_steps}", pct(r.fiou),
             pct(r.miou), format_duration(r.duration_s), r.device, r.created.replace("T", " ")[:19], r.run_id]
            for r in records]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def history_signature(ws: Workspace) -> str:
    """Changes when any run is added, removed, or changes status, steps or scores (one aggregate query)."""
    return json.dumps(service(ws).runs_signature())


__all__ = ["ALL", "HISTORY_COLUMNS", "LOG_LINES", "PRESETS", "STATUS_CHOICES", "LaunchResult", "Progress", "RunView",
           "class_iou_figure", "compact_log", "context_choices", "eval_figure", "form_defaults", "format_duration",
           "history_signature", "history_table", "init_choices", "latest_series", "launch_from_form", "loss_figure",
           "measure_progress", "method_choices", "progress_html", "queue_position", "run_on_choices", "run_view",
           "selected_run", "service", "settings_text", "view_signature", "view_state", "RunOnChoices"]
