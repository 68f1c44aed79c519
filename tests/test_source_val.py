"""Source validation: runs that train on the source score its held-out split during and after training, and
the source training list never contains a source val image."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from pss.api import runs as api
from pss.data.demo import DemoConfig, generate_demo
from pss.engine.data import load_experiment_data, read_source_val
from pss.experiments.reuse import ensure_run
from pss.workspace import Workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("source-val-ws")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=20, num_users=1, images_per_user=8))
    return Workspace(root)


def test_source_val_is_the_held_out_split_and_never_trained_on(workspace: Workspace, tmp_path: Path) -> None:
    import torch

    config = api.make_config(workspace, "tiny", ["method.name=source_only"])
    data = load_experiment_data(config, torch.device("cpu"), None, need_groups=False)
    val_ids = (config.data.voc_path() / "ImageSets/Segmentation/val.txt").read_text().split()
    assert sorted(r.name for r in data.source_val) == sorted(val_ids) and val_ids
    assert not {r.name for r in data.source} & set(val_ids)
    # a training list that also names the val images: they are dropped from training
    voc = config.data.voc_path()
    listed = tmp_path / "train_with_val.txt"
    listed.write_text("".join(f"{i}\n" for i in [r.name for r in data.source] + val_ids))
    leaky = api.make_config(workspace, "tiny", ["method.name=source_only", f"data.voc_list={listed}"])
    leaky_data = load_experiment_data(leaky, torch.device("cpu"), None, need_groups=False)
    assert sorted(r.name for r in leaky_data.source) == sorted(r.name for r in data.source)
    assert read_source_val(api.make_config(workspace, "tiny", ["data.voc_val_list="])) == []
    assert voc.is_dir()


def test_source_val_curve_in_metrics_and_report(workspace: Workspace) -> None:
    config = api.make_config(workspace, "tiny", ["method.name=source_only", "train.steps=5", "train.log_every=1",
                                                 "train.source_val_every=2", "tag=source-val-test"])
    record, _ = ensure_run(workspace, config, "cpu", console=False)
    run = workspace.store().open_run(record.run_id)
    events = run.events("source_val")
    assert [e["step"] for e in events] == [2, 4, 5]  # every 2 steps and at the end
    n_val = len((config.data.voc_path() / "ImageSets/Segmentation/val.txt").read_text().split())
    assert all(e["num_images"] == n_val and 0 <= e["miou"] <= 1 for e in events)
    report = run.read_report()
    assert report is not None
    assert [p["step"] for p in report["source_val"]["curve"]] == [2, 4, 5]
    assert report["source_val"]["miou"] == events[-1]["miou"]


def test_eval_predict_and_checkpoint_scores_of_a_finished_run(workspace: Workspace, tmp_path: Path) -> None:
    """`pss eval`, `pss predict` and the source-val curve of saved checkpoints (EvalSettings at every call site)."""
    from pss.cli import main
    from pss.experiments.source_curve import score_checkpoints, target_entropy_curve

    config = api.make_config(workspace, "tiny", ["method.name=source_only", "train.steps=4", "train.amp=off",
                                                 "train.checkpoint_every=2", "train.source_val_every=0",
                                                 "tag=eval-predict-test"])
    record, _ = ensure_run(workspace, config, "cpu", console=False)
    run = workspace.store().open_run(record.run_id)
    report = run.read_report()
    assert report is not None
    again = api.evaluate_run(workspace, record.run_id, device="cpu")  # fp32 both times: the same numbers
    assert again.fiou == pytest.approx(report["fiou"], abs=1e-6)
    assert main(["eval", "-w", str(workspace.root), "--device", "cpu", record.run_id]) == 0
    image = next((config.data.personal_path() / config.data.user / "JPEGImages").glob("*.jpg"))
    out = tmp_path / "predicted"
    assert main(["predict", "-w", str(workspace.root), "--device", "cpu", record.run_id, str(image),
                 "--out", str(out)]) == 0
    assert (out / f"{image.stem}.png").is_file() and (out / f"{image.stem}_entropy.png").is_file()
    assert [e["step"] for e in run.events("source_val")] == [4]  # the final score only
    curve = score_checkpoints(workspace, record.run_id, device="cpu")
    assert [e["step"] for e in curve] == [2, 4]
    # the label-free target curve: every user image (labelled or not), mean entropy within [0, ln 21]
    entropy = target_entropy_curve(workspace, record.run_id, device="cpu")
    n_user = len(list((config.data.personal_path() / config.data.user / "JPEGImages").glob("*.jpg")))
    assert [e["step"] for e in entropy] == [2, 4]
    assert all(e["num_images"] == n_user and 0 < e["mean_entropy"] <= math.log(21) for e in entropy)
    assert target_entropy_curve(workspace, record.run_id, device="cpu") == entropy  # scored once
