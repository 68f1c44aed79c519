"""The plain values an experiment is made of: a table's rows, the options of one invocation, its cells and result.

Shared by the table definitions and the entry point (``pss.experiments.tables``), the runner that trains the cells
(``pss.experiments.runner``), the gains (``gains.py``) and the report (``report.py``); it imports none of them, so
they depend on it and never on each other in a circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Cell states beyond a run's ``pss.status.Status``: not run yet, or not run because its start did not finish.
PENDING = "pending"
SKIPPED = "skipped"
#: ``RowSpec.init`` of a row that starts from nothing but the preset's initialisation (no ``train.init_from``).
NO_INIT = "none"


@dataclass(frozen=True)
class RowSpec:
    """One row of a table. ``init``: ``"source"`` (the shared No-DA model), :data:`NO_INIT` (the preset's
    initialisation, e.g. ImageNet: a row trained from scratch beside the No-DA model, as the transfer table's) or the
    key of the row whose run (same user and seed) starts this one. ``default``: shown unless ``--methods`` says
    otherwise (other rows are trained only when a shown row depends on them, or when asked for). ``source_eval``:
    the No-DA model itself, evaluated.
    ``shared``: a row that trains on the source only (a "No-DA continued" control): one run per seed, trained on the
    workspace's first user and evaluated on the others. ``control``: the key of the row this row's gain is measured
    against (it differs from this row only in the adaptation term); every gain is also reported against the start
    (the No-DA row). ``per_cell``: overrides whose ``{user}`` and ``{seed}`` are filled in per cell (e.g. the
    annotation curve's simulated data folder, which for the random order differs per seed)."""

    key: str
    label: str
    method: str
    overrides: tuple[str, ...] = ()
    init: str = "source"
    default: bool = True
    source_eval: bool = False
    shared: bool = False
    control: str | None = None
    per_cell: tuple[str, ...] = ()

    def cell_overrides(self, user: str, seed: int) -> tuple[str, ...]:
        """The row's overrides for the cell of ``user`` and ``seed``."""
        return (*self.overrides, *(o.format(user=user, seed=seed) for o in self.per_cell))


@dataclass
class ExperimentOptions:
    """What to run. ``steps``: every adaptation run's ``train.steps`` (None: a third of the preset's — adaptation
    fine-tunes the shared No-DA model, so on the demo 100 of its 300 — which keeps table1 on the demo within 90
    minutes on two CPU cores); ``source_steps``: the shared No-DA runs' (None: the preset's). ``seeds``: how many
    seeds, from the preset's ``train.seed`` up. ``jobs``: users trained in parallel processes, each with
    ``cpu_count // jobs`` threads; None = 2 on a CPU with at least 2 cores, 1 on CUDA (one GPU). One thread per
    process suits the demo's small convolutions: on a busy 2-core machine a No-DA step took 2.4 s with one thread
    and 13.6 s with two (OpenMP threads waiting for each other). ``one_start``: every seed starts from the No-DA
    model of the first seed (seeds then vary the adaptation runs and their controls, not the start; the No-DA row
    has no spread), which saves one No-DA training per extra seed. ``start``: the id of a finished context-free
    No-DA run to start every seed from instead of training one (implies ``one_start``; e.g. the run whose
    source-val curve chose the preset's No-DA length). ``bootstrap``: resamples of the paired
    bootstrap behind each gain's 95 % interval (``pss.experiments.stats``). ``backend``: where the cells run
    (``pss.experiments.backends``): ``local`` (this process, or ``jobs`` local processes) or ``ray`` (Ray tasks on
    the cluster at ``address``, or on a local Ray with ``jobs`` CPUs, default all, when ``address`` is None)."""

    table: str
    users: list[str] | None = None
    methods: list[str] | None = None
    steps: int | None = None
    source_steps: int | None = None
    seeds: int = 1
    one_start: bool = False
    start: str | None = None
    bootstrap: int = 2000
    preset: str = "demo"
    device: str = "auto"
    tag: str = "tables"
    jobs: int | None = None
    console: bool = True
    backend: str = "local"
    address: str | None = None


@dataclass
class Cell:
    """One user × row × seed of a table: the run that fills it and its scores.

    ``status``: the run's :class:`~pss.status.Status` once it ran (``failed`` also when training raised),
    else :data:`PENDING` or :data:`SKIPPED`; ``action``: what was done (trained, resumed, reused, evaluated, shared).
    """

    row: str
    user: str
    seed: int
    run_id: str | None = None
    status: str = PENDING
    action: str = ""
    fiou: float | None = None
    miou: float | None = None
    seconds: float | None = None
    note: str = ""


@dataclass
class ExperimentResult:
    """What ``run_experiment`` returns: the tables (metric -> DataFrame), every cell, notes and where they were
    written; ``failed`` names the cells that did not finish."""

    table: str
    tables: dict[str, Any]  # metric -> DataFrame
    cells: list[Cell]
    notes: list[str]
    out_dir: Path
    seconds: float
    trained: int = 0
    failed: list[str] = field(default_factory=list)
    gains: dict[str, Any] = field(default_factory=dict)  # "<metric> vs control|start" -> DataFrame (gains.py)
    controls: dict[str, str] = field(default_factory=dict)  # row label -> its control's label

__all__ = ["NO_INIT", "PENDING", "SKIPPED", "Cell", "ExperimentOptions", "ExperimentResult", "RowSpec"]
