"""Compare several finished runs of one user against the ground truth: plain functions behind the Compare tab.

The engine (``pss.api.compare``) draws the Fig. 4-style figure and computes the tables; this module checks the
choices coming from the page, formats captions and the error legend, and filters the per-image table.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from pss.api import Workspace
from pss.api.compare import (Comparison, compare_image, export_tables, image_differences, per_class_table,
                             results_for_runs)
from pss.api.maps import ERROR_COLOURS, ERROR_NAMES
from pss.api.users import MASK_TRAINING
from pss.errors import DatasetError

FILTERS = ("all images", "B better", "A better", "tied")
MAX_RUNS = 6  # a figure row of 2 + N panels must still fit on a screen


def _check_runs(run_ids: Sequence[str] | None) -> list[str]:
    chosen = [r for r in (run_ids or []) if r]
    if not chosen:
        raise DatasetError("choose at least one finished run of this user to compare")
    if len(chosen) > MAX_RUNS:
        raise DatasetError(f"compare at most {MAX_RUNS} runs at once (got {len(chosen)})")
    return list(dict.fromkeys(chosen))


def error_legend_html() -> str:
    items = "".join(f"<span class='pss-legend-item'><span class='pss-swatch' style='background:rgb{colour}'>"
                    f"</span>{html.escape(ERROR_NAMES[c])}</span>" for c, colour in ERROR_COLOURS.items())
    dark = ("<span class='pss-legend-item'><span class='pss-swatch' style='background:#2a2a2a'></span>"
            "correct background (photo, darkened)</span>")
    return f"<div class='pss-legend'>{items}{dark}</div>"


@dataclass
class CompareView:
    comparison: Comparison
    scores: pd.DataFrame
    messages: str

    @property
    def figure(self) -> Path:
        return self.comparison.figure


def _pct(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value * 100, 2)


def compare_view(ws: Workspace, user: str, name: str, run_ids: Sequence[str] | None) -> CompareView:
    """The figure of image ``name`` for the chosen runs, a per-run score table and any per-run messages."""
    if not name:
        raise DatasetError("choose an image (labelled images have a ground truth and error maps)")
    comparison = compare_image(ws, user, name, _check_runs(run_ids))
    rows = []
    for panel in comparison.panels:
        errors = panel.errors
        total = max(1, sum(errors.values()))
        rows.append({"run": panel.run.short, "method": panel.run.method_label, "FIoU": _pct(panel.fiou),
                     "MIoU": _pct(panel.miou),
                     **{name: round(100 * count / total, 1) for name, count in errors.items()}})
    messages = "  \n".join(f"⚠ {p.run.short}: {p.message}" for p in comparison.panels if p.message)
    if comparison.mask_role == MASK_TRAINING:
        messages = (messages + "  \n" if messages else "") + (
            f"{name}: mask {MASK_TRAINING} (it is in annotated.txt, not val_all.txt): predictions are not scored "
            "against it.")
    elif not comparison.labelled:
        messages = (messages + "  \n" if messages else "") + f"{name} has no GT mask: predictions only."
    return CompareView(comparison, pd.DataFrame(rows), messages)


def image_table(ws: Workspace, user: str, run_a: str, run_b: str, metric: str = "FIoU",
                keep: str = "all images") -> pd.DataFrame:
    """The user's labelled images with run A's and run B's per-image score and ``B - A`` (largest first),
    filtered to where B wins, A wins, or they tie."""
    if not run_a or not run_b:
        raise DatasetError("choose run A and run B (among the runs being compared)")
    table = image_differences(ws, user, run_a, run_b, metric)
    diff = table["B - A"]
    if keep == "B better":
        table = table[diff > 0]
    elif keep == "A better":
        table = table[diff < 0].iloc[::-1]
    elif keep == "tied":
        table = table[diff == 0]
    elif keep != "all images":
        raise DatasetError(f"filter must be one of {', '.join(FILTERS)}, got {keep!r}")
    return table.reset_index(drop=True)


def tables(ws: Workspace, user: str, run_ids: Sequence[str] | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per-class IoU per run, FIoU table, MIoU table), the last two in the paper's layout."""
    chosen = _check_runs(run_ids)
    per_class = per_class_table(ws, user, chosen).reset_index(names="class")
    results = results_for_runs(ws, user, chosen)
    return (per_class, results["FIoU"].reset_index(names="method"), results["MIoU"].reset_index(names="method"))


def export(ws: Workspace, user: str, run_ids: Sequence[str] | None, run_a: str | None, run_b: str | None,
           metric: str = "FIoU") -> list[str]:
    """CSV files of every table (paths inside the workspace, served for download)."""
    chosen = _check_runs(run_ids)
    return [str(p) for p in export_tables(ws, user, chosen, run_a or None, run_b or None, metric)]
