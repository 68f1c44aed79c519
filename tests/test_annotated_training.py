"""Training on the user's annotated images (``train.annotated_weight``) and the honest splits in the engine: an image
annotated for training is supervised on and never scored; an evaluation image is scored and never supervised on."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pss.api import runs as api
from pss.config import build_config
from pss.data.annotations import write_annotated
from pss.data.demo import DemoConfig, generate_demo
from pss.data.image_io import load_rgb
from pss.data.labels import write_label_png
from pss.data.pss_layout import read_user
from pss.engine.data import load_experiment_data, make_annotated_stream, make_stream
from pss.engine.trainer import Trainer
from pss.errors import ConfigError
from pss.experiments.reuse import ensure_run
from pss.methods import build_method
from pss.methods.base import Method, annotated_loss
from pss.models.segmenter import SegOutput, build_segmenter
from pss.workspace import Workspace


def test_annotated_loss_by_hand() -> None:
    # two classes, three pixels at the label's size (no upsampling): p(class 1) = 3/4 at every pixel
    logits = torch.tensor([[[[0.0, 0.0, 0.0]], [[math.log(3), math.log(3), math.log(3)]]]])  # (1, 2, 1, 3)
    label = torch.tensor([[[1, 0, 255]]])  # the third pixel is ignored
    out = SegOutput(logits=logits, aux_logits=logits, features=logits)
    # mean CE over the two labelled pixels: (-ln 3/4 - ln 1/4) / 2; weight 2 -> ln(16/3)
    assert float(annotated_loss(out, label, 2.0)) == pytest.approx(math.log(16 / 3), abs=1e-6)

    class Stub(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> SegOutput:
            return out

    method = build_method("source_only", {}, 2)
    losses = Method.annotated_losses(method, Stub(), {"image": torch.zeros(1, 3, 1, 3), "label": label}, 0.5)
    assert list(losses) == ["annotated"] and float(losses["annotated"]) == pytest.approx(math.log(16 / 3) / 4)


def test_annotated_weight_is_validated() -> None:
    assert build_config("tiny").train.annotated_weight == 0.0
    assert build_config("tiny", ["train.annotated_weight=1.0"]).train.annotated_weight == 1.0
    with pytest.raises(ConfigError, match="train.annotated_weight must be between 0"):
        build_config("tiny", ["train.annotated_weight=-0.5"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A tiny demo whose user id1 has two images annotated for training (masks of one box), and one evaluation
    image wrongly listed in annotated.txt by hand (it must stay an evaluation image)."""
    root = tmp_path_factory.mktemp("annotated-ws")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=1, images_per_user=12))
    ws = Workspace(root)
    user = read_user(ws.personal, "id1")
    for record in user.unlabelled[:2]:
        height, width = load_rgb(record.image_path).shape[:2]
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4: height // 2, width // 4: width // 2] = 12  # a dog
        write_label_png(user.root / "SegmentationClass" / f"{record.name}.png", mask)
    write_annotated(user.root, [r.name for r in user.unlabelled[:2]])
    evaluation_image = user.eval_set[0].name
    with (user.root / "annotated.txt").open("a") as fh:  # by hand: write_annotated would refuse it
        fh.write(f"/JPEGImages/{evaluation_image}.jpg /SegmentationClass/{evaluation_image}.png\n")
    return ws


def _split(ws: Workspace) -> tuple[set[str], set[str]]:
    user = read_user(ws.personal, "id1")
    return {r.name for r in user.eval_set}, {r.name for r in user.annotated_train}


def test_streams_and_evaluation_follow_the_splits(workspace: Workspace) -> None:
    evaluation, annotated = _split(workspace)
    assert len(annotated) == 2 and evaluation and not evaluation & annotated
    config = api.make_config(workspace, "tiny", ["method.name=source_only", "train.annotated_weight=1.0"])
    data = load_experiment_data(config, torch.device("cpu"), None, need_groups=False)
    assert {r.name for r in data.annotated} == annotated  # not the evaluation image listed by hand
    assert {r.name for r in data.evaluation if r.eval_mask is not None} == evaluation
    assert all(r.mask_path is None for r in data.target)  # target batches carry no mask at all
    stream = make_annotated_stream(data.annotated, config, seed=3)
    try:
        names = {n for _ in range(4) for n in next(stream)["name"]}
        assert names == annotated
    finally:
        stream.close()
    with pytest.raises(Exception, match="annotate images in the Annotate tab or list them in annotated.txt"):
        make_annotated_stream([], config, seed=3)


def test_weight_zero_draws_nothing_and_changes_nothing(workspace: Workspace) -> None:
    config = api.make_config(workspace, "tiny", ["method.name=source_only", "train.steps=2", "train.amp=off",
                                                 "train.channels_last=off"])
    data = load_experiment_data(config, torch.device("cpu"), None, need_groups=False)

    def losses(with_stream: bool) -> list[dict[str, float]]:
        torch.manual_seed(0)
        streams = {"source": make_stream(data.source, None, config, 1)}
        if with_stream:
            streams["annotated"] = make_annotated_stream(data.annotated, config, 4)
        trainer = Trainer(config, build_segmenter(config.model), build_method("source_only", {}, 21), streams,
                          torch.device("cpu"))
        out = [{k: float(v) for k, v in trainer.train_step().items()} for _ in range(2)]
        if with_stream:
            assert streams["annotated"].state_dict() == {"epoch": 0, "batch": 0}  # never drawn
        for stream in streams.values():
            stream.close()
        return out

    assert losses(False) == losses(True)


def test_a_run_with_annotations_end_to_end(workspace: Workspace) -> None:
    evaluation, annotated = _split(workspace)
    config = api.make_config(workspace, "tiny", ["method.name=source_only", "train.steps=2",
                                                 "train.annotated_weight=1.0", "tag=annotated-test"])
    record, _ = ensure_run(workspace, config, "cpu", console=False)
    run = workspace.store().open_run(record.run_id)
    steps = run.events("train")  # the named losses of every logged step: the method's and `annotated`
    assert steps and all({"source_main", "annotated"} <= e.keys() and e["annotated"] > 0 for e in steps)
    report = run.read_report()
    assert report is not None
    assert report["num_images"] == len(evaluation)  # the annotated images are not in the report's image count
    assert {i["name"] for i in report["images"]} == evaluation
    assert report["annotated_train"] == sorted(annotated)
    # a user without annotated images: a clear error
    bare = Path(workspace.personal) / "id1" / "annotated.txt"
    saved = bare.read_text()
    bare.unlink()
    try:
        with pytest.raises(ConfigError, match="annotate images in the Annotate tab or list them in annotated.txt"):
            api.train(workspace, api.make_config(workspace, "tiny", ["method.name=source_only", "train.steps=1",
                                                                     "train.annotated_weight=1.0"]),
                      device="cpu", console=False)
    finally:
        bare.write_text(saved)
