"""The engine side of the app's Compare view: several finished runs of one user against the ground truth.

Predictions come from each run's saved ``predictions/<name>.png`` (written by the final evaluation for every
image of the user); only when that file is missing is the run's model asked (``image_inference``). Per-image
scores come from ``report.json`` (computed here when the report lacks the image). Tables use the PSS
conventions of ``pss.metrics``: per-class IoU with absent classes = 0, FIoU per image averaged.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

import pss.api.maps as maps
from pss.api.data import file_key, load_image
from pss.api.inspect import image_inference
from pss.api.run_choice import RunChoice, done_runs
from pss.api.runs import results_tables
from pss.api.users import find_record, mask_role, user_records
from pss.data.labels import CLASS_NAMES, read_label_png
from pss.errors import DatasetError, PssError
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

COMPARE_VERSION = "c1"
METRICS = ("FIoU", "MIoU")


@dataclass
class RunPanel:
    """One run's column of the figure: its scores on the image and its pixel count per error category
    (keyed by ``maps.ERROR_SHORT`` names)."""

    run: RunChoice
    fiou: float | None
    miou: float | None
    errors: dict[str, int] = field(default_factory=dict)
    message: str = ""


@dataclass
class Comparison:
    """The Fig. 4-style figure of one image (PNG) and the per-run panels in figure order.

    ``labelled``: the image has a ground truth that is scored (an evaluation image). ``mask_role``: what its mask
    is (``pss.api.users.mask_role``): an image annotated for training shows its mask under that caption, unscored.
    """

    user: str
    name: str
    figure: Path
    labelled: bool
    panels: list[RunPanel]
    mask_role: str | None = None


def runs_by_id(ws: Workspace, user: str, run_ids: Sequence[str]) -> list[RunChoice]:
    """The finished runs of ``user`` named in ``run_ids`` (in that order); DatasetError for any other id."""
    known = {r.run_id: r for r in done_runs(ws, user)}
    unknown = [r for r in run_ids if r not in known]
    if unknown:
        raise DatasetError(f"{', '.join(map(str, unknown))}: not a finished run of user {user!r}; pick runs "
                           f"from the list (finished runs of this user)")
    return [known[r] for r in run_ids]


def image_scores(ws: Workspace, run_id: str) -> dict[str, tuple[float, float]]:
    """{image name: (FIoU, MIoU)} of a run's labelled images from its report (MIoU: the report's per-image
    convention, "present"); empty when the run has no report."""
    report = ws.store().open_run(run_id).read_report() or {}
    return {i["name"]: (_nan(i.get("fiou")), _nan(i.get("miou"))) for i in report.get("images", [])}


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def run_prediction(ws: Workspace, run_id: str, name: str, device: str = "auto") -> np.ndarray:
    """A run's label map of image ``name``: the saved prediction PNG, else the model's (cached) inference."""
    path = ws.store().open_run(run_id).predictions_dir / f"{name}.png"
    if path.is_file():
        return read_label_png(path)
    inference = image_inference(ws, run_id, name, device)
    height, width = inference._image_size()  # the label may be at the bounded map size (pss.inference.MAX_MAP_SIDE)
    return maps.resize_label(inference.label, (width, height))


def score_image(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(FIoU, MIoU "present") of one image, as the run reports compute them."""
    from pss.metrics import foreground_iou, per_image_iou

    return foreground_iou(pred, target), per_image_iou(pred, target, "present")


def _panel_size(width: int, height: int) -> maps.DisplaySize:
    """Panels of the figure: long side 256..480 (a row of N + 2 panels must fit a screen)."""
    long_side = max(width, height)
    scale = float(math.ceil(256 / long_side)) if long_side < 256 else min(1.0, 480 / long_side)
    return maps.DisplaySize.scaled(width, height, scale)


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.1f}"


def compare_image(ws: Workspace, user: str, name: str, run_ids: Sequence[str], device: str = "auto") -> Comparison:
    """The image, its GT and each run's prediction side by side at the same size, each titled with its FIoU /
    MIoU on this image, and an error map under each prediction (when the image is labelled).

    A run whose prediction cannot be produced (no saved map, and no usable checkpoint) gets an empty panel
    and a message instead of failing the whole figure.
    """
    runs = runs_by_id(ws, user, run_ids)
    record = find_record(user_records(ws, user), name, user)
    # only an evaluation image's mask is scored (ImageRecord.eval_mask); a training annotation is shown, unscored
    target = read_label_png(record.eval_mask) if record.eval_mask is not None else None
    training = read_label_png(record.mask_path) if record.mask_path is not None and target is None else None
    columns = [(run, *_run_panel(ws, run, name, target, device)) for run in runs]
    role = mask_role(record)
    keys = [name, COMPARE_VERSION, file_key(record.image_path),
            file_key(record.mask_path) if record.mask_path is not None else "-", role or "-"]
    for run, panel, pred in columns:
        keys += [run.run_id, panel.message, "-" if pred is None else hashlib.blake2b(pred.tobytes()).hexdigest()]
    key = hashlib.blake2b("|".join(keys).encode(), digest_size=10).hexdigest()
    out = Path(ws.cache) / "compare" / user / f"{name}-{key}.png"
    if not out.exists():
        maps.save_png(_figure(record, target, columns, user, training), out)
    return Comparison(user, name, out, target is not None, [panel for _, panel, _ in columns], role)


def _figure(record: Any, target: np.ndarray | None, columns: list, user: str,
            training: np.ndarray | None = None) -> np.ndarray:
    """Row 1: photo, GT (or the training annotation, captioned as not scored), each run's prediction; row 2
    (evaluation images only): each run's error map."""
    photo = load_image(record.image_path)
    for mask in (target, training):
        if mask is not None and mask.shape != photo.shape[:2]:
            raise DatasetError(f"the mask {record.mask_path} does not match its image's size "
                               f"{photo.shape[1]}×{photo.shape[0]}; fix the mask (pss doctor lists such files)")
    size = _panel_size(photo.shape[1], photo.shape[0])
    shown = (size.width, size.height)
    small = maps.resize_rgb(photo, shown)
    gt = maps.resize_label(target, shown) if target is not None else None
    top: list[np.ndarray | None] = [maps.titled(small, [record.name, f"{user} · photo"]),
                                    maps.titled(maps.label_overlay(small, gt, 1.0), ["ground truth", ""])
                                    if gt is not None else None]
    if training is not None:
        shown_mask = maps.resize_label(training, shown)
        top[1] = maps.titled(maps.label_overlay(small, shown_mask, 1.0), ["annotated for training", "not scored"])
    bottom: list[np.ndarray | None] = [None, None]
    for run, panel, pred in columns:
        if pred is None:
            top.append(maps.titled(np.full_like(small, 235), [run.short, "no prediction"]))
            bottom.append(None)
            continue
        scores = (f"FIoU {_pct(panel.fiou)} · MIoU {_pct(panel.miou)}" if gt is not None else
                  "training image: not scored" if training is not None else "no GT for this image")
        top.append(maps.titled(maps.label_overlay(small, maps.resize_label(pred, shown), 1.0), [run.short, scores]))
        if target is None or gt is None:  # gt is target resized: both or neither
            bottom.append(None)
            continue
        bottom.append(maps.titled(maps.error_colours(maps.resize_label(maps.error_categories(pred, target), shown),
                                                     gt, small), [f"errors · {run.short}", ""]))
    return maps.grid([top, bottom] if gt is not None else [top])


def _run_panel(ws: Workspace, run: RunChoice, name: str, target: np.ndarray | None,
               device: str) -> tuple[RunPanel, np.ndarray | None]:
    try:
        pred = run_prediction(ws, run.run_id, name, device)
    except PssError as exc:  # missing checkpoint / other format: say so in this run's panel only
        return RunPanel(run, None, None, message=str(exc)), None
    if target is None:
        return RunPanel(run, None, None), pred
    if pred.shape != target.shape:
        return RunPanel(run, None, None, message=f"prediction of {run.run_id} is {pred.shape[1]}×{pred.shape[0]}, "
                                                 f"the GT {target.shape[1]}×{target.shape[0]}"), None
    scores = image_scores(ws, run.run_id).get(name) or score_image(pred, target)
    categories = maps.error_categories(pred, target)
    counts = np.bincount(categories.ravel(), minlength=5)
    errors = {maps.ERROR_SHORT[c]: int(counts[c]) for c in maps.ERROR_SHORT}
    return RunPanel(run, scores[0], scores[1], errors), pred


def image_differences(ws: Workspace, user: str, run_a: str, run_b: str, metric: str = "FIoU") -> pd.DataFrame:
    """Per labelled image: the metric (%) under run A and run B and ``B - A``, largest gain of B first."""
    import pandas as pd

    if metric not in METRICS:
        raise DatasetError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    runs_by_id(ws, user, [run_a, run_b])
    column = METRICS.index(metric)
    a, b = image_scores(ws, run_a), image_scores(ws, run_b)
    names = [r.name for r in user_records(ws, user) if r.eval_mask is not None and r.name in a and r.name in b]
    rows = [(n, a[n][column] * 100, b[n][column] * 100) for n in names]
    table = pd.DataFrame(rows, columns=["image", "A", "B"], dtype=object)
    table[["A", "B"]] = table[["A", "B"]].astype(float).round(2)
    table["B - A"] = (table["B"] - table["A"]).round(2)
    return table.sort_values(["B - A", "image"], ascending=[False, True], kind="stable").reset_index(drop=True)


def per_class_table(ws: Workspace, user: str, run_ids: Sequence[str]) -> pd.DataFrame:
    """Per-class IoU (%, PSS convention) of each run on its user: rows classes + MIoU, columns runs."""
    import pandas as pd

    columns: dict[str, list[float]] = {}
    for run in runs_by_id(ws, user, run_ids):
        report = ws.store().open_run(run.run_id).read_report() or {}
        values = (report.get("per_class_iou") or {}).get("pss") or [None] * len(CLASS_NAMES)
        miou = (report.get("miou") or {}).get("pss")
        columns[run.short] = [math.nan if v is None else round(v * 100, 2) for v in values] + \
            [math.nan if miou is None else round(miou * 100, 2)]
    return pd.DataFrame(columns, index=[*CLASS_NAMES, "MIoU"])


def results_for_runs(ws: Workspace, user: str, run_ids: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The paper's Tables 1-2 layout (rows methods, columns users + Mean, %) for the methods of the chosen
    runs: the latest finished run of each (method, user) counts, as in ``results_tables``."""
    methods = sorted({run.method for run in runs_by_id(ws, user, run_ids)})
    return results_tables(ws, methods=methods)


def export_tables(ws: Workspace, user: str, run_ids: Sequence[str], run_a: str | None = None, run_b: str | None = None,
                  metric: str = "FIoU") -> list[Path]:
    """Write the Compare tables as CSV files under ``WS/cache/exports/`` and return their paths."""
    tables = {"per_class_iou": per_class_table(ws, user, run_ids)}
    for key, table in results_for_runs(ws, user, run_ids).items():
        tables[f"results_{key.lower()}"] = table
    if run_a and run_b:
        tables[f"images_{metric.lower()}_difference"] = image_differences(ws, user, run_a, run_b, metric)
    stamp = hashlib.blake2b("|".join([user, *run_ids, str(run_a), str(run_b), metric]).encode(),
                            digest_size=6).hexdigest()
    out_dir = Path(ws.cache) / "exports" / f"{user}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, table in tables.items():
        path = out_dir / f"{key}.csv"
        if key.startswith("images_"):
            table.to_csv(path, index=False)
        else:
            table.to_csv(path, index_label="class" if key == "per_class_iou" else "method")
        paths.append(path)
    return paths
