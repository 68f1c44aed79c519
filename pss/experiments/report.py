"""Write an experiment's tables in the paper's layout (CSV + Markdown) and say what was done."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pss.api.runs import table_to_markdown

if TYPE_CHECKING:  # pragma: no cover
    from pss.experiments.spec import ExperimentOptions, ExperimentResult

TITLES: dict[str, dict[str, str]] = {
    "table1": {"FIoU": "FIoU (%) — the paper's Table 1", "MIoU": "MIoU (%) — the paper's Table 2"},
    "table3": {"FIoU": "FIoU (%) — the paper's Table 3 (group context ablation)", "MIoU": "MIoU (%)"},
    "table4": {"FIoU": "FIoU (%) — the paper's Table 4 (number of groups K)", "MIoU": "MIoU (%)"},
    "table5": {"FIoU": "FIoU (%) — the paper's Table 5 (training on mixed image sets)", "MIoU": "MIoU (%)"},
    # the user's tags as supervision (issue 17)
    "weak": {"FIoU": "FIoU (%) — Table 1 rows with the user's tags as supervision", "MIoU": "MIoU (%)"},
}
ROW_HEADERS: dict[str, str] = {"table1": "method", "table3": "context", "table4": "K", "table5": "training set",
                               "weak": "method"}
MIOU_NOTE = "MIoU uses the paper's convention: the mean over all 21 classes, a class absent from both counts 0."


def write_outputs(result: ExperimentResult, labels: dict[str, str], opts: ExperimentOptions, steps: int,
                  start: str) -> str:
    """Write ``fiou.csv``, ``miou.csv``, ``cells.csv`` and ``<table>.md`` to ``result.out_dir``; return the Markdown."""
    import pandas as pd

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for metric, table in result.tables.items():
        table.index.name = ROW_HEADERS[result.table]
        table.to_csv(out / f"{metric.lower()}.csv")
    pd.DataFrame([{"row": labels[c.row], "key": c.row, "user": c.user, "seed": c.seed, "run_id": c.run_id,
                   "status": c.status, "action": c.action,
                   "fiou": None if c.fiou is None else round(c.fiou * 100, 2),
                   "miou": None if c.miou is None else round(c.miou * 100, 2),
                   "seconds": None if c.seconds is None else round(c.seconds), "note": c.note}
                  for c in result.cells]).to_csv(out / "cells.csv", index=False)
    seeds = sorted({c.seed for c in result.cells})
    lines = [f"# {result.table}: {', '.join(TITLES[result.table])}",
             "",
             f"Preset `{opts.preset}`, {steps} steps per adaptation run, {start}, "
             f"seeds {seeds}"
             + (" (cells are mean ± sample std over seeds; Mean = mean over users per seed, then over seeds)"
                if len(seeds) > 1 else "") + f", tag `{opts.tag}`, written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    for metric, table in result.tables.items():
        lines += [f"## {TITLES[result.table][metric]}", "", table_to_markdown(table), ""]
    for name, table in result.gains.items():
        table.index.name = ROW_HEADERS[result.table]
        table.to_csv(out / f"gains_{name.lower().replace(' ', '_')}.csv")
        lines += [f"## Gain in {name} (points, 95 % paired-bootstrap interval; * = interval excludes 0)", "",
                  table_to_markdown(table), ""]
    if result.gains:
        lines += ["Controls (same start, steps, schedule, data and seed; they differ only in the adaptation "
                  "term): " + "; ".join(f"{row} vs {control}" for row, control in result.controls.items()) + ". "
                  "The start is the No-DA row. Intervals: resamples of each user's labelled images, shared by "
                  "both runs of a pair and by every seed; Mean = mean over users (images resampled per user). "
                  "The final checkpoint of every run is scored; no checkpoint is selected on the user's labels.",
                  ""]
    notes = [MIOU_NOTE, *dict.fromkeys(result.notes)]
    if result.failed:
        notes.append("Not done (empty cells): " + "; ".join(result.failed))
    notes.append(f"{len(result.cells)} cells; {result.trained} runs trained, resumed or evaluated by this invocation "
                 f"in {result.seconds / 60:.1f} min; the rest reused. Per-cell runs: `cells.csv`.")
    lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    (out / f"{result.table}.md").write_text(text)
    return text
