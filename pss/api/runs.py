"""The engine facade for configs, training runs, evaluation, prediction and results tables.

Used by the CLI, the app (the Runs / Inspect / Compare tabs) and notebooks. Plain values in and out.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pss.config import ExperimentConfig, build_config, resolve_config
from pss.status import Status
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from pss.engine.distributed import DistContext
    from pss.runs.execute import RunOutcome
    from pss.metrics import SegReport

# Rows of the paper's Tables 1-2, in the paper's order; methods not listed here come after them.
# The paper's MRNet row is MRNet's second (pseudo-label) stage with VOC supervision kept (paper §5.3).
METHOD_LABELS: dict[str, str] = {
    "source_only": "No-DA", "adaptseg": "AdaptSeg", "maxsquare": "MaxSquare", "fda": "FDA", "fda_ssl": "FDA-SSL",
    "advent": "ADVENT", "mrnet": "MRNet-S1", "mrnet_s2": "MRNet", "pss": "OURS-S1", "pss_s2": "OURS-S2",
}


def registered_methods() -> list[str]:
    """Names of every registered training method (the app's run form lists these)."""
    from pss.methods import METHODS

    return list(METHODS)


def make_config(ws: Workspace, preset: str | None = "demo", overrides: Sequence[str] = ()) -> ExperimentConfig:
    """A validated config whose data root defaults to the workspace's ``data/`` folder."""
    return build_config(preset, list(overrides), base={"data": {"root": str(ws.data)}})


def train(ws: Workspace, config: ExperimentConfig, device: str = "auto", run_id: str | None = None,
          console: bool = True, dist: DistContext | None = None) -> RunOutcome:
    """Train one run in this process. With ``run_id`` of an existing queued run (the app's job worker
    pre-creates runs), that run is used; otherwise a new run is created.

    ``dist``: this process's rank when ``torchrun`` started several (``pss.engine.distributed.init_from_env``):
    rank 0 creates the run and tells the others its id; all train it together."""
    from pss.engine.distributed import SINGLE, broadcast_text
    from pss.runs.execute import execute_run, prepare_run

    dist = dist or SINGLE
    store = ws.store()
    if dist.is_main:
        if run_id is not None and store.run_dir(run_id).exists():
            run = store.open_run(run_id)
        else:
            run = prepare_run(config, ws, device, run_id)
        run_id = run.run_id
    run = store.open_run(broadcast_text(run_id, dist))  # after rank 0 created it: the broadcast waits for that
    return execute_run(run, config, ws, device, console=console and dist.is_main, dist=dist)


def run_config(ws: Workspace, run_id: str) -> ExperimentConfig:
    """The resolved config saved with a run."""
    return resolve_config(ws.store().open_run(run_id).config)


def resume_run(ws: Workspace, run_id: str, device: str = "auto", console: bool = True,
               dist: DistContext | None = None) -> RunOutcome:
    """Continue a run from its latest checkpoint; the result equals an uninterrupted run (``dist``: as
    :func:`train`; every rank loads the checkpoint, so the run store must be shared by the nodes)."""
    from pss.engine.distributed import SINGLE
    from pss.runs.execute import execute_run

    dist = dist or SINGLE
    run = ws.store().open_run(run_id)
    return execute_run(run, run_config(ws, run_id), ws, device, resume=True, console=console and dist.is_main,
                       dist=dist)


def load_run_model(ws: Workspace, run_id: str, device: str = "auto"):
    """(model on device in eval mode, config, device) from a run's latest checkpoint."""
    from pss.engine.checkpoint import load_model_weights
    from pss.engine.device import resolve_device
    from pss.errors import CheckpointError
    from pss.models.segmenter import build_segmenter

    config = run_config(ws, run_id)
    checkpoint = ws.store().open_run(run_id).latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(f"run {run_id} has no checkpoint yet; wait for it to finish or train it again")
    torch_device = resolve_device(device)
    model = build_segmenter(config.model)
    load_model_weights(model, checkpoint)
    return model.to(torch_device).eval(), config, torch_device


def evaluate_run(ws: Workspace, run_id: str, user: str | None = None, device: str = "auto") -> SegReport:
    """Evaluate a run's model on its user (or ``user``), grouped as in training; nothing is written."""
    from pss.data.pss_layout import read_user
    from pss.engine.data import compute_groups
    from pss.engine.evaluate import EvalSettings, evaluate_records

    model, config, torch_device = load_run_model(ws, run_id, device)
    records = read_user(config.data.personal_path(), user or config.data.user).records
    groups = None
    if config.model.context.mode != "none":
        g = config.grouping
        groups = compute_groups(records, g.k, g.seed, g.feature_model, ws.cache, torch_device)
    # fp32 (no fast path), as before EvalSettings: `pss eval` may differ from the run's bf16 report in the last digits
    settings = EvalSettings(torch_device, config.data.eval_short_side, config.eval.batch_size)
    return evaluate_records(model, records, groups, settings)[0]


def predict_images(ws: Workspace, run_id: str, images: Sequence[Path], out_dir: Path,
                   device: str = "auto") -> list[Path]:
    """Predict arbitrary images (treated as one group) and write ``<name>.png`` + ``<name>_entropy.png``."""
    from pss.data.records import ImageRecord
    from pss.engine.evaluate import EvalSettings, predict_records, save_prediction

    model, config, torch_device = load_run_model(ws, run_id, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [ImageRecord(Path(p).stem, Path(p), None) for p in images]
    written: list[Path] = []
    settings = EvalSettings(torch_device, config.data.eval_short_side, config.eval.batch_size)
    for prediction in predict_records(model, records, None, settings):
        save_prediction(prediction, out_dir, out_dir)
        written.append(out_dir / f"{prediction.name}.png")
    return written


def delete_run(ws: Workspace, run_id: str) -> None:
    ws.store().delete_run(run_id)


def describe_run(ws: Workspace, run_id: str) -> str:
    """A human-readable summary of one run: its record, config summary and final scores."""
    run = ws.store().open_run(run_id)
    record = run.record
    lines = [f"run {record.run_id}", f"  user {record.user}  method {record.method}  status {record.status}  "
             f"device {record.device}", f"  steps {record.steps}/{record.total_steps}  dir {record.dir}"]
    if record.fiou is not None:  # a run can have a FIoU and no MIoU (pss.experiments.runner): show it as n/a
        miou = "n/a" if record.miou is None else f"{record.miou * 100:.2f}"
        lines.append(f"  FIoU {record.fiou * 100:.2f}  MIoU(pss) {miou}")
    checkpoint = run.latest_checkpoint()
    lines.append(f"  latest checkpoint: {checkpoint if checkpoint else 'none'}")
    lines.append("  config: " + json.dumps(run.config.get("method", {})))
    return "\n".join(lines)


def runs_table(ws: Workspace, user: str | None = None, method: str | None = None,
               status: str | None = None, search: str | None = None) -> pd.DataFrame:
    """All runs matching the filters, newest first, one row each."""
    import pandas as pd

    rows = [{"run_id": r.run_id, "user": r.user, "method": r.method, "status": r.status,
             "steps": f"{r.steps}/{r.total_steps}", "FIoU": _pct(r.fiou), "MIoU": _pct(r.miou),
             "duration_s": None if r.duration_s is None else round(r.duration_s), "device": r.device,
             "created": r.created}
            for r in ws.store().list_runs(user=user, method=method, status=status, search=search)]
    return pd.DataFrame(rows, columns=["run_id", "user", "method", "status", "steps", "FIoU", "MIoU",
                                       "duration_s", "device", "created"])


def _pct(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value * 100, 2)


def _method_order(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_LABELS if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_LABELS)


def results_tables(ws: Workspace, methods: Sequence[str] | None = None, users: Sequence[str] | None = None,
                   run_filter: Any = None) -> dict[str, pd.DataFrame]:
    """The paper's Tables 1-2 from finished runs: rows methods, columns users + Mean, values in %.

    The latest finished run of each (method, user) counts. ``run_filter(record) -> bool`` narrows the runs
    (e.g. to one experiment's tag). MIoU uses the PSS convention (21 classes, absent classes count 0).
    """
    import pandas as pd

    records = [r for r in ws.store().list_runs(status=Status.DONE) if r.fiou is not None]
    if run_filter is not None:
        records = [r for r in records if run_filter(r)]
    latest: dict[tuple[str, str], Any] = {}
    for r in sorted(records, key=lambda r: r.created):
        if r.user is not None:  # a run without a user has no column in these per-user tables
            latest[(r.method, r.user)] = r
    all_users = sorted({u for _, u in latest}, key=lambda u: (len(u), u))
    use_users = [u for u in all_users if not users or u in users]
    use_methods = _method_order([m for m in {m for m, _ in latest} if not methods or m in methods])
    tables: dict[str, pd.DataFrame] = {}
    for metric, attr in (("FIoU", "fiou"), ("MIoU", "miou")):
        data = {METHOD_LABELS.get(m, m): [_pct(getattr(latest[(m, u)], attr)) if (m, u) in latest else None
                                          for u in use_users] for m in use_methods}
        table = pd.DataFrame.from_dict(data, orient="index", columns=use_users, dtype=float)
        table["Mean"] = table.mean(axis=1).round(2)
        tables[metric] = table
    return tables


def table_to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    header = f"| {table.index.name or 'method'} | " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    body = ["| " + str(index) + " | " + " | ".join(_cell_text(v) for v in row) + " |"
            for index, row in table.iterrows()]
    return "\n".join([header, rule, *body])


def _cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def format_report(report: SegReport) -> str:
    """A few lines: FIoU, MIoU under both named conventions, and the per-class IoU (PSS convention)."""
    lines = [f"{report.num_images} labelled images",
             f"FIoU {report.fiou * 100:.2f}   MIoU(pss: 21 classes, absent = 0) {report.miou['pss'] * 100:.2f}   "
             f"MIoU(present: nan-mean) {report.miou['present'] * 100:.2f}"]
    for name, iou in zip(report.class_names, report.per_class_iou["pss"], strict=True):  # one IoU per class
        lines.append(f"  {name:<12} {iou * 100:6.2f}")
    return "\n".join(lines)


def seed_tables(cells: Sequence[dict[str, Any]], rows: Sequence[str], users: Sequence[str],
                metrics: Sequence[str] = ("FIoU", "MIoU")) -> dict[str, pd.DataFrame]:
    """Tables in the paper's layout (rows, columns users + Mean, values in %) from per-seed cells.

    ``cells``: dicts with ``row``, ``user``, ``seed`` and a fraction (0..1, or None) per metric name. With one seed a
    cell is its value; with several it is ``"mean ± std"`` over seeds (sample std, ddof 1). The Mean column is the
    mean over users computed per seed, then ``mean ± std`` over seeds (so its std is the seed-to-seed spread of the
    table mean, not the spread across users). Missing values stay empty; a Mean needs every user of its row.
    """
    import numpy as np
    import pandas as pd

    seeds = sorted({c["seed"] for c in cells})
    tables: dict[str, pd.DataFrame] = {}
    for metric in metrics:
        values = {(c["row"], c["user"], c["seed"]): None if _pct(c.get(metric)) is None else c[metric] * 100
                  for c in cells}
        frame: dict[str, list[Any]] = {}
        for row in rows:
            per_user = [[values.get((row, u, s)) for s in seeds] for u in users]
            per_seed_mean = [None if any(per_user[i][j] is None for i in range(len(users))) or not users
                             else float(np.mean([per_user[i][j] for i in range(len(users))]))
                             for j in range(len(seeds))]
            frame[row] = [_mean_std(v) for v in per_user] + [_mean_std(per_seed_mean)]
        tables[metric] = pd.DataFrame.from_dict(frame, orient="index", columns=[*users, "Mean"])
    return tables


def _mean_std(values: Sequence[float | None]) -> float | str | None:
    """One seed: the value rounded to 2 decimals; several: ``"m ± s"``; any missing seed: None."""
    import numpy as np

    present = [v for v in values if v is not None]
    if not values or len(present) < len(values):
        return None
    if len(present) == 1:
        return round(float(present[0]), 2)
    return f"{np.mean(present):.2f} ± {np.std(present, ddof=1):.2f}"
