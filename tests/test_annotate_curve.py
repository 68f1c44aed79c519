"""`pss experiment annotate-curve` end to end on a tiny demo (1-step runs): the demo's hidden masks are regenerated
exactly, each annotation set is a simulated folder (the real user folder is never written), the cells are the
runner's (a second invocation trains nothing), and the outputs are written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pss.api import runs as api
from pss.data.demo import DemoConfig, generate_demo, hidden_user_labels
from pss.data.image_io import load_mask, load_rgb
from pss.data.pss_layout import read_user
from pss.errors import ConfigError, DatasetError
from pss.experiments.annotate_curve import CURVE, CurveOptions, run_annotate_curve
from pss.experiments.reuse import ensure_run
from pss.workspace import Workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("curve-ws")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=1, images_per_user=12))
    return Workspace(root)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_hidden_masks_are_the_generators(workspace: Workspace, tmp_path: Path) -> None:
    user = read_user(workspace.personal, "id1")
    labels = hidden_user_labels(workspace.data, "id1", user.names)
    for record in user.labelled:  # the stored masks are exactly what the generator draws
        assert record.mask_path is not None
        assert np.array_equal(load_mask(record.mask_path, labels[record.name].shape), labels[record.name])
    assert all(labels[r.name].shape == load_rgb(r.image_path).shape[:2] for r in user.unlabelled)  # as displayed
    with pytest.raises(DatasetError, match="not images of the demo"):
        hidden_user_labels(workspace.data, "id1", ["nosuchimage"])
    with pytest.raises(DatasetError, match="not a README written by `pss demo`"):
        hidden_user_labels(tmp_path, "id1", user.names)


def test_annotate_curve_end_to_end(workspace: Workspace) -> None:
    real = _tree(workspace.personal / "id1")
    start_config = api.make_config(workspace, "tiny", ["method.name=source_only", "model.context.mode=none",
                                                       "train.steps=1", "tag=start"])
    start, _ = ensure_run(workspace, start_config, "cpu", console=False)
    opts = CurveOptions(start=start.run_id, counts=(0, 2), steps=1, seeds=2, preset="tiny", device="cpu",
                        console=False)
    said: list[str] = []
    result = run_annotate_curve(workspace, opts, said.append)
    assert not result.failed
    assert _tree(workspace.personal / "id1") == real  # the real user folder is untouched
    rows = sorted((c.row, c.seed) for c in result.cells)
    assert rows == [("n0", 1234), ("n0", 1235), ("random-2", 1234), ("random-2", 1235), ("uncertainty-2", 1234),
                    ("uncertainty-2", 1235)]
    user = read_user(workspace.personal, "id1")
    evaluation = {r.name for r in user.eval_set}
    unlabelled = {r.name for r in user.unlabelled}
    store = workspace.store()
    revealed: dict[tuple[str, int], list[str]] = {}
    for cell in result.cells:
        run = store.open_run(cell.run_id or "")
        report = run.read_report()
        assert report is not None and report["num_images"] == len(evaluation)  # scored on the evaluation set only
        assert {i["name"] for i in report["images"]} == evaluation
        assert run.config["train"]["init_from"] == start.run_id
        names = report.get("annotated_train", [])
        assert set(names) <= unlabelled and len(names) == (0 if cell.row == "n0" else 2)
        assert run.config["train"]["annotated_weight"] == (0 if cell.row == "n0" else 1.0)
        revealed[(cell.row, cell.seed)] = names
    # the uncertainty queue is one order for every seed; its first two images are the ones revealed
    queues = pd.read_csv(result.out_dir / "queues.csv")
    first = queues[queues["order"] == "uncertainty"].sort_values("rank")["image"].tolist()[:2]
    assert revealed[("uncertainty-2", 1234)] == revealed[("uncertainty-2", 1235)] == sorted(first)
    assert set(queues["order"]) == {"uncertainty", "random"} and queues["reason"].notna().all()
    curve = pd.read_csv(result.out_dir / "curve.csv")
    assert len(curve) == 4 and (curve["seeds"] == 2).all() and curve["FIoU_mean"].notna().all()
    zero = curve[curve["count"] == 0]
    assert zero["FIoU_mean"].nunique() == 1  # the count-0 control is one set of runs, under both orders
    assert {p.name for p in result.out_dir.iterdir()} >= {"curve.csv", "cells.csv", "queues.csv", f"{CURVE}.md",
                                                          f"{CURVE}.png", "sim"}
    assert Image.open(result.out_dir / f"{CURVE}.png").size[0] > 400
    assert "## id1: FIoU (%)" in (result.out_dir / f"{CURVE}.md").read_text()
    # resumable: a second invocation reuses every cell
    again = run_annotate_curve(workspace, opts, said.append)
    assert again.trained == 0 and {c.action for c in again.cells} == {"reused"}
    with pytest.raises(ConfigError, match="unlabelled images; counts go up to"):
        run_annotate_curve(workspace, CurveOptions(start=start.run_id, counts=(0, 50), steps=1, seeds=1,
                                                   preset="tiny", device="cpu", console=False), said.append)
