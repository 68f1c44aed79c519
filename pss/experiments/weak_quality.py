"""``pss experiment weak``: the user's tags as supervision, measured (issue 17).

Two outputs from one set of runs (users × seeds), every cell reused, resumed or trained by the tables' runner
(``pss.experiments.tables.run_experiment`` with the rows of ``TABLES["weak"]``, the tags pipelines given this
invocation's stage lengths):

* the Table-1-style rows "EPS (tags)" (``eps_seg``), "EPS + AffinityNet (tags)" (``eps_affinity``) and
  "OURS-S2 + tags" (``pss_s2`` with ``method.pseudo.restrict_to_tags=true``), next to No-DA, their controls
  (No-DA continued; OURS-S2) and the gains against them: ``fiou.csv``, ``miou.csv``, ``weak.md``, ``cells.csv``,
  ``gains_*.csv``, as every table;
* the pseudo-mask quality like the EPS reproduction report's Table 2: for each user, the mIoU/FIoU of the plain CAM's
  masks (``cam_plain``: the same classifier without the saliency loss; ``--no-cam-plain`` leaves it out), the EPS
  masks (``cam``: the CAM trained with the saliency loss) and the AffinityNet-refined masks (``refined``) against
  the user's evaluation masks, read from each ``eps_affinity`` run's ``report.json`` (``stage_quality``; that run
  contains the CAM and EPS stages), mean ± sample std over seeds: ``mask_quality.csv``, ``mask_quality.md``.

The masks are scored on the user's evaluation images only; those masks are never trained on (``pss.weak.eps_run``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pss.api import runs as api
from pss.errors import ConfigError
from pss.experiments.report import MIOU_NOTE
from pss.experiments.spec import Cell, ExperimentOptions, ExperimentResult, RowSpec
from pss.experiments.tables import TABLES, run_experiment
from pss.status import Status
from pss.workspace import Workspace

WEAK = "weak"
PIPELINE_ROWS = ("eps_seg", "eps_affinity")
#: mask stage -> its row in the mask-quality table (the report's Table 2 order)
MASK_STAGES: dict[str, str] = {"cam_plain": "CAM (no saliency loss)", "cam": "EPS (CAM + saliency)",
                               "refined": "EPS + AffinityNet (random walk)"}
Say = Callable[[str], None]


@dataclass
class WeakOptions:
    """What to run. ``start``: a finished context-free No-DA run every row and seed starts from (None: the tables'
    shared No-DA runs are trained); ``steps``: the segmenter stage's and every adaptation row's ``train.steps``
    (None: a third of the preset's, as every table); ``saliency_steps`` / ``cam_steps`` / ``affinity_steps``: the
    tags pipelines' stage lengths (None: the method's defaults); ``cam_plain``: the ``eps_affinity`` runs also train
    the plain CAM baseline (its masks are scored, never trained on); ``rows``: keys of ``TABLES["weak"]`` to show
    (None: its default rows)."""

    start: str | None = None
    users: list[str] | None = None
    seeds: int = 3
    steps: int | None = None
    saliency_steps: int | None = None
    cam_steps: int | None = None
    affinity_steps: int | None = None
    cam_plain: bool = True
    rows: list[str] | None = None
    preset: str = "demo"
    device: str = "auto"
    tag: str = WEAK
    jobs: int | None = None
    console: bool = True
    bootstrap: int = 2000

    def stage_overrides(self) -> tuple[str, ...]:
        out = []
        for name in ("saliency_steps", "cam_steps", "affinity_steps"):
            value = getattr(self, name)
            if value is not None:
                if value < 1:
                    raise ConfigError(f"{name} must be >= 1, got {value}")
                out.append(f"method.{name}={value}")
        return tuple(out)


def weak_rows(opts: WeakOptions) -> list[RowSpec]:
    """``TABLES["weak"]`` with this invocation's stage lengths on the pipeline rows (and the plain CAM on
    ``eps_affinity``'s, whose report the mask-quality table reads)."""
    extra = opts.stage_overrides()
    plain = ("method.cam_plain=true",) if opts.cam_plain else ()
    return [replace(r, overrides=(*r.overrides, *extra, *(plain if r.key == "eps_affinity" else ())))
            if r.method in PIPELINE_ROWS else r for r in TABLES[WEAK]]


@dataclass
class WeakResult:
    tables: ExperimentResult
    quality: Any  # DataFrame: user, stage, seeds, MIoU/FIoU mean and std (%)
    out_dir: Path


def run_weak(ws: Workspace, opts: WeakOptions, say: Say = print) -> WeakResult:
    """Train (or reuse) every cell, write the tables and the mask-quality table (module docstring)."""
    table_opts = ExperimentOptions(table=WEAK, users=opts.users, methods=opts.rows, steps=opts.steps,
                                   seeds=opts.seeds, start=opts.start, bootstrap=opts.bootstrap, preset=opts.preset,
                                   device=opts.device, tag=opts.tag, jobs=opts.jobs, console=opts.console)
    result = run_experiment(ws, table_opts, say, rows=weak_rows(opts))
    quality = mask_quality(ws, result.cells)
    say(write_mask_quality(result.out_dir, quality, opts, result))
    return WeakResult(result, quality, result.out_dir)


def stage_quality(ws: Workspace, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One entry per finished ``eps_affinity`` cell and mask stage: user, seed, stage, MIoU and FIoU (%), images."""
    store = ws.store()
    out = []
    for cell in cells:
        if cell.row != "eps_affinity" or cell.status != Status.DONE or cell.run_id is None:
            continue
        report = store.open_run(cell.run_id).read_report() or {}
        for stage, entry in (report.get("stage_quality") or {}).items():
            out.append({"user": cell.user, "seed": cell.seed, "stage": stage, "run_id": cell.run_id,
                        "MIoU": None if entry.get("miou") is None else entry["miou"] * 100,
                        "FIoU": None if entry.get("fiou") is None else entry["fiou"] * 100,
                        "images": entry.get("num_images")})
    return out


def mask_quality(ws: Workspace, cells: Sequence[Cell]) -> Any:
    """Mean, sample std (ddof 1) and n over seeds of each mask stage's MIoU and FIoU (%) per user."""
    import pandas as pd

    entries = stage_quality(ws, cells)
    rows: list[dict[str, Any]] = []
    for user in dict.fromkeys(e["user"] for e in entries):
        for stage in MASK_STAGES:
            chosen = [e for e in entries if e["user"] == user and e["stage"] == stage]
            if not chosen:
                continue
            row: dict[str, Any] = {"user": user, "stage": stage, "seeds": len(chosen),
                                   "images": chosen[0]["images"]}
            for metric in ("MIoU", "FIoU"):
                series = pd.Series([e[metric] for e in chosen if e[metric] is not None], dtype=float)
                row[f"{metric}_mean"] = round(float(series.mean()), 2) if len(series) else None
                row[f"{metric}_std"] = round(float(series.std(ddof=1)), 2) if len(series) > 1 else None
            rows.append(row)
    return pd.DataFrame(rows, columns=["user", "stage", "seeds", "images", "MIoU_mean", "MIoU_std", "FIoU_mean",
                                       "FIoU_std"])


def _mean_std(mean: Any, std: Any) -> str:
    if mean is None or mean != mean:
        return ""
    return f"{mean:.2f}" if std is None or std != std else f"{mean:.2f} ± {std:.2f}"


def write_mask_quality(out: Path, quality: Any, opts: WeakOptions, result: ExperimentResult) -> str:
    """``mask_quality.csv`` and ``mask_quality.md`` (rows EPS -> + AffinityNet, columns users); returns the
    Markdown."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    quality.to_csv(out / "mask_quality.csv", index=False)
    users = list(dict.fromkeys(quality["user"]))
    seeds = sorted({c.seed for c in result.cells})
    pipeline = next((r for r in weak_rows(opts) if r.key == "eps_affinity"), None)
    lengths = ", ".join(o.removeprefix("method.") for o in (pipeline.overrides if pipeline else ())
                        if "_steps=" in o) or "the method's default stage lengths"
    lines = ["# Pseudo-mask quality of the tags pipelines (`pss experiment weak`)", "",
             f"Each `eps_affinity` run's masks scored against the user's evaluation masks (val_all.txt; never "
             f"trained on); {lengths}; preset `{opts.preset}`, seeds {seeds} (mean ± sample std over seeds), tag "
             f"`{opts.tag}`, written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    for metric in ("MIoU", "FIoU"):
        table = pd.DataFrame({user: [_mean_std(*_values(quality, user, stage, metric)) for stage in MASK_STAGES]
                              for user in users}, index=pd.Index(list(MASK_STAGES.values()), name="pseudo masks"))
        lines += [f"## {metric} (%) of the pseudo masks", "", api.table_to_markdown(table), ""]
    notes = [MIOU_NOTE,
             "CAM = the C+1-map classifier trained with the classification loss alone; EPS = the same with the EPS "
             "saliency loss (τ 0.4, λ 0.5); both: multi-scale + flip CAMs restricted to each image's tags, "
             "background score 0.20, no dCRF; + AffinityNet = the EPS CAMs refined by the random walk (psa: β 8, "
             "t 256, α 16)." + ("" if opts.cam_plain else " The plain CAM was not trained (--no-cam-plain)."),
             "Images without tags are left out of every stage (each run's report lists them under `tags`)."]
    if quality.empty:
        notes.append("No finished eps_affinity cell: nothing to show (see cells.csv).")
    lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    (out / "mask_quality.md").write_text(text)
    return text


def _values(quality: Any, user: str, stage: str, metric: str) -> tuple[Any, Any]:
    part = quality[(quality["user"] == user) & (quality["stage"] == stage)]
    if part.empty:
        return None, None
    row = part.iloc[0]
    return row[f"{metric}_mean"], row[f"{metric}_std"]


__all__ = ["MASK_STAGES", "WEAK", "WeakOptions", "WeakResult", "mask_quality", "run_weak", "weak_rows"]
