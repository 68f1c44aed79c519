"""`pss experiment`: row selection, mean ± std over seeds, and the runner on a tiny demo workspace (real 1-step runs):
the tables have the paper's rows and columns, a second invocation trains nothing, an interrupted run is resumed."""
from __future__ import annotations

from pathlib import Path

import pytest

from pss.api import runs as api
from pss.data.demo import DemoConfig, generate_demo
from pss.errors import ConfigError
from pss.experiments import ExperimentOptions, run_experiment, select_rows
from pss.experiments.reuse import ensure_run
from pss.workspace import Workspace


def test_select_rows_pulls_in_first_stages() -> None:
    shown, needed = select_rows("table1", None)
    assert [r.label for r in shown] == ["No-DA", "No-DA continued", "No-DA continued (group context)", "AdaptSeg",
                                        "MaxSquare", "FDA", "ADVENT", "MRNet", "OURS-S1", "OURS-S2"]
    assert [r.key for r in needed] == ["source_only", "noda_cont", "noda_cont_group", "adaptseg", "maxsquare", "fda",
                                       "advent", "mrnet_s1", "mrnet", "pss", "pss_s2"]
    shown, needed = select_rows("table1", ["pss_s2", "fda_ssl"])
    assert [r.key for r in shown] == ["fda_ssl", "pss_s2"]
    # second stages pull in their first stage, every row its control
    assert [r.key for r in needed] == ["noda_cont", "noda_cont_group", "fda", "fda_ssl", "pss", "pss_s2"]
    assert [r.label for r in select_rows("table4", None)[0]] == ["No-DA", "No-DA continued (group context)", "1",
                                                                 "10", "80", "200", "auto"]
    with pytest.raises(ConfigError, match="its rows: source_only, noda_cont, .*none, global, group, random"):
        select_rows("table3", ["ours"])
    with pytest.raises(ConfigError, match="table1 = Tables 1 and 2"):
        select_rows("table2", None)


def test_seed_tables_mean_and_std_by_hand() -> None:
    cells = [dict(row="A", user="id1", seed=1, FIoU=0.50, MIoU=None), dict(row="A", user="id2", seed=1, FIoU=0.70),
             dict(row="A", user="id1", seed=2, FIoU=0.60), dict(row="A", user="id2", seed=2, FIoU=0.90)]
    table = api.seed_tables(cells, ["A", "B"], ["id1", "id2"], metrics=("FIoU",))["FIoU"]
    # id1: mean(50, 60) = 55, sample std = 7.07; Mean per seed: 60 and 75 -> 67.5 ± 10.61
    assert table.loc["A"].tolist() == ["55.00 ± 7.07", "80.00 ± 14.14", "67.50 ± 10.61"]
    assert table.loc["B"].isna().all()
    single = api.seed_tables(cells[:2], ["A"], ["id1", "id2"])
    assert single["FIoU"].loc["A"].tolist() == [50.0, 70.0, 60.0]
    assert single["MIoU"].loc["A"].isna().all()  # a missing value leaves the cell (and the Mean) empty


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("experiment-ws")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=2, images_per_user=12))
    return Workspace(root)


def _options(table: str, methods: list[str], users: list[str] | None = None, jobs: int = 1) -> ExperimentOptions:
    return ExperimentOptions(table=table, users=users, methods=methods, steps=1, source_steps=1, preset="tiny",
                             device="cpu", jobs=jobs, console=False)


def test_table1_runs_reuses_and_writes_the_paper_layout(workspace: Workspace) -> None:
    said: list[str] = []
    # two users in two worker processes (the shared No-DA run is trained first, in this process)
    first = run_experiment(workspace, _options("table1", ["source_only", "mrnet"], jobs=2), said.append)
    assert not first.failed
    fiou = first.tables["FIoU"]
    assert fiou.index.tolist() == ["No-DA", "MRNet"] and fiou.columns.tolist() == ["id1", "id2", "Mean"]
    assert fiou.notna().all().all() and first.tables["MIoU"].notna().all().all()
    cells = {(c.row, c.user): c for c in first.cells}
    assert cells[("source_only", "id1")].action == "shared"      # the shared No-DA run was evaluated on id1
    assert cells[("source_only", "id2")].action == "evaluated"   # an evaluation-only run on id2
    assert cells[("mrnet_s1", "id1")].action == "trained" and cells[("mrnet", "id1")].action == "trained"
    mrnet_s2 = workspace.store().open_run(cells[("mrnet", "id2")].run_id)
    assert mrnet_s2.config["train"]["init_from"] == cells[("mrnet_s1", "id2")].run_id
    no_da_id2 = workspace.store().open_run(cells[("source_only", "id2")].run_id)
    assert no_da_id2.latest_checkpoint() is not None and no_da_id2.read_report() is not None
    out = workspace.root / "experiments" / "table1"
    assert {p.name for p in out.iterdir()} == {"fiou.csv", "miou.csv", "cells.csv", "table1.md",
                                               *(f"gains_{m}_vs_{a}.csv" for m in ("fiou", "miou")
                                                 for a in ("control", "start"))}
    assert "| MRNet |" in (out / "table1.md").read_text()
    assert "1 steps per adaptation run, 1 steps per shared No-DA run" in (out / "table1.md").read_text()
    from dataclasses import replace

    from pss.experiments.tables import _start_text
    start = cells[("source_only", "id1")].run_id  # with --start the header names that run and its own length
    assert _start_text(workspace, replace(_options("table1", []), start=start), 99) == \
        f"every seed starts from the No-DA run `{start}` (1 steps)"
    runs_before = {r.run_id for r in workspace.store().list_runs()}
    # 1 shared No-DA + 1 evaluation-only, MRNet's control (No-DA continued: 1 run + 1 evaluation-only), 2 users x
    # (MRNet stage I, stage II)
    assert len(runs_before) == 8
    assert fiou.index.tolist() == ["No-DA", "MRNet"]  # the control is trained for the gains, not shown
    gain = first.gains["FIoU vs control"]
    assert gain.index.tolist() == ["MRNet"] and gain.notna().all().all() and "[" in gain.loc["MRNet", "Mean"]
    control = cells[("noda_cont", "id1")]
    assert workspace.store().open_run(control.run_id).config["train"]["init_from"] == cells[
        ("source_only", "id1")].run_id and cells[("noda_cont", "id2")].action == "evaluated"

    again = run_experiment(workspace, _options("table1", ["source_only", "mrnet"]), said.append)
    assert {r.run_id for r in workspace.store().list_runs()} == runs_before
    assert again.trained == 0 and {c.action for c in again.cells} <= {"reused", "shared"}
    assert again.tables["FIoU"].equals(fiou)


def test_table4_rows_with_the_same_effective_k_share_a_run(workspace: Workspace) -> None:
    result = run_experiment(workspace, _options("table4", ["k10", "k80", "auto"], users=["id1"]), lambda _: None)
    cells = {c.row: c for c in result.cells}
    k10, k80, auto = cells["k10"], cells["k80"], cells["auto"]
    # auto: K from the grid capped to 12 // 4 = 3, so 2 or 3, picked by silhouette; K=3 is the k10 run again
    chosen = [n for n in result.notes if n.startswith("auto: the silhouette rule chose K=")]
    assert len(chosen) == 1 and "on id1 (silhouette per K: 2: " in chosen[0]
    assert (auto.run_id == k10.run_id) == ("chose K=3 " in chosen[0]) and auto.status == "done"
    assert k10.action == "trained" and k80.action == "shared" and k80.run_id == k10.run_id
    # 12 images -> effective K = min(K, 12 // 4) = 3 for both
    assert "K=80 is capped to 3 groups on id1 (12 images; effective_k = min(K, images // 4))" in result.notes
    assert "K=80 and the row k10 give the same 3 groups on id1: one run serves both" in result.notes
    assert result.tables["FIoU"].index.tolist() == ["10", "80", "auto"]
    assert result.tables["FIoU"].loc["10", "id1"] == result.tables["FIoU"].loc["80", "id1"]


def test_an_interrupted_run_is_resumed_not_restarted(workspace: Workspace) -> None:
    config = api.make_config(workspace, "tiny", ["method.name=source_only", "train.steps=1", "tag=resume-test",
                                                 "data.user=id2"])
    record, action = ensure_run(workspace, config, "cpu", console=False)
    assert action == "trained" and record.status == "done"
    workspace.store().open_run(record.run_id).set_status("cancelled")  # as if stopped after its last checkpoint
    record, action = ensure_run(workspace, config, "cpu", console=False)
    assert action == "resumed" and record.status == "done"
    assert ensure_run(workspace, config, "cpu", console=False)[1] == "reused"
    assert len(workspace.store().list_runs(search="resume-test")) == 1
