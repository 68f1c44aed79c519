"""``pss experiment transfer``: how much of the fully supervised mIoU does transfer from strong to weak classes keep
(issue 18; Xiao et al., AAAI 2018: 96.5 % with 50 % and 89.4 % with 0 % of the classes pixel-labelled, VOC 2012)?

Rows (``ROWS``), every one trained on the source only, from the preset's initialisation (ImageNet on the demo):

* ``full``: fully supervised, ``source_only`` for ``steps`` steps: the tables' shared No-DA run of the seed
  (``pss.experiments.runner``), evaluated on every user;
* ``half_lnet`` / ``half``: 50 % of the object classes strong (drawn with ``split_seed`` = the cell's seed, so the
  seeds vary the split too), L-Net only (``lambda_adv = 0``) / L-Net + P-Net;
* ``zero_lnet`` / ``zero``: 0 % strong (background only: no object map, the CAMs stand in for it), likewise.

The transfer rows are ``transfer`` runs (``pss.methods.transfer``) whose final P-Net trains ``steps`` steps, as
``full`` does (each L-Net stage trains ``steps`` more unless ``--set method.objectness_steps=..`` says otherwise);
one run per row and seed, trained on the first user's config and evaluated on the others (the tables' ``shared``
rows). Cells are reused, resumed or trained by the tables' runner; ``--jobs`` runs rows in parallel (default as
the tables': 2 local processes on a CPU with two cores or more, else 1).

Columns: mIoU (%, the ``pss`` convention: 21 classes, absent = 0) on the source's held-out split for all classes
and for the split's strong (background included) and weak classes (``pss.weak.split_report``: one confusion
matrix), and each user's all-class mIoU; then each as % of the fully supervised value *on the same classes* and
seed (a 50 % row's weak column against ``full``'s mIoU on that row's weak classes), mean ± sample std over seeds.
``full``'s own strong / weak columns use the 50 % split of its seed. The fully supervised run's source-val
confusion is not in its report (a one-loop run keeps the scores only): it is scored here once and cached under
``experiments/transfer/source_val/<run>.json``.

Writes ``WS/experiments/transfer/``: ``transfer.csv`` (means and stds), ``cells.csv`` and ``transfer.md``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pss.api import runs as api
from pss.data.strong_weak import choose_strong_classes
from pss.errors import ConfigError
from pss.experiments.backends import make_backend
from pss.experiments.report import MIOU_NOTE
from pss.experiments.runner import Plan, run_cells, table_users
from pss.experiments.spec import NO_INIT, Cell, ExperimentOptions, RowSpec
from pss.experiments.tables import default_jobs
from pss.runs.index import RunRecord
from pss.status import Status
from pss.weak.split_report import group_miou
from pss.workspace import Workspace

TRANSFER = "transfer"
Say = Callable[[str], None]
PAPER = {"half": 96.5, "zero": 89.4}  # the abstract's % of the fully supervised mIoU (L-Net + P-Net, VOC 2012 val)
_HALF = ("method.strong_fraction=0.5",)
_SPLIT_SEED = ("method.split_seed={seed}",)  # the 50 % split is drawn per seed: its spread covers which classes
_ZERO = ("method.strong_fraction=0",)
_LNET_ONLY = ("method.lambda_adv=0",)

ROWS: list[RowSpec] = [
    RowSpec("full", "fully supervised", "source_only", source_eval=True),
    RowSpec("half_lnet", "50 % strong, L-Net only", TRANSFER, (*_HALF, *_LNET_ONLY), init=NO_INIT, shared=True,
            per_cell=_SPLIT_SEED),
    RowSpec("half", "50 % strong, L-Net + P-Net", TRANSFER, _HALF, init=NO_INIT, shared=True, per_cell=_SPLIT_SEED),
    RowSpec("zero_lnet", "0 % strong, L-Net only", TRANSFER, (*_ZERO, *_LNET_ONLY), init=NO_INIT, shared=True),
    RowSpec("zero", "0 % strong, L-Net + P-Net", TRANSFER, _ZERO, init=NO_INIT, shared=True),
]
ROW_KEYS: tuple[str, ...] = tuple(r.key for r in ROWS)
SOURCE_GROUPS = ("all", "strong", "weak")


@dataclass
class TransferOptions:
    """What to run (module docstring). ``rows``: row keys (default all; ``full`` is always added: every % needs
    it); ``steps``: the final segmenter's steps of every row (None: the preset's ``train.steps``); ``overrides``:
    ``method.*`` settings for the transfer rows only (e.g. ``method.cam_steps=100``; the fully supervised run has
    no such settings, and anything else would make the rows differ in more than the supervision)."""

    rows: list[str] | None = None
    users: list[str] | None = None
    steps: int | None = None
    seeds: int = 3
    preset: str = "demo"
    device: str = "auto"
    tag: str = TRANSFER
    jobs: int | None = None
    console: bool = True
    overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        unknown = [r for r in self.rows or () if r not in ROW_KEYS]
        if unknown:
            raise ConfigError(f"the transfer table has no row {', '.join(unknown)}; its rows: {', '.join(ROW_KEYS)}")
        if (self.steps is not None and self.steps < 1) or self.seeds < 1 or (self.jobs is not None and self.jobs < 1):
            raise ConfigError("steps, seeds and jobs must be >= 1")
        other = [o for o in self.overrides if not o.startswith("method.") or o.startswith("method.name")]
        if other:
            raise ConfigError(f"--set of the transfer experiment takes method.* settings of the transfer rows only, "
                              f"got {', '.join(other)} (the fully supervised row must train exactly as they do)")


@dataclass
class TransferResult:
    """``table``: means (%) per row label and column; ``std``: sample std over seeds (NaN with one seed)."""

    table: Any  # DataFrame
    std: Any  # DataFrame
    cells: list[Cell]
    out_dir: Path
    seconds: float
    trained: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    training_s: float = 0.0  # :func:`training_seconds`


def transfer_rows(keys: Sequence[str] | None, overrides: Sequence[str] = ()) -> list[RowSpec]:
    """The rows to run, in table order, ``full`` always included; ``overrides`` appended to the transfer rows'."""
    wanted = set(keys or ROW_KEYS) | {"full"}
    rows = []
    for row in ROWS:
        if row.key in wanted:
            rows.append(row if row.method != TRANSFER else
                        RowSpec(row.key, row.label, row.method, (*row.overrides, *overrides), init=row.init,
                                shared=row.shared, per_cell=row.per_cell))
    return rows


def run_transfer_experiment(ws: Workspace, opts: TransferOptions, say: Say = print) -> TransferResult:
    """Train (or reuse) every cell, then write the table (module docstring)."""
    started = time.time()
    opts.validate()
    users = table_users(ws, opts.users)
    preset = api.make_config(ws, opts.preset)
    steps = opts.steps or preset.train.steps
    rows = transfer_rows(opts.rows, opts.overrides)
    seeds = [preset.train.seed + i for i in range(opts.seeds)]
    jobs = opts.jobs or default_jobs(opts.device)  # as the tables: 2 processes on a CPU with two cores, else 1
    table_opts = ExperimentOptions(table=TRANSFER, users=users, steps=steps, source_steps=steps, seeds=opts.seeds,
                                   preset=opts.preset, device=opts.device, tag=opts.tag, jobs=jobs,
                                   console=opts.console)
    # the fully supervised run is the runner's shared No-DA run (source_only, the same steps, context-free),
    # trained on the first user's config like the transfer rows
    plan = Plan(table_opts, rows, steps, steps, users[0])
    backend = make_backend("local", jobs, opts.device)
    try:
        runner = run_cells(ws, plan, users, seeds, say, backend)
    finally:
        backend.close()
    out = ws.root / "experiments" / TRANSFER
    scorer = _Scores(ws, out / "source_val", opts.device)
    values = per_seed_values(runner.cells, plan, rows, users, seeds, scorer)
    table, std = summarise(values, rows, users)
    failed = [f"{c.row} / {c.user} / seed {c.seed}: {c.status}" for c in runner.cells if c.status != Status.DONE]
    result = TransferResult(table, std, runner.cells, out, time.time() - started, runner.work, failed,
                            [*runner.notes, *scorer.notes], training_seconds(plan))
    say(write_transfer(result, rows, opts, steps, seeds))
    return result


class _Scores:
    """Confusion matrices and splits of the cells' runs, read from their reports (the fully supervised run's
    source-val matrix scored once, cached)."""

    def __init__(self, ws: Workspace, cache: Path, device: str) -> None:
        self.ws, self.cache, self.device = ws, cache, device
        self.notes: list[str] = []

    def report(self, run_id: str) -> dict[str, Any]:
        return self.ws.store().open_run(run_id).read_report() or {}

    def user_confusion(self, run_id: str) -> np.ndarray | None:
        confusion = self.report(run_id).get("confusion")
        return None if confusion is None else np.asarray(confusion, dtype=np.int64)

    def source_val_confusion(self, record: RunRecord) -> np.ndarray | None:
        """The run's source-val confusion: its report's (a transfer run's ``source_val_split``), else its final
        checkpoint scored on the source's held-out split here (cached per run)."""
        entry = self.report(record.run_id).get("source_val_split") or {}
        if entry.get("confusion") is not None:
            return np.asarray(entry["confusion"], dtype=np.int64)
        path = self.cache / f"{record.run_id}.json"
        if path.is_file():
            return np.asarray(json.loads(path.read_text())["confusion"], dtype=np.int64)
        report = _score_source_val(self.ws, record.run_id, self.device)
        if report is None:
            self.notes.append(f"run {record.run_id}: no source val split (data.voc_val_list); its source-val "
                              "columns stay empty")
            return None
        self.cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"confusion": report.confusion, "num_images": report.num_images}))
        return np.asarray(report.confusion, dtype=np.int64)


def _score_source_val(ws: Workspace, run_id: str, device: str) -> Any:
    """The run's latest checkpoint scored on its config's source val (a ``SegReport``), None without one."""
    from pss.config import resolve_config
    from pss.engine.checkpoint import load_model_weights
    from pss.engine.data import read_source_val
    from pss.engine.device import resolve_device
    from pss.engine.evaluate import EvalSettings, evaluate_records
    from pss.errors import CheckpointError
    from pss.models.segmenter import build_segmenter

    run = ws.store().open_run(run_id)
    config = resolve_config(run.config)
    records = read_source_val(config)
    if not records:
        return None
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(f"run {run_id} has no checkpoint to score on the source val; train it again")
    torch_device = resolve_device(device)
    model = build_segmenter(config.model)
    load_model_weights(model, checkpoint)
    return evaluate_records(model.to(torch_device), records, None, EvalSettings.from_config(config, torch_device))[0]


def _groups(confusion: np.ndarray | None, strong: Sequence[int]) -> dict[str, float]:
    """mIoU (fractions) of all / strong / weak classes of ``confusion`` (``pss`` convention); NaN without one."""
    if confusion is None:
        return dict.fromkeys(SOURCE_GROUPS, math.nan)
    groups = group_miou(confusion, strong)
    return {"all": groups.all, "strong": groups.strong, "weak": groups.weak}


def per_seed_values(cells: Sequence[Cell], plan: Plan, rows: Sequence[RowSpec], users: Sequence[str],
                    seeds: Sequence[int], scores: _Scores) -> dict[tuple[str, int], dict[str, float]]:
    """(row key, seed) -> column -> value in %: ``source val all|strong|weak``, each user's mIoU, and each of them
    as ``... (% of full)`` against ``full``'s value on the same classes and seed. NaN where a run is missing."""
    done = {(c.row, c.user, c.seed): c for c in cells if c.status == Status.DONE and c.run_id}
    out: dict[tuple[str, int], dict[str, float]] = {}
    for seed in seeds:
        full_run = plan.sources.get(seed)
        full_sv = scores.source_val_confusion(full_run) if full_run is not None else None
        full_users = {u: scores.user_confusion(done[("full", u, seed)].run_id or "")
                      if ("full", u, seed) in done else None for u in users}
        for row in rows:
            if row.key == "full":
                strong = half_split(plan, seed, scores)
                sv, per_user = full_sv, full_users
            else:
                shared = plan.shared.get((row.key, seed))
                if shared is None:
                    continue
                split = scores.report(shared.run_id).get("split") or {}
                strong = split.get("strong") or [0]
                sv = scores.source_val_confusion(shared)
                per_user = {u: scores.user_confusion(done[(row.key, u, seed)].run_id or "")
                            if (row.key, u, seed) in done else None for u in users}
            values: dict[str, float] = {}
            mine, reference = _groups(sv, strong), _groups(full_sv, strong)
            for group in SOURCE_GROUPS:
                values[f"source val {group}"] = mine[group] * 100
                values[f"source val {group} (% of full)"] = _ratio(mine[group], reference[group])
            for user in users:
                value = _groups(per_user[user], strong)["all"]
                values[user] = value * 100
                values[f"{user} (% of full)"] = _ratio(value, _groups(full_users[user], strong)["all"])
            out[(row.key, seed)] = values
    return out


def half_split(plan: Plan, seed: int, scores: _Scores) -> Sequence[int]:
    """The strong classes of the seed's 50 % rows (from their run's report), for the fully supervised row's strong /
    weak columns; the 50 % split that seed draws when neither row ran."""
    for key in ("half", "half_lnet"):
        shared = plan.shared.get((key, seed))
        strong = (scores.report(shared.run_id).get("split") or {}).get("strong") if shared is not None else None
        if strong:
            return [int(c) for c in strong]
    return choose_strong_classes(fraction=0.5, seed=seed)


def training_seconds(plan: Plan) -> float:
    """The recorded durations of the distinct runs behind the table (the fully supervised and transfer runs, as
    long as each took when it was trained, reused or not; evaluations of them on other users excluded)."""
    records = {r.run_id: r for r in [*plan.sources.values(), *plan.shared.values()] if r is not None}
    return sum(r.duration_s or 0.0 for r in records.values())


def _ratio(value: float, reference: float) -> float:
    """``value / reference`` in %; NaN when either is missing or the reference is 0."""
    if math.isnan(value) or math.isnan(reference) or reference <= 0:
        return math.nan
    return value / reference * 100


def columns(users: Sequence[str]) -> list[str]:
    """The table's columns: the mIoU (source val groups, users), then each as % of the fully supervised."""
    plain = [f"source val {g}" for g in SOURCE_GROUPS] + list(users)
    return plain + [f"{c} (% of full)" for c in plain]


def summarise(values: dict[tuple[str, int], dict[str, float]], rows: Sequence[RowSpec],
              users: Sequence[str]) -> tuple[Any, Any]:
    """Mean and sample std (ddof 1; NaN with one seed) over seeds per row label and column."""
    import pandas as pd

    cols = columns(users)
    means, stds = {}, {}
    for row in rows:
        per_seed = [v for (key, _), v in values.items() if key == row.key]
        series = {c: np.asarray([v[c] for v in per_seed if not math.isnan(v[c])], dtype=float) for c in cols}
        means[row.label] = [float(s.mean()) if len(s) else math.nan for s in series.values()]
        stds[row.label] = [float(s.std(ddof=1)) if len(s) > 1 else math.nan for s in series.values()]
    return (pd.DataFrame.from_dict(means, orient="index", columns=cols),
            pd.DataFrame.from_dict(stds, orient="index", columns=cols))


def _text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def write_transfer(result: TransferResult, rows: Sequence[RowSpec], opts: TransferOptions, steps: int,
                   seeds: Sequence[int]) -> str:
    """``transfer.csv`` (each column's mean and ``<column> std``), ``cells.csv`` and ``transfer.md``; returns the
    Markdown."""
    import pandas as pd

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    table, std = result.table, result.std
    both = pd.concat({"mean": table, "std": std}, axis=1)
    both.columns = [c if kind == "mean" else f"{c} std" for kind, c in both.columns]
    both.index.name = "row"
    both.round(2).to_csv(out / f"{TRANSFER}.csv")
    labels = {r.key: r.label for r in rows}
    pd.DataFrame([{"row": labels.get(c.row, c.row), "key": c.row, "user": c.user, "seed": c.seed,
                   "run_id": c.run_id, "status": c.status, "action": c.action,
                   "miou": None if c.miou is None else round(c.miou * 100, 2),
                   "seconds": None if c.seconds is None else round(c.seconds), "note": c.note}
                  for c in result.cells]).to_csv(out / "cells.csv", index=False)
    users = [c for c in table.columns if not c.startswith("source val") and not c.endswith("(% of full)")]
    plain = [f"source val {g}" for g in SOURCE_GROUPS] + users

    def markdown(cols: list[str], title: str) -> list[str]:
        frame = pd.DataFrame({c.replace(" (% of full)", ""): [_text(table.loc[r, c], std.loc[r, c])
                                                                for r in table.index] for c in cols},
                             index=pd.Index(table.index, name="row"))
        return [f"## {title}", "", api.table_to_markdown(frame), ""]

    spread = " (mean ± sample std over seeds)" if len(seeds) > 1 else ""
    lines = [f"# Transfer from strong to weak classes (`pss experiment {TRANSFER}`)", "",
             f"Preset `{opts.preset}`; every row trains from the preset's initialisation on the source only; the "
             f"fully supervised row is `source_only` for {steps} steps, each transfer row's final P-Net trains "
             f"{steps} steps; seeds {list(seeds)}{spread}; tag `{opts.tag}`, written "
             f"{time.strftime('%Y-%m-%d %H:%M')}." + (f" Transfer-row settings: `{' '.join(opts.overrides)}`."
                                                      if opts.overrides else ""), "",
             *markdown(plain, "mIoU (%)"),
             *markdown([f"{c} (% of full)" for c in plain], "% of the fully supervised mIoU (same classes, same seed)")]
    paper = []
    for key, percent in PAPER.items():
        label = labels.get(key)
        if label in table.index:
            ours = table.loc[label, "source val all (% of full)"]
            paper.append(f"{label}: {_text(ours, std.loc[label, 'source val all (% of full)'])} % of the fully "
                         f"supervised source-val mIoU here; the abstract reports {percent} % (VOC 2012 val)")
    if not paper:
        paper.append(f"the abstract reports {PAPER['half']} % (50 % strong) and {PAPER['zero']} % (0 % strong) of "
                     "the fully supervised mIoU with L-Net + P-Net on VOC 2012 val; no such row was run here")
    notes = [*paper,
             "Strong / weak columns: background counts as strong; the 50 % rows draw their strong classes with "
             "split_seed = the seed; the fully supervised row's strong / weak columns use that 50 % split; each "
             "% is against the fully supervised mIoU on the same classes (0 % rows: strong = background alone).",
             "The source val is the source's held-out split (never trained on); the users' images are another "
             "domain (each user's all-class mIoU).",
             MIOU_NOTE, *dict.fromkeys(result.notes)]
    if result.failed:
        notes.append("Not done (empty cells): " + "; ".join(result.failed))
    notes.append(f"{len(result.cells)} cells; {result.trained} runs trained, resumed or evaluated by this invocation "
                 f"in {result.seconds / 60:.1f} min; the rest reused. The runs behind the table took "
                 f"{result.training_s / 60:.1f} min of training and scoring as recorded (one process each). "
                 "Per-cell runs: `cells.csv`.")
    lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    (out / f"{TRANSFER}.md").write_text(text)
    return text


__all__ = ["PAPER", "ROWS", "ROW_KEYS", "TransferOptions", "TransferResult", "run_transfer_experiment",
           "transfer_rows"]
