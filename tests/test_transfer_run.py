"""The transfer pipeline (issue 18) as one run of the run store (``pss.methods.transfer``, ``pss.weak.transfer_run``):
end to end on a tiny demo (status, run-directory layout, report entries, train events numbered over the pipeline,
one ``stage_end`` per training stage, the final P-Net as the run's checkpoint), the 0 % setting (no object map),
a SIGTERM between stages, and ``pss experiment transfer`` on a two-row, one-seed case."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from pss.api import runs as api
from pss.data.demo import DemoConfig, generate_demo
from pss.data.labels import CLASS_NAMES, IGNORE_INDEX, read_label_png
from pss.data.voc_layout import read_voc
from pss.engine.hooks import Hook
from pss.engine.trainer import Trainer
from pss.errors import ConfigError
from pss.methods import METHODS, build_method
from pss.methods.transfer import Transfer
from pss.runs.execute import execute_run, prepare_run
from pss.status import Status
from pss.workspace import Workspace

C = len(CLASS_NAMES)
FAST = ["method.name=transfer", "train.steps=2", "method.objectness_steps=3", "method.cam_steps=1",
        "method.cam_scales=[1.0]", "method.coarse_short_side=48", "method.ndf=4", "train.log_every=1",
        "train.amp=off", "train.channels_last=off"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transfer_demo")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=8, num_users=2, images_per_user=8,
                                                           long_side=96))
    return root


@pytest.fixture()
def ws(demo: Path, tmp_path: Path) -> Workspace:
    """A fresh workspace over the module's demo data (runs never share a store between tests)."""
    (tmp_path / "data").symlink_to(demo / "data")
    return Workspace(tmp_path)


def _present_classes(ws: Workspace) -> list[int]:
    """The object classes the demo source's training images show (the split draws from them)."""
    return sorted({int(c) for r in read_voc(ws.data / "VOC2012") if r.mask_path is not None
                   for c in np.unique(read_label_png(r.mask_path)) if 0 < c < C})


def _run(ws: Workspace, overrides: list[str], hooks: list[Hook] | None = None):
    config = api.make_config(ws, "tiny", [*FAST, *overrides])
    run = prepare_run(config, ws, "cpu")
    torch.manual_seed(0)
    return run, execute_run(run, config, ws, "cpu", console=False, extra_hooks=hooks)


def test_transfer_is_a_registered_pipeline() -> None:
    assert METHODS["transfer"] is Transfer and Transfer.stages == ("objectness", "cam", "coarse", "pnet")
    half = build_method("transfer", {"objectness_steps": 4, "cam_steps": 5}, C)
    assert half.stage_steps(7) == {"objectness": 4, "cam": 5, "pnet": 7}
    assert build_method("transfer", {}, C).stage_steps(9) == {"objectness": 9, "cam": 9, "pnet": 9}
    # 0 % strong: nothing is foreground for an object map, so that stage does not train (nor count in progress)
    assert build_method("transfer", {"strong_fraction": 0.0}, C).stage_steps(9) == {"cam": 9, "pnet": 9}
    for bad in ({"cam_steps": 0}, {"cam_scales": []}, {"coarse_short_side": 2}, {"strong_fraction": 2.0}):
        with pytest.raises(Exception, match="method"):
            api.make_config(Workspace(Path("/nonexistent")), "tiny",
                            ["method.name=transfer", *(f"method.{k}={v}" for k, v in bad.items())])


def test_transfer_run_end_to_end(ws: Workspace) -> None:
    present = _present_classes(ws)
    strong = present[: len(present) // 2]
    run, outcome = _run(ws, [f"method.strong_classes=[{','.join(map(str, strong))}]"])
    assert outcome.status == Status.DONE and outcome.report is not None, run.tail_log()
    record = ws.store().index.get_run(run.run_id)
    assert record is not None and record.total_steps == 3 + 1 + 2 and record.steps == 6
    train = run.events("train")
    assert [(e["stage"], e["step"]) for e in train] == [("objectness", 1), ("objectness", 2), ("objectness", 3),
                                                        ("cam", 4), ("pnet", 5), ("pnet", 6)]
    assert [(e["stage"], e["status"]) for e in run.events("stage_end")] == [
        ("objectness", "done"), ("cam", "done"), ("pnet", "done")]
    assert run.events("eval")[-1]["step"] == 2  # the final stage's last step

    report = run.read_report()
    assert report is not None
    split = report["split"]
    weak = [c for c in range(1, C) if c not in strong]
    assert split["strong"] == [0, *strong] and split["weak"] == weak  # exactly the classes not listed
    assert split["weak_names"] == [CLASS_NAMES[c] for c in weak] and split["strong_names"][0] == "background"
    assert split["fraction"] == pytest.approx(len(strong) / 20) and split["seed"] is None
    assert split["weak_images"] > 0
    quality = report["coarse_quality"]
    assert quality["num_images"] == split["weak_images"] and 0.0 <= quality["coverage"] <= 1.0
    assert 0.0 <= quality["all"] <= 1.0 and 0.0 <= quality["weak"] <= 1.0
    for key in ("source_val_split", "eval_split"):
        groups = report[key]
        assert groups["num_images"] > 0 and all(0.0 <= groups[g] <= 1.0 for g in ("all", "strong", "weak"))
    assert report["eval_split"]["all"] == pytest.approx(report["miou"]["pss"])  # the same matrix, the same mIoU
    assert report["source_val_split"]["all"] == pytest.approx(report["source_val"]["miou"])
    assert report["stages"]["pnet"]["row"] == "L-Net + P-Net"

    # the layout the app's Inspect reads
    names = [r.name for r in read_voc(ws.data / "VOC2012")]
    names = [n for n in names if (run.dir / "strong_labels" / f"{n}.png").is_file()]
    assert names, "no split labels written"
    weak_names = [n for n in names if (run.dir / "coarse" / f"{n}.png").is_file()]
    assert len(weak_names) == split["weak_images"]
    for name in names:
        kept = read_label_png(run.dir / "strong_labels" / f"{name}.png")
        assert not np.isin(kept, weak).any()  # no weak-class pixel survives the split
        assert (run.dir / "labels" / f"{name}.png").is_file()
        objectness = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(run.dir / "objectness" /
                                                                                 f"{name}.png"))
        assert objectness.dtype == np.uint8 and objectness.ndim == 2 and objectness.shape == kept.shape
    for name in weak_names:
        coarse = read_label_png(run.dir / "coarse" / f"{name}.png")
        assert set(np.unique(coarse).tolist()) <= {0, IGNORE_INDEX, *range(1, C)}
    checkpoint = run.latest_checkpoint()
    assert checkpoint is not None and checkpoint.name == "step_00000002.pt"  # the final P-Net, the run's model
    assert (run.dir / "predictions").is_dir()


def test_zero_percent_strong_has_no_object_map(ws: Workspace) -> None:
    run, outcome = _run(ws, ["method.strong_fraction=0", "method.lambda_adv=0"])
    assert outcome.status == Status.DONE, run.tail_log()
    assert [e["stage"] for e in run.events("stage_end")] == ["cam", "pnet"]
    assert [e["step"] for e in run.events("train")] == [1, 2, 3]
    report = run.read_report()
    assert report is not None
    assert report["split"]["strong"] == [0] and report["split"]["weak"] == list(range(1, C))
    assert report["split"]["fraction"] == 0.0 and report["split"]["seed"] == 0
    assert report["stages"]["objectness"]["steps"] == 0 and not report["stages"]["cam"]["saliency"]
    assert report["stages"]["pnet"]["row"] == "L-Net only"

    config = api.make_config(ws, "tiny", [*FAST, f"train.init_from={run.run_id}"])
    failed = prepare_run(config, ws, "cpu")
    with pytest.raises(ConfigError, match="init_from"):  # nothing would start from it: said, not ignored
        execute_run(failed, config, ws, "cpu", console=False)
    assert failed.meta["status"] == Status.FAILED
    assert not (run.dir / "objectness").exists()
    assert any((run.dir / "coarse").iterdir())  # every labelled image shows an object class: all need coarse labels
    assert report["split"]["strong_images"] == 0
    assert report["eval_split"]["strong"] is not None  # background alone


class _SigtermOnce(Hook):
    """Sends this process SIGTERM at the first step of the first stage (the job service's cancel)."""

    def __init__(self) -> None:
        self.sent = False

    def on_step(self, trainer: Trainer, step: int, losses: dict[str, torch.Tensor]) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("objectness_steps, ended", [(1, Status.DONE), (3, Status.CANCELLED)])
def test_sigterm_cancels_between_stages(ws: Workspace, objectness_steps: int, ended: str) -> None:
    """One object-map step: the stage finishes, and the check between stages stops the run; three: the stage's
    own loop stops early. Either way no later stage starts."""
    run, outcome = _run(ws, ["method.strong_fraction=0.5", f"method.objectness_steps={objectness_steps}"],
                        hooks=[_SigtermOnce()])
    assert outcome.status == Status.CANCELLED and run.meta["status"] == Status.CANCELLED
    assert [(e["stage"], e["status"]) for e in run.events("stage_end")] == [("objectness", ended)]
    assert not (run.dir / "objectness").exists() and not (run.dir / "coarse").exists()
    assert run.latest_checkpoint() is None and run.read_report() is None


def test_transfer_experiment_writes_its_table(ws: Workspace) -> None:
    from pss.experiments.transfer import TransferOptions, run_transfer_experiment

    lines: list[str] = []
    method_settings = [o for o in FAST if o.startswith("method.") and not o.startswith("method.name")]
    opts = TransferOptions(rows=["zero_lnet"], seeds=1, steps=6, preset="tiny", device="cpu", jobs=1,
                           console=False, overrides=method_settings)
    result = run_transfer_experiment(ws, opts, lines.append)
    assert not result.failed, result.failed
    out = ws.root / "experiments" / "transfer"
    assert (out / "transfer.csv").is_file() and (out / "transfer.md").is_file() and (out / "cells.csv").is_file()
    table = result.table
    assert list(table.index) == ["fully supervised", "0 % strong, L-Net only"]  # full is always run: the reference
    by_user = {(c.row, c.user): c for c in result.cells}
    cells = {row: by_user[(row, "id1")] for row in ("full", "zero_lnet")}
    assert cells["full"].status == Status.DONE and cells["zero_lnet"].status == Status.DONE
    full, zero = table.loc["fully supervised"], table.loc["0 % strong, L-Net only"]
    assert full["source val all (% of full)"] == pytest.approx(100.0)
    assert full["id1"] == pytest.approx(cells["full"].miou * 100, abs=1e-6) and full["id1"] > 0, lines
    assert zero["id1"] == pytest.approx(cells["zero_lnet"].miou * 100, abs=1e-6)
    assert zero["id1 (% of full)"] == pytest.approx(cells["zero_lnet"].miou / cells["full"].miou * 100, abs=1e-6)
    # the transfer run's own source-val split (its report) is what the table's source-val columns hold
    report = ws.store().open_run(cells["zero_lnet"].run_id or "").read_report()
    assert report is not None and report["split"]["weak"] == list(range(1, C))
    assert zero["source val all"] == pytest.approx(report["source_val_split"]["all"] * 100, abs=1e-6)
    assert zero["source val weak"] == pytest.approx(report["source_val_split"]["weak"] * 100, abs=1e-6)
    # one transfer run per seed, scored on the other user by an evaluation-only run that keeps its split (the app
    # shows the weak classes there too)
    other = by_user[("zero_lnet", "id2")]
    assert other.action == "evaluated" and other.run_id != cells["zero_lnet"].run_id
    moved = ws.store().open_run(other.run_id or "").read_report()
    assert moved is not None and moved["split"] == report["split"] and "coarse_quality" in moved
    assert moved["eval_split"]["all"] == pytest.approx(moved["miou"]["pss"])
    assert zero["id2"] == pytest.approx((other.miou or 0) * 100, abs=1e-6)
    # the fully supervised source-val matrix was scored once and cached; a second invocation reuses every run
    assert len(list((out / "source_val").glob("*.json"))) == 1
    again = run_transfer_experiment(ws, opts, lines.append)
    assert {c.action for c in again.cells} <= {"reused", "shared"}
    text = (out / "transfer.md").read_text()
    assert "96.5" in text and "89.4" in text and "0 % strong, L-Net only" in text
    with pytest.raises(ConfigError, match="method"):
        TransferOptions(overrides=["train.lr=1"]).validate()  # a transfer row may differ only in its method


def test_cli_lists_the_transfer_rows() -> None:
    from pss.cli import build_parser
    from pss.experiments.transfer import ROW_KEYS

    args = build_parser().parse_args(["experiment", "transfer", "--rows", *ROW_KEYS, "--set", "method.cam_steps=5"])
    assert args.table == "transfer" and args.rows == list(ROW_KEYS) and args.transfer_set == ["method.cam_steps=5"]


def _matrix(cells: dict[tuple[int, int], int]) -> np.ndarray:
    matrix = np.zeros((C, C), np.int64)
    for (truth, pred), count in cells.items():
        matrix[truth, pred] = count
    return matrix


def test_percent_of_fully_supervised_by_hand() -> None:
    """Hand case, strong = {0, 1}. Fully supervised: class 0 10 right, class 1 10 right, class 2 5 right + 5 as
    background -> IoU 10/15, 1, 5/10; the transfer row loses class 2 entirely -> IoU 10/20, 1, 0. The ``pss``
    convention averages every class of a group (absent = 0): all = sum / 21, strong = (IoU0 + IoU1) / 2, weak =
    IoU2 / 19. So the transfer row keeps (1.5 / 21) / ((2/3 + 1.5) / 21) = 69.23 % of all, 0.75 / (5/6) = 90 % of
    strong and 0 % of weak."""
    from types import SimpleNamespace

    from pss.experiments.runner import Plan
    from pss.experiments.spec import Cell, ExperimentOptions
    from pss.experiments.transfer import per_seed_values, summarise, transfer_rows

    full = _matrix({(0, 0): 10, (1, 1): 10, (2, 2): 5, (2, 0): 5})
    half = _matrix({(0, 0): 10, (1, 1): 10, (2, 0): 10})
    rows = transfer_rows(["half"])
    plan = Plan(ExperimentOptions(table="transfer"), rows, 1, 1, "id1")
    plan.sources[7] = SimpleNamespace(run_id="full-run")  # type: ignore[assignment]
    plan.shared[("half", 7)] = SimpleNamespace(run_id="half-run")  # type: ignore[assignment]
    matrices = {"full-run": full, "half-run": half}

    class Scores:  # what the experiment reads of the runs: their reports and confusion matrices
        def report(self, run_id: str) -> dict:
            return {"split": {"strong": [0, 1]}} if run_id == "half-run" else {}

        def user_confusion(self, run_id: str) -> np.ndarray:
            return matrices[run_id]

        def source_val_confusion(self, record: SimpleNamespace) -> np.ndarray:
            return matrices[record.run_id]

    cells = [Cell("full", "id1", 7, "full-run", Status.DONE), Cell("half", "id1", 7, "half-run", Status.DONE)]
    values = per_seed_values(cells, plan, rows, ["id1"], [7], Scores())  # type: ignore[arg-type]
    half_values, full_values = values[("half", 7)], values[("full", 7)]
    assert full_values["source val all"] == pytest.approx((2 / 3 + 1 + 0.5) / 21 * 100)
    assert full_values["source val strong"] == pytest.approx((2 / 3 + 1) / 2 * 100)  # the 50 % rows' split
    assert full_values["source val weak"] == pytest.approx(0.5 / 19 * 100)
    assert half_values["source val all"] == pytest.approx(1.5 / 21 * 100)
    assert half_values["source val all (% of full)"] == pytest.approx(1.5 / (2 / 3 + 1.5) * 100)  # 69.23
    assert half_values["source val strong (% of full)"] == pytest.approx(90.0)
    assert half_values["source val weak (% of full)"] == pytest.approx(0.0)
    assert half_values["id1 (% of full)"] == pytest.approx(1.5 / (2 / 3 + 1.5) * 100)
    # mean and sample std over seeds: 69.23 and a second seed at 80 -> mean 74.62, std |80 - 69.23| / sqrt(2)
    values[("half", 8)] = {**half_values, "source val all (% of full)": 80.0}
    table, std = summarise(values, rows, ["id1"])
    first = 1.5 / (2 / 3 + 1.5) * 100
    assert table.loc["50 % strong, L-Net + P-Net", "source val all (% of full)"] == pytest.approx((first + 80) / 2)
    assert std.loc["50 % strong, L-Net + P-Net", "source val all (% of full)"] == pytest.approx(
        abs(80 - first) / np.sqrt(2))
    assert np.isnan(std.loc["fully supervised", "source val all"])  # one seed: no spread
