"""The app's first minutes: one action trains the demo's No-DA, ADVENT, OURS-S1 and OURS-S2 for one user.

The runs are exactly the cells ``pss experiment table1 --methods source_only,advent,pss,pss_s2 --users USER`` needs
(``pss.experiments``: the same rows, the same configs built by its ``Runner``, the same tag, the same reuse rule of
``pss.experiments.reuse.matching_runs``), so either one reuses the other's runs. They differ in where they run: here
every run is a job of the workspace's job queue (``pss.api.jobs``), and a run that starts from another (its
``train.init_from``) is launched with ``after=`` that run, so it is queued only once that run is done
(``pss.api.waiting``). The chain, in the tables' recipe:

* No-DA (context-free) — the table's No-DA row, and the start of ADVENT and of OURS-S1 (whose group-context layers
  start fresh, as in ``pss experiment``);
* ADVENT and OURS-S1 from No-DA, OURS-S2 from OURS-S1.

The No-DA run trains with ``data.user`` = the chosen user, so it is evaluated on that user (for the workspace's first
user this is the tables' shared No-DA config itself; the tables' "No-DA continued" controls are not trained here).
Steps as ``pss experiment`` by default: the preset's ``train.steps`` for No-DA, a third of them for each adaptation
run.

Per user, the run ids of the last start are kept in ``WS/quickstart/<user>.json`` so the app can poll them cheaply.

The time estimate (shown before anything starts) is ``sum(steps x seconds per step + fixed seconds)`` over the runs
still to train, with both numbers measured: from the newest finished runs of this workspace with the same method,
context, model/crop/batch shape and device kind (train events give the loop's seconds per step; the rest of the run's
duration is its fixed part: loading, grouping, pseudo labels, final evaluation), else from ``MEASURED`` below.
"""
from __future__ import annotations

import logging
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pss.api.runs as api_runs
from pss.api.devices import AUTO_DEVICE, visible_gpus
from pss.api.jobs import RESUMABLE, JobService, job_service
from pss.api.launch_form import LaunchRequest, validate_launch
from pss.errors import ConfigError, PssError, RunStoreError
from pss.runs.files import now_iso, read_json, write_json_atomic
from pss.runs.meta import flatten
from pss.status import ACTIVE, Status
from pss.workspace import Workspace

log = logging.getLogger(__name__)

TABLE = "table1"
ROWS = ("source_only", "advent", "pss", "pss_s2")  # keys of TABLES["table1"]
SOURCE = "source"  # the key of the shared No-DA run in the chain
TAG = "tables"  # the tag of ``pss experiment`` (its default): the two reuse each other's runs
PRESET_ENV = "PSS_QUICKSTART_PRESET"  # the tests' tiny chain: PSS_QUICKSTART_PRESET=tiny
DEFAULT_PRESET = "demo"
SHAPE_KEYS = ("model.backbone", "model.output_stride", "model.pretrained", "data.crop", "data.eval_short_side",
              "train.batch_size")
HISTORY_RUNS = 5  # the newest finished runs per (method, context) that a rate is measured on
# A job's process start before the engine's clock runs (imports: torch 2.3 s, torchvision 2.7 s, ...), measured on
# the idle two-core machine (commit e417a33); a run's recorded duration does not include it.
JOB_START_S = 5.7
# States of a chain run besides the run store's (pss.status.Status): not launched yet, waiting for its start run
# (pss.api.waiting), deleted.
NOT_STARTED, WAITING, MISSING = "not started", "waiting", "missing"

#: (seconds per training step, fixed seconds per run) on the CPU of a two-core machine, per preset and
#: (method, context mode): the fallback when this workspace has no finished run to measure. Demo: the whole chain
#: through the job queue, measured by ``bench/quickstart_bench.py`` on 2026-12-04 on the otherwise idle two-core
#: machine (load average 1.5 along the way): 43.5 min from the click to a filled Compare view, No-DA 1200 steps
#: 656.7 s, ADVENT 400 steps 555.5 s, OURS-S1 643.7 s, OURS-S2 713.2 s. Re-run that bench to refresh them.
#: Tiny: the browser test's chain (a few steps; the fixed part dominates).
MEASURED: dict[str, dict[tuple[str, str], tuple[float, float]]] = {
    "demo": {("source_only", "none"): (0.542, 6.5), ("advent", "none"): (1.375, 5.5),
             ("pss", "group"): (1.566, 17.3), ("pss_s2", "group"): (1.747, 14.3)},
    "tiny": {("source_only", "none"): (0.05, 4.0), ("advent", "none"): (0.05, 4.0), ("pss", "group"): (0.05, 5.0),
             ("pss_s2", "group"): (0.05, 5.0)},
}


def quickstart_preset() -> str:
    """The preset of the one-action chain: ``$PSS_QUICKSTART_PRESET``, else ``demo``."""
    return os.environ.get(PRESET_ENV, "").strip() or DEFAULT_PRESET


# ---- the chain -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One run of the chain. ``parent``: the key of the run it starts from (None: ImageNet init, source only)."""

    key: str
    label: str
    method: str
    overrides: tuple[str, ...]
    steps: int
    parent: str | None
    shown: bool  # one of the four compared rows (the group-context No-DA is only OURS' start)
    context: str = "none"


@dataclass
class _Chain:
    steps: list[Step]
    runner: Any  # pss.experiments.runner.Runner: builds each cell's config as `pss experiment` does
    seed: int


def _chain(ws: Workspace, user: str, preset: str) -> _Chain:
    from pss.experiments.runner import Plan, Runner
    from pss.experiments.tables import TABLES, ExperimentOptions, select_rows

    shown, _ = select_rows(TABLE, list(ROWS))
    specs = {row.key: row for row in TABLES[TABLE]}
    wanted = {row.key for row in shown}
    for row in shown:  # what the shown rows start from (their "No-DA continued" controls are not trained here)
        while row.init != "source":
            row = specs[row.init]
            wanted.add(row.key)
    train = api_runs.make_config(ws, preset).train
    opts = ExperimentOptions(table=TABLE, methods=list(ROWS), preset=preset, tag=TAG, console=False)
    # first_user = user: the shared No-DA run is trained (and evaluated) with data.user = this user
    plan = Plan(opts, [r for r in TABLES[TABLE] if r.key in wanted], max(1, train.steps // 3), train.steps, user)
    runner = Runner(ws, plan, log.info)
    # the shared No-DA run (Runner.source_run): context-free; context rows start from it with fresh context layers
    out = [Step(SOURCE, "No-DA", "source_only", ("model.context.mode=none",), plan.source_steps, None,
                shown="source_only" in wanted)]
    for row in plan.rows:
        if row.source_eval:
            continue  # the No-DA row is the shared No-DA run itself (evaluated on this user)
        mode = runner.config(row.method, row.overrides, user, train.seed, 1).model.context.mode
        out.append(Step(row.key, row.label, row.method, tuple(row.overrides), plan.adapt_steps,
                        SOURCE if row.init == "source" else row.init, row.key in wanted, mode))
    return _Chain(out, runner, train.seed)


def _overrides(step: Step, start: str | None) -> list[str]:
    return [*step.overrides, *([f"train.init_from={start}"] if start else [])]


def _config(chain: _Chain, step: Step, user: str, start: str | None):
    """The config ``pss experiment`` would give this cell (``Runner.config``)."""
    return chain.runner.config(step.method, _overrides(step, start), user, chain.seed, step.steps)


def _request(chain: _Chain, step: Step, user: str, start: str | None, preset: str, device: str) -> LaunchRequest:
    extra = (*_overrides(step, start), f"train.seed={chain.seed}", f"tag={TAG}", f"train.steps={step.steps}")
    return LaunchRequest(user=user, method=step.method, preset=preset, device=device, extra=tuple(extra))


# ---- state ---------------------------------------------------------------------------------------------

@dataclass
class RunState:
    """One run of the chain as the app shows it. ``status``: ``not started``, ``waiting`` (for its start run),
    ``queued``, ``running``, ``done``, ``failed``, ``cancelled`` or ``missing`` (deleted)."""

    key: str
    label: str
    method: str
    shown: bool
    steps: int
    run_id: str | None = None
    status: str = NOT_STARTED
    step: int = 0
    error: str | None = None
    parent: str | None = None
    context: str = "none"

    @property
    def fraction(self) -> float:
        return 1.0 if self.status == Status.DONE else (min(1.0, self.step / self.steps) if self.steps else 0.0)


@dataclass
class Quickstart:
    """The chain of one user: its runs in launch order, and what is left to do."""

    user: str
    preset: str
    runs: list[RunState]
    started: str | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.runs) and all(r.status == Status.DONE for r in self.runs)

    @property
    def active(self) -> bool:
        return any(r.status in (WAITING, *ACTIVE) for r in self.runs)

    @property
    def compare_runs(self) -> list[str]:
        """The finished runs of the four compared rows, in table order (what the Compare tab preselects)."""
        return [r.run_id for r in self.runs if r.shown and r.status == Status.DONE and r.run_id]

    @property
    def finished(self) -> int:
        return sum(r.status == Status.DONE for r in self.runs)


def _state_file(ws: Workspace, user: str) -> Path:
    return ws.root / "quickstart" / f"{user}.json"


def _run_state(service: JobService, step: Step, run_id: str | None) -> RunState:
    state = RunState(step.key, step.label, step.method, step.shown, step.steps, run_id, parent=step.parent,
                     context=step.context)
    if run_id is None:
        return state
    record = service.store.index.get_run(run_id)
    if record is None:
        state.status = MISSING
        return state
    state.status, state.step, state.steps = record.status, record.steps, record.total_steps or step.steps
    if record.status == Status.QUEUED and service.waiting_for(run_id):
        state.status = WAITING
    if record.status in RESUMABLE:
        try:
            state.error = service.store.open_run(run_id).meta.get("error")
        except RunStoreError:
            pass
    return state


def _alive(service: JobService, run_id: str, status: str) -> bool:
    """A queued run with a job or a waiting record, or a running one (also one trained by ``pss experiment``)."""
    if status == Status.RUNNING:
        return True
    job = service.queue.latest_job(run_id)
    return (job is not None and job.status in ACTIVE) or service.waiting_for(run_id) is not None


def _find(service: JobService, config) -> tuple[str | None, str]:
    """(run id, how) of the run for ``config``: done, alive, resumable; (None, "") when there is none."""
    from pss.experiments.reuse import matching_runs

    matches = matching_runs(service.ws, config)
    for status_wanted in ("done", "alive", "resumable"):
        for record in matches:
            if status_wanted == "done" and record.status == Status.DONE:
                return record.run_id, "reused"
            if status_wanted == "alive" and record.status in ACTIVE \
                    and _alive(service, record.run_id, record.status):
                return record.run_id, "in progress"
            if status_wanted == "resumable" and service.can_resume(record.run_id):
                return record.run_id, "resumable"
    return None, ""


def _resolve(ws: Workspace, user: str, preset: str, launch: bool, device: str = AUTO_DEVICE) -> Quickstart:
    from pss.config import config_to_dict
    from pss.experiments.reuse import canonical

    service = job_service(ws)
    chain = _chain(ws, user, preset)
    ids: dict[str, str | None] = {}
    runs: list[RunState] = []
    messages: list[str] = []
    for step in chain.steps:
        start = ids.get(step.parent) if step.parent else None
        if step.parent and start is None:  # its start run does not exist (yet): nothing to match
            runs.append(_run_state(service, step, None))
            ids[step.key] = None
            continue
        config = _config(chain, step, user, start)
        run_id, how = _find(service, config)
        if launch and how == "resumable" and run_id is not None:  # _find gives "resumable" with a run id only
            service.resume(run_id, device if device != AUTO_DEVICE else None)
            messages.append(f"{step.label}: resumed {run_id}")
        elif launch and run_id is None:
            parent = service.store.index.get_run(start) if start else None
            after = start if parent is not None and parent.status != Status.DONE else None
            request = _request(chain, step, user, start, preset, device)
            launched_config = validate_launch(ws, request, service.store, after=after)
            if canonical(config_to_dict(launched_config)) != canonical(config_to_dict(config)):
                raise PssError(f"quickstart: the launch of {step.label} would not train the `pss experiment` "
                               "config (pss.api.quickstart._request is out of date with Runner.config)")
            run_id = service.launch(request, after=after).run_id
            messages.append(f"{step.label}: launched {run_id}" + (f" (starts after {after})" if after else ""))
        elif launch and how:
            messages.append(f"{step.label}: {how} {run_id}")
        ids[step.key] = run_id
        runs.append(_run_state(service, step, run_id))
    return Quickstart(user, preset, runs, messages=messages)


def start(ws: Workspace, user: str, preset: str | None = None, device: str = AUTO_DEVICE) -> Quickstart:
    """The one action: reuse what is done, resume what stopped, launch the rest as chained jobs; returns the state.

    Raises:
        ConfigError: unknown user or preset (nothing is launched).
    """
    preset = preset or quickstart_preset()
    api_runs.make_config(ws, preset)  # an unknown preset is a ConfigError naming the presets
    users = _users(ws)
    if user not in users:
        raise ConfigError(f"unknown user {user!r}; users of this workspace: {', '.join(users) or 'none'}")
    state = _resolve(ws, user, preset, launch=True, device=device)
    state.started = now_iso()
    path = _state_file(ws, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"user": user, "preset": preset, "started": state.started,
                             "runs": {r.key: r.run_id for r in state.runs}})
    return state


def status(ws: Workspace, user: str, preset: str | None = None) -> Quickstart:
    """The chain's state for ``user``: the runs of the last start (``WS/quickstart/<user>.json``), else the matching
    runs that already exist (e.g. trained by ``pss experiment``); nothing is launched."""
    preset = preset or quickstart_preset()
    path = _state_file(ws, user)
    saved: dict[str, Any] | None = None
    if path.exists():
        try:
            saved = read_json(path, "quickstart record")
        except RunStoreError as exc:
            log.warning("%s", exc)
    if not saved or saved.get("preset") != preset or not isinstance(saved.get("runs"), dict):
        return _resolve(ws, user, preset, launch=False)
    service = job_service(ws)
    steps = _chain(ws, user, preset).steps
    runs = [_run_state(service, step, saved["runs"].get(step.key)) for step in steps]
    return Quickstart(user, preset, runs, started=saved.get("started"))


def _users(ws: Workspace) -> list[str]:
    from pss.data.pss_layout import list_users

    return list_users(ws.personal) if ws.personal.is_dir() else []


# ---- the estimate --------------------------------------------------------------------------------------

@dataclass
class Rate:
    """Measured cost of one run: ``seconds_per_step`` x steps + ``fixed_s``. ``basis``: where it was measured."""

    seconds_per_step: float
    fixed_s: float
    basis: str

    def seconds(self, steps: int) -> float:
        return JOB_START_S + steps * self.seconds_per_step + self.fixed_s


@dataclass
class Estimate:
    """Seconds left for the chain (None when some run has no measurement), per run and in total."""

    total_s: float | None
    per_run: dict[str, float | None]
    bases: list[str]
    device: str


def _history_rate(ws: Workspace, method: str, shape: dict[str, Any], device_kind: str) -> Rate | None:
    """Seconds per step and fixed seconds measured on the newest finished runs alike in method and shape."""
    store = ws.store()
    per_step, fixed = [], []
    for record in store.list_runs(method=method, status=Status.DONE):
        if (record.device or "cpu").split(":")[0] != device_kind or record.duration_s is None:
            continue
        flat = flatten(record.config)
        if any(flat.get(k) != v for k, v in shape.items()):
            continue
        try:
            train = [e for e in store.open_run(record.run_id).events("train") if "seconds" in e]
        except RunStoreError:
            continue
        train = [e for e in train if e["step"] > 0]
        if len(train) < 2 or train[-1]["step"] <= train[0]["step"] or train[-1]["seconds"] <= train[0]["seconds"]:
            continue  # a resumed run restarts its clock: only unbroken runs are measured
        rate = (train[-1]["seconds"] - train[0]["seconds"]) / (train[-1]["step"] - train[0]["step"])
        per_step.append(rate)
        fixed.append(max(0.0, record.duration_s - rate * train[-1]["step"]))
        if len(per_step) >= HISTORY_RUNS:
            break
    if not per_step:
        return None
    return Rate(statistics.median(per_step), statistics.median(fixed),
                f"{len(per_step)} finished {method} run{'s' * (len(per_step) > 1)} here")


def rate_for(ws: Workspace, preset: str, method: str, context: str, device_kind: str,
             shape: dict[str, Any]) -> Rate | None:
    """The measured rate of a run: this workspace's history, else ``MEASURED`` (CPU only), else None."""
    rate = _history_rate(ws, method, {**shape, "model.context.mode": context}, device_kind)
    if rate is None and device_kind == "cpu" and (method, context) in MEASURED.get(preset, {}):
        per_step, fixed = MEASURED[preset][(method, context)]
        rate = Rate(per_step, fixed, f"measured {preset} runs on two CPU cores")
    return rate


def estimate(ws: Workspace, state: Quickstart, device: str = AUTO_DEVICE) -> Estimate:
    """Seconds the chain still needs, run after run on one device (jobs on a device run one at a time)."""
    device_kind = "cuda" if device.startswith("cuda") or (device == AUTO_DEVICE and visible_gpus()) else "cpu"
    base = flatten(_preset_dict(ws, state.preset))
    shape = {k: base.get(k) for k in SHAPE_KEYS}
    per_run: dict[str, float | None] = {}
    bases: list[str] = []
    total: float | None = 0.0
    for run in state.runs:
        if run.status == Status.DONE:
            per_run[run.key] = 0.0
            continue
        rate = rate_for(ws, state.preset, run.method, run.context, device_kind, shape)
        if rate is None:
            per_run[run.key] = None
            total = None
            continue
        if run.status in (Status.RUNNING, *RESUMABLE):  # running on, or resumed from its checkpoint
            left = max(0, run.steps - run.step)
            seconds = left * rate.seconds_per_step + (rate.fixed_s if run.step == 0 else rate.fixed_s / 2)
            seconds += JOB_START_S if run.status != Status.RUNNING else 0.0
        else:
            seconds = rate.seconds(run.steps)
        per_run[run.key] = seconds
        total = None if total is None else total + seconds
        if rate.basis not in bases:
            bases.append(rate.basis)
    return Estimate(total, per_run, bases, device_kind)


def _preset_dict(ws: Workspace, preset: str) -> dict[str, Any]:
    from pss.config import config_to_dict

    return config_to_dict(api_runs.make_config(ws, preset))


def format_minutes(seconds: float | None) -> str:
    """``"about 24 min"`` / ``"about 40 s"``; ``"unknown"`` for None."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"
