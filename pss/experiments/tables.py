"""``pss experiment TABLE``: the experiments behind the paper's Tables 1-5, on a workspace, resumable.

Recipe (one invocation = users × rows × seeds):

* One shared No-DA model per (seed, context mode) is trained first — ``source_only`` on the source images
  only, so it does not depend on the user — and every adaptation run starts from it (``train.init_from``),
  as MaxSquare's official recipe pretrains on source. The context mode must match (a model with a group
  context has layers a context-free one lacks), so PSS rows start from a No-DA model trained with the group
  context (source batches are k-means groups of the source, as the released code trains). Adaptation runs
  fine-tune it for a third of the preset's steps by default (``--steps``).
* The No-DA row of a user is the shared context-free No-DA model evaluated on that user: an evaluation-only
  run (its checkpoint is a hard link to the shared one; tag ``<tag>:eval``), so the app can compare it.
* Second stages start from their first stage of the same user and seed (OURS-S2 from OURS-S1, MRNet stage II
  from MRNet stage I, FDA-SSL from FDA).
* Reuse: every run is tagged (``--tag``, default ``tables``); a run whose saved config equals the one the cell
  needs and which is done is reused; one that stopped with a checkpoint is resumed; else a new run is trained.
  Tables share cells: Table 3's "None" is the ADVENT run, "OURS" / Table 4's K=80 / Table 5's "Personal" are
  the OURS-S1 run. In Table 4, K is capped by ``effective_k`` on small users; rows whose effective K is equal
  on a user share one run (said in the notes).

Writes ``WS/experiments/<table>/``: ``fiou.csv``, ``miou.csv``, ``<table>.md`` (both tables + notes) and
``cells.csv`` (one line per user × row × seed with its run id, status, scores and duration).
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from pss.api import runs as api
from pss.data.pss_layout import list_users
from pss.errors import ConfigError, PssError
from pss.experiments.backends import RayBackend, ctrl_c_interrupts, make_backend
from pss.experiments.gains import gain_tables
from pss.experiments.report import write_outputs
from pss.experiments.runner import Plan, run_cells, table_users
from pss.experiments.spec import Cell, ExperimentOptions, ExperimentResult, RowSpec
from pss.status import Status
from pss.workspace import Workspace

NO_DA = RowSpec("source_only", "No-DA", "source_only", source_eval=True)
# "No-DA continued": source_only from the No-DA model, for the adaptation runs' steps, schedule, data and seed.
# With a context the context layers start fresh from the context-free No-DA model (demo: gated, so as the identity).
CONTINUED = RowSpec("noda_cont", "No-DA continued", "source_only", shared=True)
CONTINUED_GROUP = RowSpec("noda_cont_group", "No-DA continued (group context)", "source_only",
                          ("model.context.mode=group",), shared=True)
CONTINUED_GLOBAL = RowSpec("noda_cont_global", "No-DA continued (global context)", "source_only",
                           ("model.context.mode=global",), shared=True)
CONTINUED_GROUP_UNGATED = RowSpec(
    "noda_cont_group_nogate", "No-DA continued (group context, no gate: the paper's X_hat = psi([X, c]))",
    "source_only", ("model.context.mode=group", "model.context.gate=false"), shared=True, default=False)
K_GRID_ROWS = [RowSpec(f"k{k}", str(k), "pss", (f"grouping.k={k}",), control="noda_cont_group")
               for k in (1, 10, 80, 200)]

# the user's tags as supervision (issue 17): the pipelines against No-DA continued (same start, steps, source CE),
# the random walk against EPS alone, OURS-S2 + tags against OURS-S2 (they differ only in the tag restriction)
TAGS_ROWS = [
    RowSpec("eps_seg", "EPS (tags)", "eps_seg", control="noda_cont"),
    RowSpec("eps_affinity", "EPS + AffinityNet (tags)", "eps_affinity", control="eps_seg"),
    RowSpec("pss_s2_tags", "OURS-S2 + tags", "pss_s2", ("method.pseudo.restrict_to_tags=true",), init="pss",
            control="pss_s2"),
]

TABLES: dict[str, list[RowSpec]] = {
    "table1": [  # Tables 1 (FIoU) and 2 (MIoU)
        NO_DA,
        CONTINUED,
        CONTINUED_GROUP,
        RowSpec("adaptseg", "AdaptSeg", "adaptseg", control="noda_cont"),
        RowSpec("maxsquare", "MaxSquare", "maxsquare", control="noda_cont"),
        RowSpec("fda", "FDA", "fda", control="noda_cont"),
        RowSpec("fda_ssl", "FDA-SSL", "fda_ssl", init="fda", default=False, control="noda_cont"),
        RowSpec("advent", "ADVENT", "advent", control="noda_cont"),
        RowSpec("mrnet_s1", "MRNet-S1", "mrnet", default=False, control="noda_cont"),
        # the paper's MRNet = stage II + VOC supervision
        RowSpec("mrnet", "MRNet", "mrnet_s2", init="mrnet_s1", control="noda_cont"),
        RowSpec("pss", "OURS-S1", "pss", control="noda_cont_group"),
        RowSpec("pss_s2", "OURS-S2", "pss_s2", init="pss", control="noda_cont_group"),
        # the user's tags as supervision (issue 17; `pss experiment weak` sets their stage lengths)
        *(replace(r, default=False) for r in TAGS_ROWS),
    ],
    "table3": [
        NO_DA,
        CONTINUED,
        CONTINUED_GLOBAL,
        CONTINUED_GROUP,
        CONTINUED_GROUP_UNGATED,
        # PSS without context is ADVENT (the paper's None row = its ADVENT row)
        RowSpec("none", "None", "advent", control="noda_cont"),
        RowSpec("global", "Global", "pss", ("model.context.mode=global",), control="noda_cont_global"),
        RowSpec("group", "OURS", "pss", ("model.context.mode=group",), control="noda_cont_group"),
        # the control for "the k-means groups carry information": groups of the k-means sizes, members at random
        RowSpec("random", "OURS, random groups", "pss", ("model.context.mode=group", "grouping.random=true"),
                control="noda_cont_group"),
    ],
    "table4": [NO_DA, CONTINUED_GROUP, *K_GRID_ROWS,
               RowSpec("auto", "auto", "pss", ("grouping.k_rule=silhouette",), control="noda_cont_group")],
    "weak": [  # `pss experiment weak` (pss.experiments.weak_quality): Table 1 rows + the pseudo-mask quality
        NO_DA,
        CONTINUED,
        CONTINUED_GROUP,
        *TAGS_ROWS[:2],
        RowSpec("pss", "OURS-S1", "pss", default=False, control="noda_cont_group"),
        RowSpec("pss_s2", "OURS-S2", "pss_s2", init="pss", control="noda_cont_group"),
        TAGS_ROWS[2],
    ],
    "table5": [
        NO_DA,
        CONTINUED_GROUP,
        RowSpec("mix_sample", "MixSample", "pss", ("data.target=mix_sample",), control="noda_cont_group"),
        RowSpec("mix_all", "MixAll", "pss", ("data.target=mix_all",), control="noda_cont_group"),
        RowSpec("personal", "Personal", "pss", ("data.target=personal",), control="noda_cont_group"),
    ],
}


def select_rows(table: str, methods: Sequence[str] | None,
                rows: Sequence[RowSpec] | None = None) -> tuple[list[RowSpec], list[RowSpec]]:
    """(rows to show, rows to train = shown rows + what they start from), in table order. ``rows``: the table's
    rows when a caller derives them from its options (default ``TABLES[table]``)."""
    if rows is None and table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of {', '.join(TABLES)} (table1 = Tables 1 and 2)")
    table_rows = list(rows) if rows is not None else TABLES[table]
    specs = {r.key: r for r in table_rows}
    unknown = [m for m in methods or () if m not in specs]
    if unknown:
        raise ConfigError(f"{table} has no row {', '.join(unknown)}; its rows: {', '.join(specs)}")
    shown = [r for r in table_rows if (r.key in methods if methods else r.default)]
    needed = {r.key for r in shown}
    for row in shown:
        if row.control:  # a gain needs its control's runs
            needed.add(row.control)
        while row.init != "source":
            row = specs[row.init]
            needed.add(row.key)
    return shown, [r for r in table_rows if r.key in needed]


def default_jobs(device: str) -> int:
    """Parallel users when ``--jobs`` is not given: 2 on a CPU with >= 2 cores, else 1."""
    from pss.engine.device import resolve_device  # imports torch: only when an experiment really starts

    return 2 if resolve_device(device).type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def run_experiment(ws: Workspace, opts: ExperimentOptions, say: Callable[[str], None] = print,
                   rows: Sequence[RowSpec] | None = None) -> ExperimentResult:
    """Train (or reuse) every run of ``opts.table``, then write and return its tables (module docstring).
    ``rows``: the table's rows when they depend on the caller's options (e.g. ``pss experiment weak``'s stage
    lengths); default ``TABLES[opts.table]``."""
    started = time.time()
    table_rows = list(rows) if rows is not None else TABLES[opts.table] if opts.table in TABLES else None
    shown, needed = select_rows(opts.table, opts.methods, table_rows)
    users = table_users(ws, opts.users)
    everyone = list_users(ws.personal)  # Plan.first_user: the user the shared No-DA runs are trained under
    for name in ("steps", "source_steps"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(opts, name)}")
    if opts.seeds < 1 or (opts.jobs is not None and opts.jobs < 1):
        raise ConfigError("seeds and jobs must be >= 1")
    if opts.jobs is None and opts.backend != "ray":  # a Ray cluster decides how many cells run at once
        opts = replace(opts, jobs=default_jobs(opts.device))
    preset = api.make_config(ws, opts.preset).train
    plan = Plan(opts, needed, opts.steps or max(1, preset.steps // 3), opts.source_steps or preset.steps, everyone[0])
    seeds = [preset.seed + i for i in range(opts.seeds)]
    backend = make_backend(opts.backend, opts.jobs, opts.device, opts.address)
    if isinstance(backend, RayBackend):
        say(f"[{opts.table}] cells run as Ray tasks on {backend.describe()}")
    try:
        with ctrl_c_interrupts():
            runner = run_cells(ws, plan, users, seeds, say, backend)
    except KeyboardInterrupt:  # Ctrl-C: nothing stays queued or running on the cluster
        backend.cancel()
        raise
    finally:
        backend.close()
    labels = {r.key: r.label for r in needed}
    shown_keys = {r.key for r in shown}
    values = [dict(row=labels[c.row], user=c.user, seed=c.seed, FIoU=c.fiou, MIoU=c.miou)
              for c in runner.cells if c.row in shown_keys and c.status == Status.DONE]
    gains: dict[str, Any] = {}
    try:
        gains = gain_tables(ws, runner.cells, shown, users, {s: plan.start_seed(s, seeds) for s in seeds},
                            opts.bootstrap)
    except PssError as exc:  # e.g. a run without saved predictions: the tables stand, the intervals are missing
        runner.notes.append(f"gains not computed: {exc}")
    result = ExperimentResult(
        opts.table, api.seed_tables(values, [r.label for r in shown], users), runner.cells, runner.notes,
        ws.root / "experiments" / opts.table, time.time() - started, runner.work,
        [f"{labels[c.row]} / {c.user} / seed {c.seed}: {c.status}" for c in runner.cells if c.status != Status.DONE],
        gains, {r.label: labels[r.control] for r in shown if r.control})
    say(write_outputs(result, labels, opts, plan.adapt_steps, _start_text(ws, opts, plan.source_steps)))
    return result


def _start_text(ws: Workspace, opts: ExperimentOptions, source_steps: int) -> str:
    """How the tables' No-DA start was made, for the report's header (``--start``: that run's own length)."""
    if not opts.start:
        return f"{source_steps} steps per shared No-DA run"
    record = ws.store().index.get_run(opts.start)
    length = f"{record.total_steps} steps" if record is not None and record.total_steps else "length unknown"
    return f"every seed starts from the No-DA run `{opts.start}` ({length})"


# Cell, ExperimentOptions, ExperimentResult and RowSpec live in pss.experiments.spec (shared with the runner);
# they stay importable from here, the module that defines the tables.
__all__ = ["TABLES", "Cell", "ExperimentOptions", "ExperimentResult", "RowSpec", "default_jobs", "run_experiment",
           "select_rows"]
