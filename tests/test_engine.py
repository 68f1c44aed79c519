"""The training loop over the method registry, resume == uninterrupted, and evaluation against hand values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixed_batch import write_records
from pss.config import build_config
from pss.data.labels import write_label_png
from pss.data.records import ImageRecord
from pss.engine.data import make_stream
from pss.engine.evaluate import EvalSettings, evaluate_records
from pss.engine.hooks import Hook
from pss.engine.trainer import Trainer
from pss.errors import ConfigError
from pss.methods import METHODS, build_method
from pss.models.segmenter import SegOutput, build_segmenter


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[ImageRecord]]:
    """Tiny labelled source and unlabelled target images (random textures, one square object each)."""
    return write_records(tmp_path_factory.mktemp("engine-data"))


def _trainer(method_name: str, records: dict[str, list[ImageRecord]], steps: int, ckpt_dir: Path | None = None,
             overrides: tuple[str, ...] = (), device: str = "cpu") -> Trainer:
    torch.manual_seed(0)
    config = build_config("tiny", [f"method.name={method_name}", f"train.steps={steps}", *overrides])
    model = build_segmenter(config.model)
    method = build_method(method_name, config.method_params(), config.model.num_classes)
    groups = {r.name: i % 2 for i, r in enumerate(records["source"] + records["target"])}
    use_groups = config.model.context.mode != "none"
    # the method's declared fields (e.g. tags, for transfer's P-Net loss); () for most methods: the batches as before
    streams = {"source": make_stream(records["source"], groups if use_groups else None, config, 1,
                                     fields=method.fields)}
    if method.uses("target"):
        streams["target"] = make_stream(records["target"], groups if use_groups else None, config, 2)
    if method.uses("pseudo"):  # pseudo labels = the source labels, enough to exercise the pseudo batch path
        streams["pseudo"] = make_stream(records["source"], None, config, 3)
    path = (lambda step: ckpt_dir / f"step_{step}.pt") if ckpt_dir else None
    return Trainer(config, model, method, streams, torch.device(device), checkpoint_path=path)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_every_method_trains_three_steps(method_name: str, device: str, records: dict[str, list[ImageRecord]]) -> None:
    trainer = _trainer(method_name, records, steps=3, overrides=("train.log_every=1",), device=device)
    if device == "cuda":  # train.amp / channels_last = auto: the fast path is on
        assert trainer.fast.autocast_dtype == torch.bfloat16 and trainer.fast.channels_last
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.dtype.is_floating_point}
    aux_before = [p.detach().clone() for p in trainer.method.parameters()]
    seen: list[dict[str, float]] = []

    class Spy(Hook):
        def on_log(self, trainer: Trainer, step: int, losses: dict[str, float], lr: float) -> None:
            seen.append(losses)

    trainer.hooks.append(Spy())
    result = trainer.run()
    assert result.status == "done" and result.step == 3 and len(seen) == 3
    for losses in seen:
        assert losses and all(np.isfinite(v) for v in losses.values())
    assert "source_main" in seen[0]
    if METHODS[method_name].uses("target"):
        assert any(k.startswith("target_") for k in seen[0])
    if METHODS[method_name].uses("pseudo"):
        assert "pseudo_main" in seen[0]  # step 0 is a pseudo step (pseudo_every = 2)
    moved = [k for k, v in trainer.model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert "classifier.weight" in moved or any(k.endswith("weight") for k in moved)
    assert len(moved) > len(before) // 2
    for old, new in zip(aux_before, trainer.method.parameters()):
        assert not torch.equal(old, new.detach()), "the method's discriminator did not train"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_resume_equals_uninterrupted(device: str, records: dict[str, list[ImageRecord]], tmp_path: Path) -> None:
    straight = _trainer("pss", records, steps=4, device=device)
    straight.run()
    first = _trainer("pss", records, steps=4, ckpt_dir=tmp_path, overrides=("train.checkpoint_every=2",),
                     device=device)
    while first.step < 2:
        first.train_step()
        first.step += 1
    checkpoint = first.save()
    assert checkpoint is not None and checkpoint.is_file()
    resumed = _trainer("pss", records, steps=4, device=device)
    torch.manual_seed(123)  # the resumed process starts with another RNG state; the checkpoint restores it
    resumed.resume(checkpoint)
    resumed.run()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        # CPU: bit-identical. CUDA: some backward kernels (bilinear upsampling, adaptive pooling) accumulate with
        # atomics, so two uninterrupted runs already differ in the last bits; compare with a tolerance there.
        return torch.equal(a, b) if device == "cpu" else torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4)

    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert same(a, b), f"{name} differs after resume"
    for a, b in zip(straight.method.parameters(), resumed.method.parameters()):
        assert same(a.detach(), b.detach())


class _ConstantModel(torch.nn.Module):
    """Predicts class 1 everywhere (logit 5 for class 1, 0 elsewhere)."""

    def forward(self, x: torch.Tensor, group_ids: torch.Tensor | None = None) -> SegOutput:
        logits = torch.zeros(x.shape[0], 21, x.shape[2] // 8, x.shape[3] // 8)
        logits[:, 1] = 5.0
        return SegOutput(logits, logits, logits[:, :4])


def test_evaluation_matches_hand_computed_metrics(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.jpg")
    label = np.zeros((16, 16), np.uint8)
    label[:, 8:] = 1  # left half background, right half class 1
    write_label_png(tmp_path / "a.png", label)
    record = ImageRecord("a", tmp_path / "a.jpg", tmp_path / "a.png")
    report, entropy = evaluate_records(_ConstantModel(), [record], None, EvalSettings(torch.device("cpu"), 16))
    # prediction = 1 everywhere: class 1 IoU = 128/256 = 0.5, class 0 IoU = 0/128 = 0.
    # FIoU (PSS): inter = (p == t) & (p > 0) = 128 px, union = (p > 0) | (t > 0) = 256 px -> 0.5.
    assert report.fiou == pytest.approx(0.5)
    assert report.miou["pss"] == pytest.approx(0.5 / 21)        # 21 classes, absent ones count 0
    assert report.miou["present"] == pytest.approx(0.25)        # nan-mean over classes 0 and 1
    p1 = np.exp(5) / (np.exp(5) + 20)
    p0 = 1 / (np.exp(5) + 20)
    expected_entropy = -(p1 * np.log2(p1) + 20 * p0 * np.log2(p0)) / np.log2(21)
    assert entropy["a"] == pytest.approx(expected_entropy, rel=1e-4)


def test_bare_on_off_overrides_reach_the_switches_as_words() -> None:
    # YAML 1.1 parses a bare `off` / `on` as a boolean; the config maps it back for on/off switches
    config = build_config("tiny", ["train.amp=off", "train.channels_last=on"])
    assert (config.train.amp, config.train.channels_last) == ("off", "on")
    with pytest.raises(ConfigError, match="is not one of"):
        build_config("tiny", ["train.amp=true"])  # amp has no "on": a boolean stays an error there


def test_padded_chunk_gives_the_unpadded_logits() -> None:
    # CUDA evaluation pads a chunk with blank images of another group; the real images must not notice
    from pss.engine.evaluate import chunk_logits

    torch.manual_seed(0)
    model = build_segmenter(build_config("tiny", ["method.name=pss"]).model).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (60, 90, 3), dtype=np.uint8) for _ in range(3)]
    settings = EvalSettings(torch.device("cpu"), short_side=64, batch_size=8)
    plain = chunk_logits(model, images, settings, pad=False)
    padded = chunk_logits(model, images, settings, pad=True)
    assert plain.shape[0] == padded.shape[0] == 3 and plain.shape[-2:] == (8, 12)  # 64 x 96: sides in steps of 32
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)
