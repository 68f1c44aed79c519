"""The method contract (issue 13): every method's losses unchanged, ADVENT / PSS / PSS step 2 by hand, the loop's
guarantees (critics frozen in the segmenter step, hook order, non-finite losses), and a new method in one file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fixed_batch import RECORDED, all_losses
from pss.config import build_config
from pss.engine.data import make_stream
from pss.engine.hooks import Hook
from pss.engine.trainer import Trainer
from pss.errors import ConfigError
from pss.methods import METHODS, StepBatch, StepLosses, build_method
from pss.methods.advent import Advent, AdventConfig
from pss.methods.base import SegLossWeights
from pss.methods.pss import PSS, PSSStep2, PSSStep2Config
from pss.methods.source_only import SourceOnly
from pss.models.segmenter import SegOutput, build_segmenter

C = 21


def test_every_method_gives_the_recorded_losses() -> None:
    """Moving the methods onto the contract changed no loss: three steps of every method on fixed data.

    Recorded before the change on this project's CPU; bit-identical there (``python tests/fixed_batch.py`` prints
    them). The tolerance only absorbs another CPU's float rounding; any change of the maths moves them far more.
    """
    recorded = json.loads(RECORDED.read_text())
    now = all_losses()
    assert sorted(now) == sorted(recorded), "a method was added or removed: record it with tests/fixed_batch.py"
    for name, steps in recorded.items():
        assert len(now[name]) == len(steps)
        for got, want in zip(now[name], steps):
            assert sorted(got) == sorted(want), f"{name}: loss names changed"
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), f"{name} {key}"


# ---- ADVENT, PSS, PSS step 2 by hand ---------------------------------------------------------------------------

MAIN_LOGIT, AUX_LOGIT = 2.0, 1.0  # the stub predicts class 1 (main) and class 2 (aux) everywhere


class _ConstantSegmenter(nn.Module):
    """Main logits 2 for class 1, aux logits 1 for class 2, 0 elsewhere, at stride 8."""

    num_classes = C

    def forward(self, x: torch.Tensor, group_ids: torch.Tensor | None = None) -> SegOutput:
        n, _, h, w = x.shape
        main = torch.zeros(n, C, h // 8, w // 8)
        main[:, 1] = MAIN_LOGIT
        aux = torch.zeros(n, C, h // 8, w // 8)
        aux[:, 2] = AUX_LOGIT
        return SegOutput(main, aux, main[:, :4])


def _sum_channels() -> nn.Conv2d:
    """A stand-in discriminator: D(x) = sum over channels (1x1 conv, weights 1, bias 0)."""
    conv = nn.Conv2d(C, 1, 1)
    nn.init.ones_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _ce(logit_of_label: float, top: float) -> float:
    """Cross-entropy of a pixel whose logits are ``top`` for one class and 0 for the other 20, label's logit given."""
    return math.log(math.exp(top) + C - 1) - logit_of_label


def _normalised_entropy(top: float) -> float:
    """sum_c -p_c ln p_c / ln C for logits (top, 0, ..., 0): ADVENT's entropy map summed over channels."""
    p = [math.exp(top) / (math.exp(top) + C - 1)] + [1 / (math.exp(top) + C - 1)] * (C - 1)
    return -sum(q * math.log(q) for q in p) / math.log(C)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _batch(step: int, pseudo: bool = False) -> StepBatch:
    image = torch.rand(2, 3, 16, 16)
    source = {"image": image, "label": torch.full((2, 16, 16), 1)}
    target = {"image": image, "label": torch.full((2, 16, 16), 255)}
    return StepBatch(step, source, target, {"image": image, "label": torch.full((2, 16, 16), 2)} if pseudo else None)


def _advent_by_hand() -> dict[str, float]:
    e_main, e_aux = _normalised_entropy(MAIN_LOGIT), _normalised_entropy(AUX_LOGIT)
    return {
        "source_main": 1.0 * _ce(MAIN_LOGIT, MAIN_LOGIT),  # label 1 = the main output's top class
        "source_aux": 0.4 * _ce(0.0, AUX_LOGIT),           # the aux output's top class is 2
        "target_adv_main": 0.001 * _softplus(e_main),      # BCE(D(target map), source = 0) = softplus(D)
        "target_adv_aux": 0.0002 * _softplus(e_aux),
        "d_main": 0.5 * (_softplus(e_main) + _softplus(-e_main)),  # (BCE(D(src), 0) + BCE(D(tgt), 1)) / 2
        "d_aux": 0.5 * (_softplus(e_aux) + _softplus(-e_aux)),
    }


def _losses(method: Advent, batch: StepBatch) -> dict[str, float]:
    method.d_main, method.d_aux = _sum_channels(), _sum_channels()
    out: StepLosses = method.segmenter_losses(_ConstantSegmenter(), batch)  # type: ignore[arg-type]
    return {k: float(v.detach()) for k, v in {**out.losses, **method.critic_losses(out.cache)}.items()}


@pytest.mark.parametrize("cls", [Advent, PSS])
def test_advent_and_pss_losses_by_hand(cls: type[Advent]) -> None:
    got = _losses(cls(AdventConfig(ndf=4), C), _batch(0))
    want = _advent_by_hand()
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
    assert PSS.default_context == "group" and Advent.default_context == "none"  # PSS = ADVENT + the group context


def test_pss_step2_adds_the_pseudo_loss_every_second_step_by_hand() -> None:
    method = PSSStep2(PSSStep2Config(ndf=4), C)
    assert method.uses("pseudo") and method.starts_from == "pss" and method.pseudo_policy() is method.config.pseudo
    assert [method.draws("pseudo", s) for s in range(4)] == [True, False, True, False]  # released code: every 2nd
    got = _losses(method, _batch(0, pseudo=True))
    want = {**_advent_by_hand(),
            "pseudo_main": 1.0 * _ce(0.0, MAIN_LOGIT),        # pseudo label 2; the main output's top class is 1
            "pseudo_aux": 0.4 * _ce(AUX_LOGIT, AUX_LOGIT)}    # the aux output's top class is 2
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key


# ---- the loop's guarantees ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from fixed_batch import write_records

    return write_records(tmp_path_factory.mktemp("contract"))


def _trainer(name: str, records: dict, steps: int = 2, overrides: tuple[str, ...] = (), method: object = None,
             **kwargs: object) -> Trainer:
    torch.manual_seed(0)
    config = build_config("tiny", [f"method.name={name}", f"train.steps={steps}", "train.amp=off",
                                   "train.channels_last=off", *overrides])
    model = build_segmenter(config.model)
    method = method or build_method(name, config.method_params(), C)
    streams = {"source": make_stream(records["source"], None, config, 1),
               "target": make_stream(records["target"], None, config, 2)}
    return Trainer(config, model, method, streams, torch.device("cpu"), **kwargs)  # type: ignore[arg-type]


def test_critics_get_only_their_own_gradient(records: dict) -> None:
    """The generator's adversarial loss must not train the discriminators (the loop freezes them during the
    segmenter step): at the critic optimizer's step, D's gradient is exactly that of the critic losses alone."""
    trainer = _trainer("advent", records, steps=1)
    method, critic = trainer.method, trainer.optimizers["critic"]
    caches: list[dict[str, torch.Tensor]] = []
    original_losses, original_step = method.critic_losses, critic.step

    def record_cache(cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        caches.append(cache)
        return original_losses(cache)

    def check_then_step(*args: object, **kwargs: object) -> object:
        actual = [p.grad.clone() for p in method.parameters()]
        for p in method.parameters():
            p.grad = None
        sum(original_losses(caches[0]).values()).backward()
        for got, want in zip(actual, (p.grad for p in method.parameters())):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        return original_step(*args, **kwargs)

    method.critic_losses = record_cache  # type: ignore[method-assign]
    critic.step = check_then_step  # type: ignore[method-assign]
    trainer.train_step()
    assert caches, "the critic step did not run"


class _Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_start(self, trainer: Trainer) -> None:
        self.calls.append(("start", trainer.step))

    def on_step(self, trainer: Trainer, step: int, losses: dict[str, torch.Tensor]) -> None:
        self.calls.append(("step", step))

    def on_log(self, trainer: Trainer, step: int, losses: dict[str, float], lr: float) -> None:
        self.calls.append(("log", step))

    def on_eval(self, trainer: Trainer, step: int, report: object) -> None:
        self.calls.append(("eval", step))

    def on_checkpoint(self, trainer: Trainer, step: int, path: object) -> None:
        self.calls.append(("checkpoint", step))

    def on_end(self, trainer: Trainer, status: str) -> None:
        self.calls.append((f"end:{status}", trainer.step))


def test_hook_order(records: dict, tmp_path: Path) -> None:
    recorder = _Recorder()
    trainer = _trainer("source_only", records, steps=4,
                       overrides=("train.log_every=2", "train.eval_every=2", "train.checkpoint_every=3"),
                       hooks=[recorder], evaluator=lambda model: object(),
                       checkpoint_path=lambda step: tmp_path / f"step_{step}.pt")
    trainer.run()
    assert recorder.calls == [
        ("start", 0),
        ("step", 0),
        ("step", 1), ("log", 1), ("eval", 1),
        ("step", 2), ("checkpoint", 2),
        ("step", 3), ("log", 3),           # no eval at the last step: the run's final evaluation scores it
        ("checkpoint", 3), ("end:done", 4),
    ]


class _NaNAtStep1(SourceOnly):
    name = "nan_at_step_1"

    def segmenter_losses(self, model: nn.Module, batch: StepBatch) -> StepLosses:
        out = super().segmenter_losses(model, batch)  # type: ignore[arg-type]
        if batch.step == 1:
            out.losses["source_main"] = out.losses["source_main"] * float("nan")
        return out


def test_a_non_finite_loss_stops_the_run_with_advice(records: dict) -> None:
    recorder = _Recorder()
    trainer = _trainer("source_only", records, steps=3, overrides=("train.log_every=1",), hooks=[recorder],
                       method=_NaNAtStep1(SegLossWeights(), C))
    with pytest.raises(FloatingPointError, match="non-finite loss at step 2.*lower train.lr"):
        trainer.run()
    assert ("log", 0) in recorder.calls and ("log", 1) not in recorder.calls


class _EMATeacher(SourceOnly):
    """A method the old loop could not host: its own optimizer (Adam), a start hook and an EMA teacher per step."""

    name = "ema_teacher"

    def __init__(self, config: object, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.total_steps = -1
        self.teacher: dict[str, torch.Tensor] = {}
        self.updates = 0

    def on_train_start(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def build_optimizers(self, model: nn.Module, train: object) -> dict[str, torch.optim.Optimizer]:
        return {"student": torch.optim.Adam(model.parameters(), lr=1e-3)}

    def after_step(self, model: nn.Module, step: int) -> None:
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                old = self.teacher.get(key, value)
                self.teacher[key] = 0.9 * old + 0.1 * value.detach()
        self.updates += 1


def test_a_new_method_owns_its_optimizer_hooks_and_checkpoint_slot(records: dict, tmp_path: Path) -> None:
    method = _EMATeacher(SegLossWeights(), C)
    trainer = _trainer("source_only", records, steps=3, method=method,
                       checkpoint_path=lambda step: tmp_path / f"step_{step}.pt")
    assert method.total_steps == 3 and list(trainer.optimizers) == ["student"]
    assert isinstance(trainer.optimizers["student"], torch.optim.Adam)
    trainer.run()
    assert method.updates == 3 and method.teacher
    saved = torch.load(tmp_path / "step_3.pt", weights_only=False)
    assert list(saved["optimizers"]) == ["student"] and saved["optimizers"]["student"]["state"]
    resumed = _trainer("source_only", records, steps=3, method=_EMATeacher(SegLossWeights(), C))
    resumed.resume(tmp_path / "step_3.pt")
    assert resumed.optimizers["student"].state_dict()["state"].keys() == saved["optimizers"]["student"]["state"].keys()


def test_a_method_without_its_streams_is_refused(records: dict) -> None:
    torch.manual_seed(0)
    config = build_config("tiny", ["method.name=advent"])
    streams = {"source": make_stream(records["source"], None, config, 1)}
    with pytest.raises(ValueError, match="draws the stream"):
        Trainer(config, build_segmenter(config.model), build_method("advent", config.method_params(), C), streams,
                torch.device("cpu"))


def test_registry_keeps_the_papers_table_order_for_its_methods() -> None:
    """The app lists methods in registry order; the paper's rows keep their relative order (new methods may be
    added anywhere after them without breaking this test)."""
    paper = ["source_only", "adaptseg", "maxsquare", "fda", "fda_ssl", "advent", "mrnet", "mrnet_s2", "pss",
             "pss_s2"]
    names = list(METHODS)
    assert [n for n in names if n in paper] == paper
    for cls in METHODS.values():
        assert "source" in cls.streams and all(s in ("source", "target", "pseudo") for s in cls.streams)
        assert cls.starts_from is None or cls.starts_from in METHODS
        assert (cls.starts_from is not None) == cls.uses("pseudo")


def test_train_help_lists_every_registered_method(capsys: pytest.CaptureFixture[str]) -> None:
    from pss.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, cls in METHODS.items():
        assert name in text
        if cls.starts_from:
            assert f"{name} (starts from a {cls.starts_from} run" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--method", "advnet"])
    assert "invalid choice: 'advnet'" in capsys.readouterr().err


class _TagAware(SourceOnly):
    """Declares the ``tags`` field; records what the loop fed it."""

    name = "tag_aware"
    fields = ("tags",)
    seen: list[torch.Tensor] = []

    def segmenter_losses(self, model: nn.Module, batch: StepBatch) -> StepLosses:
        self.seen.append(batch.source["tags"].clone())
        return super().segmenter_losses(model, batch)  # type: ignore[arg-type]


def test_declared_batch_fields_reach_the_method(records: dict) -> None:
    torch.manual_seed(0)
    config = build_config("tiny", ["train.steps=2"])
    method = _TagAware(SegLossWeights(), C)
    streams = {"source": make_stream(records["source"], None, config, 1, fields=method.fields)}
    Trainer(config, build_segmenter(config.model), method, streams, torch.device("cpu")).run()
    assert len(method.seen) == 2
    for tags in method.seen:  # the fixed records: image i holds class 1 + i % 3 only (tags from its mask)
        assert tags.shape == (len(tags), C) and set(tags.sum(dim=1).tolist()) == {1.0}
        assert tags[:, 0].sum() == 0 and set(tags.argmax(dim=1).tolist()) <= {1, 2, 3}
    with pytest.raises(ConfigError, match="batch field.*depth.*provides tags, saliency"):
        make_stream(records["source"], None, config, 1, fields=("depth",))


def test_image_tags_come_from_the_record_else_from_the_mask() -> None:
    from pss.data.datasets import image_tags
    from pss.data.records import ImageRecord

    label = torch.tensor([[0, 1], [255, 1]], dtype=torch.uint8)
    tagged = ImageRecord("a", Path("a.jpg"), None, tags=(3, 5))
    untagged = ImageRecord("b", Path("b.jpg"), Path("b.png"))
    assert torch.nonzero(image_tags(tagged, label)).flatten().tolist() == [3, 5]  # the user's tags win
    assert torch.nonzero(image_tags(untagged, label)).flatten().tolist() == [1]   # else the mask's classes
    blank = torch.full((2, 2), 255, dtype=torch.uint8)
    assert image_tags(ImageRecord("c", Path("c.jpg"), None), blank).sum() == 0   # neither: all zeros


def test_a_checkpoint_of_the_two_slot_format_still_resumes(records: dict, tmp_path: Path) -> None:
    """Checkpoints written before the contract kept the segmenter's SGD under "optimizer" and the critics' Adam under
    "aux_optimizer"; they resume into the named optimizers."""
    trainer = _trainer("advent", records, steps=2, checkpoint_path=lambda step: tmp_path / f"step_{step}.pt")
    trainer.run()
    data = torch.load(tmp_path / "step_2.pt", weights_only=False)
    named = data.pop("optimizers")
    data["optimizer"], data["aux_optimizer"] = named["segmenter"], named["critic"]
    torch.save(data, tmp_path / "old.pt")
    resumed = _trainer("advent", records, steps=2)
    resumed.resume(tmp_path / "old.pt")
    for name in ("segmenter", "critic"):
        got, want = resumed.optimizers[name].state_dict()["state"], named[name]["state"]
        assert got.keys() == want.keys() and got
        for key in want:
            for field_name, value in want[key].items():
                assert torch.equal(torch.as_tensor(got[key][field_name]), torch.as_tensor(value)), (name, key)
