"""The tags pipelines as runs (issue 17): ``eps_seg`` and ``eps_affinity`` end to end on a tiny demo (status, the
run-directory layout the app's Inspect reads, ``train`` events numbered over the whole pipeline, ``stage_end``
events, the report's entries), the user's masks never trained on, a cancel between stages, the user's own
``SALImages/`` used when present."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pss.api import runs as api
from pss.data.demo import DemoConfig, generate_demo
from pss.data.labels import IGNORE_INDEX, read_label_png
from pss.data.pss_layout import read_user
from pss.engine.hooks import Hook
from pss.errors import ConfigError, DatasetError
from pss.engine.trainer import Trainer
from pss.models.affinity import build_affinity_net
from pss.runs.execute import execute_run, prepare_run
from pss.status import Status
from pss.workspace import Workspace

STAGE_STEPS = {"saliency": 1, "cam": 2, "affinity": 1}
SEG_STEPS = 2
# crop 96: a 12x12 feature grid (AffinityNet's interior pairs at radius 5 need >= 9 columns: crop >= 72)
OVERRIDES = ["train.batch_size=2", "data.crop=96", "train.log_every=1", f"train.steps={SEG_STEPS}",
             *(f"method.{stage}_steps={n}" for stage, n in STAGE_STEPS.items())]


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    generate_demo(tmp_path / "data", seed=0, config=DemoConfig(num_source=8, num_users=1, images_per_user=8,
                                                               long_side=96))
    return Workspace(tmp_path)


def _run(ws: Workspace, method: str, extra_hooks: list[Hook] | None = None, extra: tuple[str, ...] = ()):
    config = api.make_config(ws, "tiny", [f"method.name={method}", *OVERRIDES, *extra])
    run = prepare_run(config, ws, "cpu")
    return run, execute_run(run, config, ws, "cpu", console=False, extra_hooks=extra_hooks)


class _Spy:
    """Every record a training dataset of the run is built from (``SegDataset``), to check what was trained on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pss.data.datasets as datasets

        self.records: list = []
        original = datasets.SegDataset.__init__

        def spy(this, records, *args, **kwargs):  # type: ignore[no-untyped-def]
            if kwargs.get("train", args[0] if args else False):
                self.records.extend(records)
            original(this, records, *args, **kwargs)
        monkeypatch.setattr(datasets.SegDataset, "__init__", spy)


def _check_layout(run_dir: Path, ws: Workspace, affinity: bool) -> None:
    user = read_user(ws.personal, "id1")
    names = [r.name for r in user.records]
    for name in names:  # our saliency model's maps: 8-bit grey at the image's size
        with Image.open(run_dir / "saliency" / f"{name}.png") as image:
            assert image.mode == "L"
            with Image.open(user.records[names.index(name)].image_path) as photo:
                assert image.size == photo.size
    for record in user.records:  # demo users are all tagged
        with np.load(run_dir / "cam" / f"{record.name}.npz") as scores:
            classes, maps = scores["classes"], scores["scores"]
        mask = read_label_png(run_dir / "cam" / f"{record.name}.png")
        assert classes.tolist() == sorted(record.tags) and maps.dtype == np.float16
        assert maps.shape == (len(record.tags), *mask.shape)
        assert set(np.unique(mask)) <= {0, *record.tags}  # the EPS mask names only the image's tags
        if affinity:
            labels = read_label_png(run_dir / "affinity" / f"{record.name}.png")
            assert labels.shape == mask.shape and set(np.unique(labels)) <= {0, IGNORE_INDEX, *record.tags}
            refined = read_label_png(run_dir / "affinity" / "refined" / f"{record.name}.png")
            assert refined.shape == mask.shape and set(np.unique(refined)) <= {0, *record.tags}
    if affinity:  # the AffinityNet rebuilds from the run's config (psa's stride 8) and loads
        from pss.config import resolve_config
        from pss.weak.eps_run import affinity_model_config, load_affinity_net
        import yaml

        config = resolve_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
        assert affinity_model_config(config).output_stride == 8
        net = load_affinity_net(run_dir, config)
        state = torch.load(run_dir / "affinity" / "model.pt", weights_only=True)
        assert state.keys() == build_affinity_net(config.model).state_dict().keys()
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
        assert net(torch.rand(1, 3, 96, 96)).features.shape[-2:] == (12, 12)


@pytest.mark.parametrize("method", ["eps_seg", "eps_affinity"])
def test_a_tags_pipeline_is_one_run(ws: Workspace, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(monkeypatch)
    run, outcome = _run(ws, method)
    assert outcome.status == Status.DONE and outcome.report is not None, run.dir.joinpath("log.txt").read_text()
    affinity = method == "eps_affinity"
    stages = ["saliency", "cam", *(["affinity"] if affinity else []), "segmenter"]
    steps = {**STAGE_STEPS, "segmenter": SEG_STEPS}
    expected, step = [], 0
    for stage in stages:  # train events numbered over the whole pipeline, stage after stage
        for _ in range(steps[stage]):
            step += 1
            expected.append((stage, step))
    assert [(e["stage"], e["step"]) for e in run.events("train")] == expected
    assert [(e["stage"], e["status"]) for e in run.events("stage_end")] == [(s, "done") for s in stages]
    record = ws.store().index.get_run(run.run_id)
    assert record.total_steps == step and record.steps == step
    assert run.latest_checkpoint() is not None  # the final segmenter checkpoints as any run
    _check_layout(run.dir, ws, affinity)

    report = run.read_report()
    assert report["num_images"] > 0 and report["saliency_source"] == "trained"
    user = read_user(ws.personal, "id1")
    assert report["tags"] == {"tagged": [r.name for r in user.records], "untagged": []}
    assert set(report["stage_quality"]) == ({"cam", "refined"} if affinity else {"cam"})
    evaluated = sum(r.eval_mask is not None for r in user.records)
    for entry in report["stage_quality"].values():
        assert entry["num_images"] == evaluated > 0 and 0.0 <= entry["miou"] <= 1.0 and 0.0 <= entry["fiou"] <= 1.0
    assert set(report["stage_seconds"]) == set(stages)
    assert report["mask_stage"] == ("refined" if affinity else "cam")
    # the segmenter trained on the last mask stage's masks (copied to pseudo/, as any second stage's labels)
    mask_dir = run.dir / ("affinity/refined" if affinity else "cam")
    for name in (p.stem for p in (run.dir / "pseudo").glob("*.png")):
        assert np.array_equal(read_label_png(run.dir / "pseudo" / f"{name}.png"),
                              read_label_png(mask_dir / f"{name}.png"))
    # the user's masks (evaluation ground truth) are scored, never trained on
    user_masks = {r.mask_path for r in user.records if r.mask_path is not None}
    trained = [r for r in spy.records if r.user is not None]
    assert trained and not any(r.mask_path in user_masks for r in trained)
    assert all(r.mask_path is None or Path(r.mask_path).is_relative_to(run.dir) for r in trained)


class _SigtermAtCam(Hook):
    """Sends this process SIGTERM at the CAM stage's first step (what the job service's cancel does)."""

    def on_step(self, trainer: Trainer, step: int, losses: dict[str, torch.Tensor]) -> None:
        if step == 0 and "eps_sal" in losses:
            os.kill(os.getpid(), signal.SIGTERM)


def test_cancel_between_stages(ws: Workspace) -> None:
    run, outcome = _run(ws, "eps_affinity", [_SigtermAtCam()])
    assert outcome.status == Status.CANCELLED and run.meta["status"] == Status.CANCELLED
    ends = run.events("stage_end")
    # the stop reaches the CAM trainer at its next step: the stage ends there (with 2 steps: at its end), and the
    # pipeline stops before the next stage
    assert [e["stage"] for e in ends] == ["saliency", "cam"] and ends[0]["status"] == "done"
    assert not (run.dir / "affinity").exists() and run.latest_checkpoint() is None
    assert not list((run.dir / "cam").glob("*.png"))  # the cancelled stage wrote no mask


def test_the_users_own_saliency_maps_are_used(ws: Workspace) -> None:
    user = read_user(ws.personal, "id1")
    maps = user.root / "SALImages"
    maps.mkdir()
    for record in user.records:  # a centred blob: foreground in the middle of every image
        with Image.open(record.image_path) as photo:
            width, height = photo.size
        yy, xx = np.mgrid[0:height, 0:width]
        blob = np.exp(-(((yy - height / 2) / (height / 4)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2))
        Image.fromarray(np.rint(blob * 255).astype(np.uint8), "L").save(maps / f"{record.name}.png")
    run, outcome = _run(ws, "eps_seg")
    assert outcome.status == Status.DONE
    report = run.read_report()
    assert report["saliency_source"] == "user"
    assert [e["stage"] for e in run.events("stage_end")] == ["cam", "segmenter"]  # no saliency training
    # the progress total counts the stages that train: the CAMs' and the segmenter's steps, no saliency steps
    total = STAGE_STEPS["cam"] + SEG_STEPS
    assert run.meta["total_steps"] == total and max(e["step"] for e in run.events("train")) == total
    assert not list((run.dir / "saliency").iterdir())
    assert "the user's own maps" in (run.dir / "log.txt").read_text()
    # a bad map stops the run before any training, naming the file
    Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(maps / f"{user.records[0].name}.png")
    run, outcome = None, None
    with pytest.raises(DatasetError, match="bad saliency map"):
        _run(ws, "eps_seg")


def test_settings_a_pipeline_cannot_run_are_refused_before_training(ws: Workspace) -> None:
    with pytest.raises(ConfigError, match="data.crop=64 gives a 8x8 feature grid.*use data.crop >= 72"):
        _run(ws, "eps_affinity", extra=("data.crop=64",))
    with pytest.raises(ConfigError, match="set data.target=personal"):
        _run(ws, "eps_seg", extra=("data.target=mix_all",))
    with pytest.raises(ConfigError, match="pseudo.folder is set by the pipeline"):
        api.make_config(ws, "tiny", ["method.name=eps_seg", "method.pseudo.folder=/tmp/x"])
    (ws.personal / "id1" / "imgLabelList.txt").unlink()  # no tag file: every image untagged, nothing to learn from
    with pytest.raises(ConfigError, match="has no tagged image"):
        _run(ws, "eps_seg")


def test_a_pipeline_is_never_the_inspect_views_next_stage() -> None:
    """The pipelines start from a No-DA run but make their masks in their own stages: the Inspect caption of a
    No-DA run (or of a pipeline run) keeps asking PSS step 2's policy, which needs no mask folder."""
    from pss.api.pseudo import next_stage
    from pss.methods import METHODS

    assert METHODS["eps_seg"].starts_from == METHODS["eps_affinity"].starts_from == "source_only"
    assert next_stage("source_only") == next_stage("eps_seg") == next_stage("eps_affinity") == "pss_s2"


# ---- OURS-S2 + tags ------------------------------------------------------------------------------------------------


def test_restrict_to_tags_by_hand() -> None:
    from pss.engine.evaluate import Prediction
    from pss.methods.pseudo import EntropyRankedPseudoConfig, restrict_to_tags

    label = np.array([[0, 3, 7], [15, 3, 255]], np.uint8)
    # tags {3}: class 7 and 15 are not in the image -> 255; background, the tagged class and 255 stay
    assert restrict_to_tags(label, (3,)).tolist() == [[0, 3, 255], [255, 3, 255]]
    assert restrict_to_tags(label, (3, 15)).tolist() == [[0, 3, 255], [15, 3, 255]]
    assert restrict_to_tags(label, ()).tolist() == label.tolist()  # untagged: left as it is, never guessed
    assert label.tolist() == [[0, 3, 7], [15, 3, 255]]  # the input is not changed

    # through the policy: the easy half (a, b) is selected; entropy masking keeps every pixel (keep rate 1)
    predictions = [Prediction("a", label.copy(), np.full((2, 3), 0.1, np.float32), 0),
                   Prediction("b", label.copy(), np.full((2, 3), 0.2, np.float32), 0),
                   Prediction("c", label.copy(), np.full((2, 3), 0.9, np.float32), 0),
                   Prediction("d", label.copy(), np.full((2, 3), 0.8, np.float32), 0)]
    tags = {"a": (7,), "b": (), "c": (3,), "d": (3,)}
    written: dict[str, list[list[int]]] = {}

    def write(name: str, out: np.ndarray) -> str:
        written[name] = out.tolist()
        return name

    policy = EntropyRankedPseudoConfig(select_rate=0.5, pixel_keep_rate=1.0, restrict_to_tags=True)
    labels = policy.label_predictions(predictions, write, tags.__getitem__)
    assert labels.selected == ["a", "b"] and labels.summary == {"restrict_to_tags": True}
    assert written == {"a": [[0, 255, 7], [255, 255, 255]], "b": label.tolist()}
    plain = EntropyRankedPseudoConfig(select_rate=0.5, pixel_keep_rate=1.0)  # OURS-S2: the argmax as it is
    written.clear()
    plain.label_predictions(predictions, write, tags.__getitem__)
    assert written == {"a": label.tolist(), "b": label.tolist()}
    with pytest.raises(ValueError, match="needs the images' tags"):
        policy.label_predictions(predictions, write)


# ---- pss doctor ----------------------------------------------------------------------------------------------------


def test_doctor_checks_the_users_saliency_maps(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from pss.cli import main
    from pss.data.validate import check_root

    user = read_user(ws.personal, "id1")
    assert not [p for p in check_root(user.root) if "saliency" in p.kind]  # no SALImages/: nothing to check
    maps = user.root / "SALImages"
    maps.mkdir()
    sizes = {}
    for record in user.records:
        with Image.open(record.image_path) as photo:
            sizes[record.name] = photo.size
        Image.fromarray(np.full(sizes[record.name][::-1], 128, np.uint8), "L").save(maps / f"{record.name}.png")
    assert not [p for p in check_root(user.root) if "saliency" in p.kind]  # every map good
    first, second, third = (r.name for r in user.records[:3])
    Image.fromarray(np.zeros((7, 9), np.uint8), "L").save(maps / f"{first}.png")               # wrong size
    (maps / f"{second}.png").unlink()                                                          # missing
    Image.fromarray(np.ones(sizes[third][::-1], np.uint8), "L").save(maps / f"{third}.png")    # a 0/1 map
    found = {p.path.stem: p.kind for p in check_root(ws.data) if "saliency" in p.kind}
    assert found == {first: "saliency_size_mismatch", second: "missing_saliency", third: "bad_saliency_values"}
    assert main(["doctor", str(user.root)]) != 0
    out = capsys.readouterr()
    assert f"{first}.png" in out.out + out.err and "multiply by 255" in out.out + out.err


# ---- pss experiment weak ---------------------------------------------------------------------------------------------


def test_the_weak_experiment_writes_its_tables(ws: Workspace, tmp_path: Path) -> None:
    import pandas as pd
    import yaml

    from pss.config import PRESET_DIR
    from pss.experiments.weak_quality import WeakOptions, run_weak

    preset = yaml.safe_load((PRESET_DIR / "tiny.yaml").read_text())
    preset["data"]["crop"] = 96  # AffinityNet's pairs need a 12x12 grid
    preset["train"]["batch_size"] = 2
    preset_path = tmp_path / "tiny96.yaml"
    preset_path.write_text(yaml.safe_dump(preset))
    start = api.train(ws, api.make_config(ws, str(preset_path), ["method.name=source_only", "train.steps=1"]),
                      device="cpu", console=False)
    opts = WeakOptions(start=start.run_id, seeds=2, steps=1, saliency_steps=1, cam_steps=1, affinity_steps=1,
                       rows=["eps_affinity"], preset=str(preset_path), device="cpu", jobs=1, console=False,
                       bootstrap=10)
    said: list[str] = []
    result = run_weak(ws, opts, said.append)
    out = ws.root / "experiments" / "weak"
    assert result.out_dir == out and not result.tables.failed
    for name in ("fiou.csv", "miou.csv", "cells.csv", "weak.md", "mask_quality.csv", "mask_quality.md"):
        assert (out / name).is_file(), name
    cells = pd.read_csv(out / "cells.csv")
    assert sorted(set(cells["key"])) == ["eps_affinity", "eps_seg"]  # the shown row and its control
    assert (cells["status"] == "done").all() and len(cells) == 4  # 2 rows x 2 seeds
    # the pipeline rows got this invocation's stage lengths
    run = ws.store().open_run(cells[cells["key"] == "eps_affinity"]["run_id"].iloc[0])
    assert {k: run.config["method"][k] for k in ("saliency_steps", "cam_steps", "affinity_steps")} == \
        {"saliency_steps": 1, "cam_steps": 1, "affinity_steps": 1}
    quality = pd.read_csv(out / "mask_quality.csv")
    assert list(quality["stage"]) == ["cam_plain", "cam", "refined"] and (quality["seeds"] == 2).all()
    assert run.config["method"]["cam_plain"] is True  # the CAM row's baseline trains in the eps_affinity runs
    assert [e["stage"] for e in run.events("stage_end")] == ["saliency", "cam", "cam_plain", "affinity", "segmenter"]
    assert len(list((run.dir / "cam_plain").glob("*.png"))) == len(read_user(ws.personal, "id1").records)
    # the table's numbers are the runs' own stage_quality, mean over the seeds
    runs = [ws.store().open_run(r) for r in cells[cells["key"] == "eps_affinity"]["run_id"]]
    for stage in ("cam_plain", "cam", "refined"):
        values = [r.read_report()["stage_quality"][stage]["miou"] * 100 for r in runs]
        got = quality[quality["stage"] == stage]["MIoU_mean"].iloc[0]
        assert got == pytest.approx(sum(values) / 2, abs=0.01)
    text = (out / "mask_quality.md").read_text()
    assert "CAM (no saliency loss)" in text and "EPS (CAM + saliency)" in text
    assert "EPS + AffinityNet (random walk)" in text
    assert "EPS + AffinityNet (tags)" in (out / "weak.md").read_text()
    again = run_weak(ws, opts, said.append)  # resumable: every cell is reused
    assert {c.action for c in again.tables.cells} == {"reused"}
    (out / "mask_quality.csv").unlink()
    from pss.cli import main  # the command line gives the same options: the same cells, reused, the tables again

    assert main(["experiment", "weak", "-w", str(ws.root), "--start", start.run_id, "--seeds", "2", "--steps", "1",
                 "--saliency-steps", "1", "--cam-steps", "1", "--affinity-steps", "1", "--methods", "eps_affinity",
                 "--preset", str(preset_path), "--device", "cpu", "--jobs", "1", "--bootstrap", "10"]) == 0
    assert pd.read_csv(out / "mask_quality.csv").equals(quality)
    assert len(ws.store().list_runs(method="eps_affinity")) == 2  # nothing was trained again


def test_ours_s2_with_tags_as_a_run(ws: Workspace) -> None:
    """``pss_s2`` with ``method.pseudo.restrict_to_tags``: the pseudo labels the run writes name only each image's
    tags (plus background and 255), taken from the user's tag file through the engine's pseudo source."""
    start = api.train(ws, api.make_config(ws, "tiny", ["method.name=source_only", "train.steps=1"]), device="cpu",
                      console=False)
    config = api.make_config(ws, "tiny", ["method.name=pss_s2", "train.steps=1", f"train.init_from={start.run_id}",
                                          "method.pseudo.restrict_to_tags=true", "method.pseudo.pixel_keep_rate=1.0",
                                          "method.pseudo.select_rate=1.0"])
    run = prepare_run(config, ws, "cpu")
    assert execute_run(run, config, ws, "cpu", console=False).status == Status.DONE
    tags = {r.name: set(r.tags) for r in read_user(ws.personal, "id1").records}
    written = sorted((run.dir / "pseudo").glob("*.png"))
    assert len(written) == len(tags)
    for path in written:
        assert set(np.unique(read_label_png(path))) <= {0, IGNORE_INDEX, *tags[path.stem]}


def test_the_app_launches_a_pipeline_like_any_run(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job service (the app's run form) launches ``eps_affinity`` with no special case: the run's progress
    total is the sum of its stages' steps, and the job trains every stage to done."""
    from support import wait_for

    from pss.api.jobs import JobService
    from pss.api.launch_form import LaunchRequest

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job process: one thread on the shared cores
    service = JobService(ws, poll_s=0.1, grace_s=5.0).start()
    try:
        launched = service.launch(LaunchRequest(user="id1", method="eps_affinity", preset="tiny", steps=SEG_STEPS,
                                                device="cpu", extra=tuple(o for o in OVERRIDES
                                                                          if not o.startswith("train.steps"))))
        total = sum(STAGE_STEPS.values()) + SEG_STEPS
        assert ws.store().index.get_run(launched.run_id).total_steps == total
        wait_for(lambda: service.queue.get(launched.job_id).status in ("done", "failed"), deadline_s=300)
        record = ws.store().index.get_run(launched.run_id)
        assert record.status == Status.DONE and record.steps == total
    finally:
        service.stop()
