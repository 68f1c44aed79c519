"""``pss experiment annotate-curve``: how much do a few annotated images help, and does the "annotate next" order
(uncertainty spread across k-means groups, tag mismatches first) beat random picks? A simulation on the demo.

Recipe, per user:

* **Pool** = the user's unlabelled images. The demo is synthetic and deterministic: its generator draws every
  image's label with the image and writes a mask only for the planned ~30 % (``pss.data.demo.hidden_user_labels``),
  so the pool's ground truth is regenerated exactly (checked against a stored mask), and "annotating" an image
  means revealing its hidden mask. Only the demo has hidden masks: on real data the command refuses.
* **Queues**: ``uncertainty`` = ``rank_queue`` with the start run's mean entropies on the user (its evaluation-only
  run, as the No-DA cell of the tables), the user's k-means groups (the grouping a group-context run of the preset
  computes) and tag mismatches between the user's tags and the start run's prediction; ``random`` = a shuffle
  seeded by the cell's seed (so the random baseline's spread covers which images were picked, not only training
  noise). The first ``count`` images of a queue are revealed; queues are prefixes, so 5 ⊂ 10 ⊂ 20 ⊂ 40.
* **Simulated user folders** (the real data folder is never written): ``WS/experiments/annotate-curve/sim/<user>/
  <order>-<count>/personal/<user>/`` holds links to the real images and evaluation masks, the real tags, a
  ``val_all.txt`` listing the real evaluation set, the revealed masks and an ``annotated.txt`` naming them. A cell's
  config points ``data.personal_root`` there, so the run trains on exactly those annotations and reads the same
  evaluation set; deleting ``sim/`` removes the simulation.
* **Cells**: ``count`` x ``order`` x seed, each a run of ``--method`` (default ``source_only``, i.e. the No-DA
  recipe continued) fine-tuned from ``--start`` for ``--steps`` steps with ``train.annotated_weight`` (count 0: the
  same run with weight 0, shared by both orders: the control). Scored on the user's evaluation set only (the honest
  splits: the revealed images are never scored). Cells are reused, resumed or trained by the tables' runner
  (``pss.experiments.runner``): resumable, ``--jobs`` over users. The source val is not scored in the cells
  (``data.voc_val_list=""``): the curve is about the user.

Writes ``WS/experiments/annotate-curve/``: ``curve.csv`` (mean, std and n over seeds per user, order, count),
``cells.csv``, ``queues.csv`` (each queue's order and why), ``annotate-curve.md`` and ``annotate-curve.png``.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pss.api import runs as api
from pss.config import ExperimentConfig
from pss.data.annotations import QUEUE_ORDERS, QueueItem, rank_queue, tag_mismatch, write_annotated
from pss.data.labels import read_label_png, write_label_png
from pss.data.pss_layout import TAG_FILES, UserCollection, read_user
from pss.errors import ConfigError, PssError
from pss.experiments.report import MIOU_NOTE
from pss.experiments.reuse import evaluation_run
from pss.experiments.runner import Plan, run_cells, table_users
from pss.experiments.spec import Cell, ExperimentOptions, RowSpec
from pss.runs.index import RunRecord
from pss.status import Status
from pss.workspace import Workspace

CURVE = "annotate-curve"
COUNTS: tuple[int, ...] = (0, 5, 10, 20, 40)
Say = Callable[[str], None]


@dataclass
class CurveOptions:
    """What to run (module docstring). ``start``: a finished run whose model every cell starts from (a converged
    context-free No-DA run); ``users``: default the start run's user; ``counts``: numbers of revealed images
    (0 = the control without annotations); ``weight``: ``train.annotated_weight`` of the cells with annotations;
    ``steps``: every cell's fine-tuning steps; ``seeds``: from the preset's ``train.seed`` up."""

    start: str
    users: list[str] | None = None
    counts: tuple[int, ...] = COUNTS
    orders: tuple[str, ...] = QUEUE_ORDERS
    steps: int = 50
    seeds: int = 3
    weight: float = 1.0
    method: str = "source_only"
    preset: str = "demo"
    device: str = "auto"
    tag: str = CURVE
    jobs: int | None = None
    console: bool = True

    def validate(self) -> None:
        if not self.counts or any(c < 0 for c in self.counts) or len(set(self.counts)) != len(self.counts):
            raise ConfigError(f"counts must be distinct numbers >= 0, got {list(self.counts)}")
        unknown = [o for o in self.orders if o not in QUEUE_ORDERS]
        if unknown or not self.orders:
            raise ConfigError(f"unknown order(s) {unknown}; use {', '.join(QUEUE_ORDERS)}")
        if self.steps < 1 or self.seeds < 1 or (self.jobs is not None and self.jobs < 1):
            raise ConfigError("steps, seeds and jobs must be >= 1")
        if self.weight <= 0:
            raise ConfigError(f"weight must be > 0 (it is train.annotated_weight of the annotated cells), got "
                              f"{self.weight:g}")


@dataclass
class CurveResult:
    curve: Any  # DataFrame: user, order, count, FIoU/MIoU mean and std (%), seeds
    cells: list[Cell]
    queues: dict[tuple[str, str, int | None], list[QueueItem]]
    out_dir: Path
    seconds: float
    trained: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _link(src: Path, dst: Path) -> None:
    """A symbolic link (no copy of the user's data); a copy where links are not allowed."""
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def simulate_user(user: UserCollection, folder: Path, revealed: Sequence[str], hidden: Path) -> Path:
    """Write a simulated copy of ``user`` at ``folder/personal/<user>/`` (never touching the real folder): links to
    its images and evaluation masks, its tag file, a ``val_all.txt`` of its evaluation set, the revealed images'
    hidden masks (from ``hidden/<name>.png``) and an ``annotated.txt`` naming them. Returns the personal root."""
    target = folder / "personal" / user.user
    annotated_list = "".join(f"{n}\n" for n in sorted(revealed))
    marker = folder / "revealed.txt"
    if marker.is_file() and marker.read_text() == annotated_list:
        return folder / "personal"  # already built for these images
    if folder.exists():
        shutil.rmtree(folder)
    (target / "SegmentationClass").mkdir(parents=True)
    _link(user.root / "JPEGImages", target / "JPEGImages")
    for name in TAG_FILES:
        if (user.root / name).is_file():
            shutil.copy2(user.root / name, target / name)
    evaluation = user.eval_set
    for record in evaluation:
        if record.mask_path is not None:  # always: the evaluation set is masked images
            _link(record.mask_path, target / "SegmentationClass" / f"{record.name}.png")
    suffixes = {r.name: r.image_path.suffix for r in user.records}
    (target / "val_all.txt").write_text("".join(
        f"/JPEGImages/{r.name}{suffixes[r.name]} /SegmentationClass/{r.name}.png\n" for r in evaluation))
    for name in revealed:
        _link(hidden / f"{name}.png", target / "SegmentationClass" / f"{name}.png")
    write_annotated(target, revealed, {r.name for r in evaluation}, suffixes)
    marker.write_text(annotated_list)
    return folder / "personal"


class Queues:
    """The reveal queues of one user: the uncertainty queue from the start run's predictions, a random one per
    seed. ``pool`` = the user's unlabelled images."""

    def __init__(self, ws: Workspace, opts: CurveOptions, start: RunRecord, user: UserCollection,
                 say: Say) -> None:
        self.ws, self.opts, self.user, self.say = ws, opts, user, say
        annotated = user.annotated
        self.pool = [r.name for r in user.unlabelled if r.name not in annotated]
        if max(opts.counts) > len(self.pool):
            raise ConfigError(f"{user.user} has {len(self.pool)} unlabelled images; counts go up to "
                              f"{max(opts.counts)}")
        config = api.make_config(ws, opts.preset)
        self.groups = self._groups(config)
        self.uncertainty: list[QueueItem] | None = None
        if "uncertainty" in opts.orders:
            self.uncertainty = self._uncertainty(start)

    def _groups(self, config: ExperimentConfig) -> dict[str, int]:
        """The user's k-means groups under the preset's grouping (what a group-context run computes; cached)."""
        from pss.engine.data import user_groups
        from pss.engine.device import resolve_device

        return user_groups(self.user.records, config.grouping, self.ws.cache, resolve_device(self.opts.device)).groups

    def _uncertainty(self, start: RunRecord) -> list[QueueItem]:
        """``rank_queue`` over the pool with the start model's mean entropies, groups and tag mismatches, from the
        start run evaluated on the user (its saved predictions and report)."""
        self.say(f"[{CURVE} {self.user.user}] the start run's predictions (entropy, tag mismatches)")
        record, _ = evaluation_run(self.ws, start, self.user.user, self.opts.tag, self.opts.device)
        run = self.ws.store().open_run(record.run_id)
        report = run.read_report() or {}
        entropy = {k: float(v) for k, v in (report.get("mean_entropy") or {}).items()}
        mismatch: dict[str, str] = {}
        by_name = {r.name: r for r in self.user.records}
        for name in self.pool:
            path = run.dir / "predictions" / f"{name}.png"
            if path.is_file():
                text = tag_mismatch(by_name[name].tags, read_label_png(path))
                if text:
                    mismatch[name] = text
        return rank_queue(self.pool, "uncertainty", entropy=entropy, groups=self.groups, tag_mismatch=mismatch)

    def queue(self, order: str, seed: int | None) -> list[QueueItem]:
        if order == "uncertainty":
            if self.uncertainty is None:
                raise ConfigError("the uncertainty queue was not built: add 'uncertainty' to the orders")
            return self.uncertainty
        return rank_queue(self.pool, "random", groups=self.groups, seed=int(seed or 0))


def sim_name(order: str, count: int, seed: int | None) -> str:
    """The simulated folder of one annotation set (count 0: one folder, no annotation, shared by every order)."""
    if count == 0:
        return "none"
    return f"{order}-{count}" if seed is None else f"{order}-s{seed}-{count}"


def curve_rows(opts: CurveOptions, sim_root: Path) -> list[RowSpec]:
    """One row per (order, count > 0), plus the count-0 control; ``{user}``/``{seed}`` filled in per cell."""
    common = ("data.voc_val_list=",)
    rows = [RowSpec("n0", "0", opts.method, (*common, "train.annotated_weight=0"),
                    per_cell=(f"data.personal_root={sim_root}/{{user}}/none/personal",))]
    for order in opts.orders:
        for count in sorted(c for c in opts.counts if c > 0):
            # the uncertainty queue is the same for every seed; the random one is drawn per seed
            folder = sim_name(order, count, None) if order == "uncertainty" else f"{order}-s{{seed}}-{count}"
            rows.append(RowSpec(f"{order}-{count}", f"{order} {count}", opts.method,
                                (*common, f"train.annotated_weight={opts.weight:g}"),
                                per_cell=(f"data.personal_root={sim_root}/{{user}}/{folder}/personal",)))
    return rows


def run_annotate_curve(ws: Workspace, opts: CurveOptions, say: Say = print) -> CurveResult:
    """Simulate, train (or reuse) every cell, write the curve (module docstring)."""
    from pss.data.demo import hidden_user_labels

    started = time.time()
    opts.validate()
    store = ws.store()
    start = store.open_run(opts.start).record
    if start.status != Status.DONE:
        raise PssError(f"--start run {opts.start} is {start.status}; give a finished No-DA run")
    if not opts.users and not start.user:
        raise ConfigError(f"run {opts.start} names no user; give --users")
    users = table_users(ws, opts.users, [start.user] if start.user else None)
    preset = api.make_config(ws, opts.preset)
    seeds = [preset.train.seed + i for i in range(opts.seeds)]
    out = ws.root / "experiments" / CURVE
    sim_root = out / "sim"
    queues: dict[tuple[str, str, int | None], list[QueueItem]] = {}
    for name in users:
        user = read_user(ws.personal, name)
        queue = Queues(ws, opts, start, user, say)
        hidden = sim_root / name / "hidden"
        hidden.mkdir(parents=True, exist_ok=True)
        todo = [n for n in queue.pool if not (hidden / f"{n}.png").is_file()]
        for image, label in hidden_user_labels(Path(preset.data.root), name, todo).items():
            write_label_png(hidden / f"{image}.png", label)
        simulate_user(user, sim_root / name / "none", [], hidden)
        for order in opts.orders:
            for seed in ([None] if order == "uncertainty" else seeds):
                items = queues[(name, order, seed)] = queue.queue(order, seed)
                for count in (c for c in opts.counts if c > 0):
                    simulate_user(user, sim_root / name / sim_name(order, count, seed),
                                  [i.name for i in items[:count]], hidden)
    rows = curve_rows(opts, sim_root)
    table_opts = ExperimentOptions(table=CURVE, users=users, steps=opts.steps, seeds=opts.seeds, start=opts.start,
                                   preset=opts.preset, device=opts.device, tag=opts.tag, jobs=opts.jobs or 1,
                                   console=opts.console)
    plan = Plan(table_opts, rows, opts.steps, opts.steps, users[0])
    runner = run_cells(ws, plan, users, seeds, say)
    curve = curve_table(runner.cells, opts)
    result = CurveResult(curve, runner.cells, queues, out, time.time() - started, runner.work,
                         [f"{c.row} / {c.user} / seed {c.seed}: {c.status}" for c in runner.cells
                          if c.status != Status.DONE], runner.notes)
    say(write_curve(result, opts, start.run_id, start.total_steps))
    return result


def curve_table(cells: Sequence[Cell], opts: CurveOptions) -> Any:
    """Mean, sample std (ddof 1) and n over seeds of FIoU and MIoU (%) per user, order and count; the count-0
    control appears under every order."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    done = [c for c in cells if c.status == Status.DONE]
    for order in opts.orders:
        for count in sorted(opts.counts):
            key = "n0" if count == 0 else f"{order}-{count}"
            for user in dict.fromkeys(c.user for c in cells):
                chosen = [c for c in done if c.row == key and c.user == user]
                row: dict[str, Any] = {"user": user, "order": order, "count": count, "seeds": len(chosen)}
                for metric, values in (("FIoU", [c.fiou for c in chosen]), ("MIoU", [c.miou for c in chosen])):
                    series = pd.Series([v * 100 for v in values if v is not None], dtype=float)
                    row[f"{metric}_mean"] = round(float(series.mean()), 2) if len(series) else None
                    row[f"{metric}_std"] = round(float(series.std(ddof=1)), 2) if len(series) > 1 else None
                rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(row: Any, metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean is None or mean != mean:
        return ""
    return f"{mean:.2f}" if std is None or std != std else f"{mean:.2f} ± {std:.2f}"


def write_curve(result: CurveResult, opts: CurveOptions, start: str, start_steps: int | None) -> str:
    """``curve.csv``, ``cells.csv``, ``queues.csv``, ``annotate-curve.md`` and ``annotate-curve.png``; returns the
    Markdown."""
    import pandas as pd

    from pss.experiments.plot import Panel, Series, save_chart

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    curve = result.curve
    curve.to_csv(out / "curve.csv", index=False)
    pd.DataFrame([{"row": c.row, "user": c.user, "seed": c.seed, "run_id": c.run_id, "status": c.status,
                   "action": c.action, "fiou": None if c.fiou is None else round(c.fiou * 100, 2),
                   "miou": None if c.miou is None else round(c.miou * 100, 2),
                   "seconds": None if c.seconds is None else round(c.seconds), "note": c.note}
                  for c in result.cells]).to_csv(out / "cells.csv", index=False)
    pd.DataFrame([{"user": user, "order": order, "seed": seed, "rank": rank + 1, "image": item.name,
                   "group": item.group, "mean_entropy": None if item.score != item.score else round(item.score, 4),
                   "reason": item.reason}
                  for (user, order, seed), items in result.queues.items()
                  for rank, item in enumerate(items[:max(opts.counts)])]).to_csv(out / "queues.csv", index=False)
    counts = sorted(opts.counts)
    users = list(dict.fromkeys(curve["user"]))
    seeds = sorted({c.seed for c in result.cells})
    lines = [f"# Label efficiency: {', '.join(users)} (`pss experiment {CURVE}`)", "",
             f"Every cell fine-tunes the start run `{start}` ({start_steps} steps) with `{opts.method}` for "
             f"{opts.steps} steps; cells with annotated images add `train.annotated_weight={opts.weight:g}`. Scored "
             f"on the user's evaluation images (val_all.txt) only; seeds {seeds} (mean ± sample std over seeds); "
             f"preset `{opts.preset}`, tag `{opts.tag}`, written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    for user in users:
        for metric in ("FIoU", "MIoU"):
            part = curve[curve["user"] == user]
            table = pd.DataFrame({order: [_mean_std(r, metric) for _, r in part[part["order"] == order]
                                          .sort_values("count").iterrows()] for order in opts.orders},
                                 index=pd.Index(counts, name="annotated images"))
            lines += [f"## {user}: {metric} (%)", "", api.table_to_markdown(table), ""]
    cpu = sum(c.seconds or 0.0 for c in result.cells if c.action in ("trained", "resumed"))
    notes = ["Pool: the user's unlabelled images; their masks are the demo generator's hidden ground truth "
             "(regenerated, checked against a stored mask). Queues: `uncertainty` = tag mismatches first, then mean "
             "entropy of the start model, spread across k-means groups; `random` = seeded per seed. The queues "
             "and why each image is where it is: `queues.csv`.",
             "The real user folder is never written: each annotation set is a simulated folder under "
             f"`experiments/{CURVE}/sim/` (links to the images and evaluation masks, the revealed masks, "
             "annotated.txt).",
             MIOU_NOTE,
             *dict.fromkeys(result.notes)]
    if result.failed:
        notes.append("Not done: " + "; ".join(result.failed))
    notes.append(f"{len(result.cells)} cells; {result.trained} runs trained or resumed by this invocation "
                 f"({cpu / 60:.1f} min of training runs), {result.seconds / 60:.1f} min in all; the rest reused.")
    lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    (out / f"{CURVE}.md").write_text(text)
    panels = []
    for user in users:
        part = curve[curve["user"] == user]
        for metric in ("FIoU", "MIoU"):
            series = []
            for order in opts.orders:
                rows = part[part["order"] == order].sort_values("count")
                series.append(Series(order, [_num(v) for v in rows[f"{metric}_mean"]],
                                     [_num(v) for v in rows[f"{metric}_std"]]))
            panels.append(Panel(f"{user}: {metric} (%)", [str(c) for c in counts], "annotated images", series))
    save_chart(out / f"{CURVE}.png", panels, f"{opts.steps} fine-tuning steps per cell; mean ± std over "
               f"{len(seeds)} seed(s)")
    return text


def _num(value: Any) -> float | None:
    return None if value is None or value != value else float(value)
