"""Runs the cells of an experiment: per seed, the shared No-DA run first, then the shared source-only rows (the
"No-DA continued" controls, in parallel), then each user's rows in dependency order (users in parallel, one
thread each, when the backend runs several cells at once). Every cell is reused, resumed or trained by
``pss.experiments.reuse``, where the backend (``pss.experiments.backends``: this process, local worker processes
or Ray tasks) runs it; this module only decides what each cell runs, and in which order."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from pss.api import runs as api
from pss.config import ExperimentConfig, config_to_dict
from pss.data.pss_layout import list_users, read_user
from pss.errors import ConfigError, PssError
from pss.experiments.backends import Backend, CellResult, CellTask, InProcess
from pss.experiments.reuse import canonical
from pss.experiments.spec import NO_INIT, SKIPPED, Cell, ExperimentOptions, RowSpec
from pss.grouping import effective_k
from pss.runs.index import RunRecord
from pss.status import Status
from pss.workspace import Workspace

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def table_users(ws: Workspace, requested: Sequence[str] | None, default: Sequence[str] | None = None) -> list[str]:
    """The users an experiment runs on: ``requested`` (``--users``), else ``default`` (None: every user of the
    workspace); an unknown name is an error that lists the workspace's users."""
    everyone = list_users(ws.personal)
    if not everyone:
        raise ConfigError(f"no users under {ws.personal}; write the demo with `pss demo --out {ws.data}`")
    users = list(requested) if requested else list(default) if default is not None else everyone
    missing = [u for u in users if u not in everyone]
    if missing:
        raise ConfigError(f"unknown user(s) {', '.join(missing)}; users in {ws.personal}: {', '.join(everyone)}")
    return users


@dataclass
class Plan:
    """Everything a (possibly separate) process needs to run one user's cells; picklable."""

    opts: ExperimentOptions
    rows: list[RowSpec]
    adapt_steps: int
    source_steps: int
    first_user: str
    sources: dict[int, RunRecord | None] = field(default_factory=dict)
    shared: dict[tuple[str, int], RunRecord | None] = field(default_factory=dict)

    def start_seed(self, seed: int, seeds: Sequence[int]) -> int:
        """The seed of the No-DA model the cells of ``seed`` start from (``opts.one_start``: the first seed's)."""
        return seeds[0] if self.opts.one_start or self.opts.start else seed


class Runner:
    """One user's (or the shared rows') view of an experiment: builds each cell's task and has the backend run it."""

    def __init__(self, ws: Workspace, plan: Plan, say: Say, backend: Backend | None = None) -> None:
        self.ws, self.plan, self.opts, self.say = ws, plan, plan.opts, say
        self.backend = backend or InProcess()
        self.start_seed = 0  # the seed of the No-DA run the current user's cells start from (run_user)
        self.cells: list[Cell] = []
        self.notes: list[str] = []
        self.sizes: dict[str, int] = {}
        self.work = 0  # runs trained, resumed or evaluated by this process

    def execute(self, task: CellTask) -> CellResult:
        """Run one cell's task on the backend and wait for it; a failure is said here (the experiment goes on)."""
        result = self.backend.run(task)
        if result.error:
            self.say(f"    !! failed: {result.error}")
        elif result.cancelled:
            self.say("    !! cancelled")
        return result

    def train_task(self, config: ExperimentConfig) -> CellTask:
        return CellTask(self.ws.root, "train", self.opts.device, config, self.opts.console)

    def config(self, row_method: str, extra: Sequence[str], user: str, seed: int, steps: int) -> ExperimentConfig:
        overrides = [f"method.name={row_method}", *extra, f"data.user={user}", f"train.seed={seed}",
                     f"tag={self.opts.tag}", f"train.steps={steps}"]
        return api.make_config(self.ws, self.opts.preset, overrides)

    def source_run(self, seed: int) -> RunRecord | None:
        """The shared No-DA run (context-free; every row starts from it, a context row with fresh context layers):
        trained on the source only, so its user (the workspace's first, evaluated at the end) does not matter."""
        if seed not in self.plan.sources and self.opts.start:
            record_ = self.ws.store().open_run(self.opts.start).record
            if record_.status != Status.DONE:
                raise PssError(f"--start run {self.opts.start} is {record_.status}; give a finished No-DA run")
            self.plan.sources[seed] = record_
        if seed not in self.plan.sources:
            config = self.config("source_only", ["model.context.mode=none"], self.plan.first_user, seed,
                                 self.plan.source_steps)
            self.say(f"[{self.opts.table}] shared No-DA model, seed {seed}")
            outcome = self.execute(self.train_task(config)).outcome
            self.plan.sources[seed] = outcome[0] if outcome and outcome[0].status == Status.DONE else None
            if outcome:
                self.work += outcome[1] in ("trained", "resumed")
                self.say(f"    -> {outcome[1]} run {outcome[0].run_id} ({outcome[0].status})")
        return self.plan.sources[seed]

    def shared_run(self, row: RowSpec, seed: int, start: RunRecord | None) -> RunRecord | None:
        """The one run of a ``shared`` row for ``seed`` (trained on the first user's config), started from ``start``."""
        if (row.key, seed) not in self.plan.shared:
            self.plan.shared[(row.key, seed)] = None
            if start is not None or row.init == NO_INIT:
                init = [] if row.init == NO_INIT or start is None else [f"train.init_from={start.run_id}"]
                config = self.config(row.method, [*row.cell_overrides(self.plan.first_user, seed), *init],
                                     self.plan.first_user, seed, self.plan.adapt_steps)
                self.say(f"[{self.opts.table}] {row.label}, seed {seed} (source only: one run for every user)")
                outcome = self.execute(self.train_task(config)).outcome
                if outcome:
                    self.say(f"    -> {outcome[1]} run {outcome[0].run_id} ({outcome[0].status}): {row.label}, "
                             f"seed {seed}")
                    self.work += outcome[1] in ("trained", "resumed")
                    self.plan.shared[(row.key, seed)] = outcome[0] if outcome[0].status == Status.DONE else None
        return self.plan.shared[(row.key, seed)]

    def effective(self, config: ExperimentConfig) -> tuple[str, int]:
        """The config with ``grouping.k`` replaced by the number of groups the user really gets (Table 4)."""
        user = config.data.user
        if user not in self.sizes:
            self.sizes[user] = len(read_user(config.data.personal_path(), user).records)
        k = effective_k(self.sizes[user], config.grouping.k) if config.model.context.mode != "none" else 0
        if k and config.grouping.k_rule == "silhouette":
            k = self.chosen_k(config)
        key = config_to_dict(config)
        # in the dict: 0 (no groups) is not a valid GroupingConfig.k; a K chosen by the rule gives the same groups
        # as that K fixed
        key["grouping"].update(k=k, k_rule=None, k_grid=None)
        return canonical(key), k

    def chosen_k(self, config: ExperimentConfig) -> int:
        """The K the silhouette rule picks for the config's user (the run computes the same from the same cached
        features); noted with its scores."""
        from pss.engine.data import user_groups
        from pss.engine.device import resolve_device

        user = config.data.user
        records = read_user(config.data.personal_path(), user).records
        chosen = user_groups(records, config.grouping, self.ws.cache, resolve_device(self.opts.device))
        scores = ", ".join(f"{k}: {v:.3f}" for k, v in chosen.scores.items())
        self.notes.append(f"auto: the silhouette rule chose K={chosen.k} on {user} (silhouette per K: {scores})")
        return chosen.k

    def run_user(self, user: str, seed: int, start_seed: int | None = None) -> list[Cell]:
        """Every row's cell of ``user`` and ``seed``; rows start from the No-DA run of ``start_seed`` (default
        ``seed``)."""
        self.start_seed = seed if start_seed is None else start_seed
        cells: dict[str, Cell] = {}
        seen: dict[str, Cell] = {}
        for index, row in enumerate(self.plan.rows):
            cell = cells[row.key] = Cell(row.key, user, seed)
            self.cells.append(cell)
            where = f"[{self.opts.table} {user} {index + 1}/{len(self.plan.rows)}] {row.label}, seed {seed}"
            self.say(where)
            self.run_cell(row, cell, cells, seen)
            self.work += cell.action in ("trained", "resumed", "evaluated")
            scores = f": FIoU {_percent(cell.fiou)} MIoU {_percent(cell.miou)}" if cell.fiou is not None else ""
            # with parallel users the lines of several cells interleave: the result line names its cell again
            again = f" ({where})" if self.backend.parallel else ""
            self.say(f"    -> {cell.status}, {cell.action or cell.note} run {cell.run_id}{scores}{again}")
        return list(cells.values())

    def run_cell(self, row: RowSpec, cell: Cell, cells: dict[str, Cell], seen: dict[str, Cell]) -> None:
        source = self.source_run(self.start_seed) if row.init == "source" else None
        if row.source_eval or row.shared:
            model = source if row.source_eval else self.shared_run(row, cell.seed, source)
            if model is not None:
                record(cell, self.execute(CellTask(self.ws.root, "evaluate", self.opts.device, source=model,
                                                   user=cell.user, tag=self.opts.tag)))
            else:
                cell.status, cell.note = SKIPPED, "its shared run did not finish"
            return
        parent = cells.get(row.init)
        start: str | None = None  # the run this cell starts from: the shared No-DA run, else its finished parent
        if source is not None:
            start = source.run_id
        elif parent is not None and parent.status == Status.DONE:
            start = parent.run_id
        if start is None and row.init != NO_INIT:
            cell.status, cell.note = SKIPPED, "its starting run did not finish"
            return
        init = [f"train.init_from={start}"] if start is not None and row.init != NO_INIT else []
        config = self.config(row.method, [*row.cell_overrides(cell.user, cell.seed), *init],
                             cell.user, cell.seed, self.plan.adapt_steps)
        key, k = self.effective(config)
        if config.grouping.k_rule == "fixed" and k != config.grouping.k and any(
                o.startswith("grouping.k=") for o in row.overrides):
            self.notes.append(f"K={config.grouping.k} is capped to {k} groups on {cell.user} "
                              f"({self.sizes[cell.user]} images; effective_k = min(K, images // 4))")
        if key in seen:  # Table 4: this K gives as many groups as an earlier row's K on this user
            twin = seen[key]
            cell.run_id, cell.status, cell.action = twin.run_id, twin.status, "shared"
            cell.fiou, cell.miou, cell.seconds = twin.fiou, twin.miou, 0.0
            name = f"K={config.grouping.k}" if config.grouping.k_rule == "fixed" else f"auto (K={k})"
            self.notes.append(f"{name} and the row {twin.row} give the same {k} groups on {cell.user}: "
                              "one run serves both")
            return
        seen[key] = cell
        record(cell, self.execute(self.train_task(config)))


def record(cell: Cell, result: CellResult) -> None:
    """The cell's state from its task: its run's, or failed, or cancelled (Ctrl-C: the next invocation resumes or
    retrains it)."""
    if result.outcome is None:
        cell.status = Status.CANCELLED if result.cancelled else Status.FAILED
        cell.note = "cancelled" if result.cancelled else (result.error or "failed")
        return
    run, cell.action = result.outcome
    cell.run_id, cell.status = run.run_id, run.status
    cell.fiou, cell.miou, cell.seconds = run.fiou, run.miou, run.duration_s


def _percent(score: float | None) -> str:
    """A score in [0, 1] as a percentage with 2 decimals; "n/a" for a missing one (a run's ``miou`` is None when its
    run.json has none, e.g. written by hand or by another tool, even where ``fiou`` is set)."""
    return "n/a" if score is None else f"{score * 100:.2f}"


def run_cells(ws: Workspace, plan: Plan, users: list[str], seeds: list[int], say: Say,
              backend: Backend | None = None) -> Runner:
    """All cells: per seed, the shared No-DA run, the shared rows, then every user; with a parallel ``backend``
    the shared rows and the users go in parallel (one driver thread each, waiting on its cells; the backend
    decides how many run at once). Ctrl-C cancels the backend's queued and running cells and re-raises."""
    backend = backend or InProcess()
    runner = Runner(ws, plan, say, backend)
    shared = [row for row in plan.rows if row.shared]
    for seed in seeds:
        start_seed = plan.start_seed(seed, seeds)
        start = runner.source_run(start_seed)
        if not backend.parallel:
            for row in shared:
                runner.shared_run(row, seed, start)
            for user in users:
                runner.run_user(user, seed, start_seed)
            continue
        # the cells' own console is off (their progress bars would interleave); each cell says a line instead.
        # ``quiet`` shares the dicts of ``plan``: the users' threads see the shared rows' runs.
        quiet = replace(plan, opts=replace(plan.opts, console=False))
        said = _locked(say)
        with ThreadPoolExecutor(max(1, len(shared), len(users)), thread_name_prefix="pss-cell") as threads:
            # the shared rows first (the users' cells evaluate them)
            for part in _gather(backend, [threads.submit(_shared_part, ws, quiet, said, backend, row, seed, start)
                                          for row in shared]):
                runner.work += part.work
            for part in _gather(backend, [threads.submit(_user_part, ws, quiet, said, backend, user, seed,
                                                         start_seed) for user in users]):
                runner.cells += part.cells
                runner.notes += part.notes
                runner.work += part.work
    return runner


def _locked(say: Say) -> Say:
    """``say`` for several threads: one line at a time."""
    lock = threading.Lock()

    def said(text: str) -> None:
        with lock:
            say(text)
    return said


def _shared_part(ws: Workspace, plan: Plan, say: Say, backend: Backend, row: RowSpec, seed: int,
                 start: RunRecord | None) -> Runner:
    """One shared row's run, from a driver thread."""
    part = Runner(ws, plan, say, backend)
    part.shared_run(row, seed, start)
    return part


def _user_part(ws: Workspace, plan: Plan, say: Say, backend: Backend, user: str, seed: int,
               start_seed: int) -> Runner:
    """One user's cells, from a driver thread."""
    part = Runner(ws, plan, say, backend)
    part.run_user(user, seed, start_seed)
    return part


def _gather(backend: Backend, futures: list[Future[Runner]]) -> list[Runner]:
    """The results of the driver threads, in order. Waits in short slices so that Ctrl-C reaches this (main)
    thread; it then cancels the backend's cells, lets the threads see their cells end, and re-raises."""
    try:
        while wait(futures, timeout=0.5).not_done:
            pass
    except KeyboardInterrupt:
        log.warning("interrupted: cancelling the experiment's queued and running cells")
        backend.cancel()
        wait(futures)
        raise
    return [f.result() for f in futures]
