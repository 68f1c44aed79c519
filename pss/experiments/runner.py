"""Runs the cells of an experiment: the shared No-DA runs first, then each user's rows in dependency order (users in
parallel worker processes with ``jobs > 1``). Every cell is reused, resumed or trained by ``pss.experiments.reuse``."""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from pss.api import runs as api
from pss.config import ExperimentConfig, config_to_dict
from pss.data.pss_layout import read_user
from pss.errors import PssError
from pss.experiments.reuse import canonical, ensure_run, evaluation_run
from pss.experiments.tables import Cell, ExperimentOptions, RowSpec
from pss.grouping import effective_k
from pss.runs.index import RunRecord
from pss.workspace import Workspace

log = logging.getLogger(__name__)
Say = Callable[[str], None]
Outcome = tuple[RunRecord, str]


@dataclass
class Plan:
    """Everything a (possibly separate) process needs to run one user's cells; picklable."""

    opts: ExperimentOptions
    rows: list[RowSpec]
    adapt_steps: int
    source_steps: int
    first_user: str
    sources: dict[tuple[str, int], RunRecord | None] = field(default_factory=dict)


class Runner:
    """One process's view of an experiment: builds each cell's config and reuses, resumes or trains its run."""

    def __init__(self, ws: Workspace, plan: Plan, say: Say) -> None:
        self.ws, self.plan, self.opts, self.say = ws, plan, plan.opts, say
        self.cells: list[Cell] = []
        self.notes: list[str] = []
        self.sizes: dict[str, int] = {}
        self.work = 0  # runs trained, resumed or evaluated by this process

    def config(self, row_method: str, extra: Sequence[str], user: str, seed: int, steps: int) -> ExperimentConfig:
        overrides = [f"method.name={row_method}", *extra, f"data.user={user}", f"train.seed={seed}",
                     f"tag={self.opts.tag}", f"train.steps={steps}"]
        return api.make_config(self.ws, self.opts.preset, overrides)

    def mode(self, row: RowSpec, seed: int) -> str:
        return self.config(row.method, row.overrides, self.plan.first_user, seed, 1).model.context.mode

    def source_run(self, mode: str, seed: int) -> RunRecord | None:
        """The shared No-DA run of a context mode: trained on the source only, so its user (the workspace's first,
        evaluated at the end) does not matter to the model."""
        if (mode, seed) not in self.plan.sources:
            config = self.config("source_only", [f"model.context.mode={mode}"], self.plan.first_user, seed,
                                 self.plan.source_steps)
            self.say(f"[{self.opts.table}] shared No-DA model: context {mode}, seed {seed}")
            outcome = guard(lambda: ensure_run(self.ws, config, self.opts.device, self.opts.console), self.say)
            self.plan.sources[(mode, seed)] = outcome[0] if outcome and outcome[0].status == "done" else None
            if outcome:
                self.work += outcome[1] in ("trained", "resumed")
                self.say(f"    -> {outcome[1]} run {outcome[0].run_id} ({outcome[0].status})")
        return self.plan.sources[(mode, seed)]

    def effective(self, config: ExperimentConfig) -> tuple[str, int]:
        """The config with ``grouping.k`` replaced by the number of groups the user really gets (Table 4)."""
        user = config.data.user
        if user not in self.sizes:
            self.sizes[user] = len(read_user(config.data.personal_path(), user).records)
        k = effective_k(self.sizes[user], config.grouping.k) if config.model.context.mode != "none" else 0
        key = config_to_dict(config)
        key["grouping"]["k"] = k  # in the dict: 0 (no groups) is not a valid GroupingConfig.k
        return canonical(key), k

    def run_user(self, user: str, seed: int) -> list[Cell]:
        cells: dict[str, Cell] = {}
        seen: dict[str, Cell] = {}
        for index, row in enumerate(self.plan.rows):
            cell = cells[row.key] = Cell(row.key, user, seed)
            self.cells.append(cell)
            self.say(f"[{self.opts.table} {user} {index + 1}/{len(self.plan.rows)}] {row.label}, seed {seed}")
            self.run_cell(row, cell, cells, seen)
            self.work += cell.action in ("trained", "resumed", "evaluated")
            scores = f": FIoU {cell.fiou * 100:.2f} MIoU {cell.miou * 100:.2f}" if cell.fiou is not None else ""
            self.say(f"    -> {cell.status}, {cell.action or cell.note} run {cell.run_id}{scores}")
        return list(cells.values())

    def run_cell(self, row: RowSpec, cell: Cell, cells: dict[str, Cell], seen: dict[str, Cell]) -> None:
        config = self.config(row.method, row.overrides, cell.user, cell.seed, self.plan.adapt_steps)
        source = self.source_run(config.model.context.mode, cell.seed) if row.init == "source" else None
        if row.source_eval:
            if source is not None:
                record(cell, guard(lambda: evaluation_run(self.ws, source, cell.user, self.opts.tag,
                                                          self.opts.device), self.say))
            else:
                cell.status, cell.note = "skipped", "the shared No-DA run did not finish"
            return
        parent = cells.get(row.init)
        start = source.run_id if source is not None else (parent.run_id if parent and parent.status == "done" else None)
        if start is None:
            cell.status, cell.note = "skipped", "its starting run did not finish"
            return
        config = self.config(row.method, [*row.overrides, f"train.init_from={start}"], cell.user, cell.seed,
                             self.plan.adapt_steps)
        key, k = self.effective(config)
        if k != config.grouping.k and any(o.startswith("grouping.k=") for o in row.overrides):
            self.notes.append(f"K={config.grouping.k} is capped to {k} groups on {cell.user} "
                              f"({self.sizes[cell.user]} images; effective_k = min(K, images // 4))")
        if key in seen:  # Table 4: this K gives as many groups as an earlier row's K on this user
            twin = seen[key]
            cell.run_id, cell.status, cell.action = twin.run_id, twin.status, "shared"
            cell.fiou, cell.miou, cell.seconds = twin.fiou, twin.miou, 0.0
            self.notes.append(f"K={config.grouping.k} and the row {twin.row} give the same {k} groups on {cell.user}: "
                              "one run serves both")
            return
        seen[key] = cell
        record(cell, guard(lambda: ensure_run(self.ws, config, self.opts.device, self.opts.console), self.say))


def guard(action: Callable[[], Outcome], say: Say) -> Outcome | None:
    """Run one cell; a failing run is reported and the experiment goes on (cells that start from it are skipped)."""
    try:
        return action()
    except (PssError, FloatingPointError, RuntimeError, ValueError) as exc:
        say(f"    !! failed: {type(exc).__name__}: {exc}")
        log.debug("experiment cell failed", exc_info=True)
        return None


def record(cell: Cell, outcome: Outcome | None) -> None:
    if outcome is None:
        cell.status = "failed"
        return
    run, cell.action = outcome
    cell.run_id, cell.status = run.run_id, run.status
    cell.fiou, cell.miou, cell.seconds = run.fiou, run.miou, run.duration_s


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _user_job(root: Path, plan: Plan, user: str, seed: int) -> tuple[list[Cell], list[str], int]:
    """One user's cells in a worker process (its console output goes to the parent's stdout, line by line)."""
    runner = Runner(Workspace(root), plan, lambda text: print(text, flush=True))
    return runner.run_user(user, seed), runner.notes, runner.work


def run_cells(ws: Workspace, plan: Plan, users: list[str], seeds: list[int], say: Say) -> Runner:
    """All cells: per seed, the shared No-DA runs, then every user (in ``plan.opts.jobs`` processes)."""
    runner = Runner(ws, plan, say)
    jobs = max(1, min(plan.opts.jobs or 1, len(users)))
    for seed in seeds:
        for mode in dict.fromkeys(runner.mode(row, seed) for row in plan.rows):
            runner.source_run(mode, seed)
        if jobs == 1:
            for user in users:
                runner.run_user(user, seed)
            continue
        # spawn, not fork: the parent has initialised torch's thread pools, which a forked child cannot reuse
        threads = max(1, (os.cpu_count() or 1) // jobs)
        quiet = replace(plan, opts=replace(plan.opts, console=False))
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_user_job, ws.root, quiet, user, seed) for user in users]
            for future in futures:
                cells, notes, work = future.result()
                runner.cells += cells
                runner.notes += notes
                runner.work += work
    return runner
