"""Each row's gain over its control ("No-DA continued", same start, steps, schedule, data and seed) and over the
start (the No-DA row), per user and over users, with paired-bootstrap 95 % intervals (``pss.experiments.stats``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from pss.data.pss_layout import read_user
from pss.experiments.stats import Gain, ImageScores, paired_bootstrap, run_image_scores
from pss.status import Status
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from pss.experiments.spec import Cell, RowSpec

START = "source_only"  # the key of the No-DA row: every row's start


def gain_tables(ws: Workspace, cells: Sequence["Cell"], rows: Sequence["RowSpec"], users: Sequence[str],
                start_seed: dict[int, int], resamples: int = 2000) -> dict[str, Any]:
    """``{"<metric> vs control" | "<metric> vs start": DataFrame}``: rows = shown rows with a control, columns =
    users + Mean; a cell is ``+gain [low, high]`` in points (``*`` when the interval excludes 0), empty when a run
    is missing. ``start_seed[seed]`` = the seed of the No-DA run the cells of ``seed`` started from."""
    import pandas as pd

    done = {(c.row, c.user, c.seed): c.run_id for c in cells if c.status == Status.DONE and c.run_id}
    seeds = sorted({c.seed for c in cells})
    scores: dict[str, ImageScores] = {}
    records = {u: read_user(ws.personal, u).records for u in users}

    def load(run_id: str, user: str) -> ImageScores:
        if run_id not in scores:
            scores[run_id] = run_image_scores(ws.store().open_run(run_id).dir, records[user])
        return scores[run_id]

    def pairs(row: str, against: str, user: str, against_seed: dict[int, int]) -> list[tuple[ImageScores,
                                                                                            ImageScores]] | None:
        found = []
        for seed in seeds:
            a, b = done.get((row, user, seed)), done.get((against, user, against_seed[seed]))
            if a is None or b is None:
                return None
            found.append((load(a, user), load(b, user)))
        return found

    same = {s: s for s in seeds}
    tables: dict[str, Any] = {}
    for metric in ("FIoU", "MIoU"):
        for name, against_of, seed_map in (("control", lambda r: r.control, same),
                                           ("start", lambda r: START, start_seed)):
            frame: dict[str, list[str | None]] = {}
            for row in rows:
                if not row.control:
                    continue
                per_user = [pairs(row.key, against_of(row), u, seed_map) for u in users]
                values: list[str | None] = [
                    None if p is None else paired_bootstrap([p], metric, resamples).text() for p in per_user]
                joint: Gain | None = (paired_bootstrap([p for p in per_user if p is not None], metric, resamples)
                                      if all(p is not None for p in per_user) and per_user else None)
                frame[row.label] = [*values, None if joint is None else joint.text()]
            tables[f"{metric} vs {name}"] = pd.DataFrame.from_dict(frame, orient="index",
                                                                   columns=[*users, "Mean"])
    return tables

