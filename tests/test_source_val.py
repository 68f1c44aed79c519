"""Source validation: runs that train on the source score its held-out split during and after training, and
the source training list never contains a source val image."""
from __future__ import annotations

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
