"""Backbones, heads, segmenter and discriminator: shapes, weights loading, gradients, dtypes, config errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from pss.errors import ConfigError, ModelError
from pss.models.backbones import BACKBONES, Backbone, build_backbone
from pss.models.context import ContextConfig
from pss.models.discriminator import build_discriminator
from pss.models.efficientnet_lite import lite0_weights_path, load_lite0
from pss.models.heads import AuxHead, PSPModule
from pss.models.segmenter import ModelConfig, SegOutput, Segmenter, build_segmenter, param_groups, upsample

MODES = ["none", "global", "group"]
# (backbone, input side, expected PSP channels); lite0 / resnet50 random init here, pretrained lite0 tested below
BACKBONE_CASES = [("tiny", 64, 32), ("lite0", 64, 256), ("resnet50", 64, 512)]


def _tiny(mode: str = "group") -> torch.nn.Module:
    return build_segmenter(ModelConfig(backbone="tiny", context=ContextConfig(mode=mode, key_channels=16)))


@pytest.fixture(scope="module")
def random_backbones() -> dict[str, Backbone]:
    """One random-init instance per backbone, shared by the shape tests (building ResNet-50 is the slow part)."""
    torch.manual_seed(0)
    return {name: build_backbone(name, pretrained=False).eval() for name, _, _ in BACKBONE_CASES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backbone,side,psp", BACKBONE_CASES)
def test_output_shapes(random_backbones: dict[str, Backbone], backbone: str, side: int, psp: int, mode: str) -> None:
    torch.manual_seed(0)
    bb = random_backbones[backbone]
    model = Segmenter(bb, 21, bb.default_psp_channels, ContextConfig(mode=mode)).eval()
    with torch.no_grad():
        mid, out = model.backbone(torch.rand(2, 3, side, side))
    assert mid.shape == (2, model.backbone.mid_channels, 8, 8)
    assert out.shape == (2, model.backbone.out_channels, 8, 8)
    with torch.no_grad():
        result = model(torch.rand(2, 3, side, side), return_attention=True)
    assert isinstance(result, SegOutput)
    assert result.logits.shape == result.aux_logits.shape == (2, 21, 8, 8)
    assert result.features.shape == (2, psp, 8, 8)
    if mode == "group":
        assert result.attention is not None and result.attention.weights.shape == (2, 64, 42)
    else:
        assert result.attention is None


def test_odd_input_sizes_give_ceil_stride_8() -> None:
    with torch.no_grad():
        out = _tiny()(torch.rand(2, 3, 70, 50))
    assert out.logits.shape == (2, 21, 9, 7)  # ceil(70/8) = 9, ceil(50/8) = 7


def test_single_image_training_batch_is_refused_with_advice() -> None:
    model = _tiny()
    with pytest.raises(ModelError, match="eval"):
        model(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32)).logits.shape == (1, 21, 4, 4)


def _assert_all_params_get_gradient(model: torch.nn.Module) -> None:
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def _seg_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    target = torch.randint(0, 21, (x.shape[0], *x.shape[-2:]))
    size = x.shape[-2:]
    main = F.cross_entropy(upsample(out.logits, size), target)
    return main + 0.4 * F.cross_entropy(upsample(out.aux_logits, size), target)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_reaches_every_parameter(mode: str) -> None:
    torch.manual_seed(1)
    model = _tiny(mode).train()
    _seg_loss(model, torch.rand(4, 3, 48, 48)).backward()
    _assert_all_params_get_gradient(model)


def test_lite0_pretrained_weights_load_and_train() -> None:
    torch.manual_seed(2)
    model = build_segmenter(ModelConfig(backbone="lite0", pretrained=True, context=ContextConfig(key_channels=32),
                                        psp_channels=64)).train()
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.backbone._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])
    assert torch.allclose(model.mean.flatten(), torch.full((3,), 127 / 255))
    _seg_loss(model, torch.rand(2, 3, 64, 64)).backward()
    _assert_all_params_get_gradient(model)  # the unused 1280 head was dropped, so nothing is left without gradient


def test_autocast_bf16_and_channels_last() -> None:
    torch.manual_seed(3)
    model = _tiny().eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, return_attention=True)
    with torch.no_grad():
        ref = model(x)
    assert out.logits.dtype == torch.bfloat16
    assert out.attention.weights.dtype == torch.float32
    assert torch.allclose(out.attention.weights.sum(-1), torch.ones(2, 64), atol=1e-6)
    assert ref.logits.dtype == torch.float32
    assert torch.allclose(out.logits.float(), ref.logits, atol=0.05)


def test_eval_mode_is_deterministic() -> None:
    torch.manual_seed(4)
    model = _tiny().eval()
    x = torch.rand(3, 3, 40, 40)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first.logits, second.logits) and torch.equal(first.features, second.features)


def test_missing_resnet50_weights_raise_with_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError) as info:
        build_segmenter(ModelConfig(backbone="resnet50", pretrained=True))
    message = str(info.value)
    assert str(tmp_path / "checkpoints") in message
    assert "resnet50-0676ba61.pth" in message and "resnet50-11ad3fa6.pth" in message
    assert "model.weights_path" in message


def test_resnet50_weights_from_hub_cache_and_bad_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(5)
    reference = resnet50(weights=None).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference, tmp_path / "checkpoints" / "resnet50-0676ba61.pth")
    backbone = build_backbone("resnet50", pretrained=True)
    assert torch.equal(backbone.conv1.weight, reference["conv1.weight"])
    assert torch.equal(backbone.layer4[2].conv3.weight, reference["layer4.2.conv3.weight"])
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ModelError, match="not a torchvision ResNet-50"):
        build_backbone("resnet50", pretrained=True, weights_path=wrong)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="corrupt"):
        build_backbone("resnet50", pretrained=True, weights_path=corrupt)
    with pytest.raises(ModelError, match="does not exist"):
        build_backbone("resnet50", pretrained=True, weights_path=tmp_path / "absent.pth")


@pytest.mark.parametrize("cfg,needle", [
    (ModelConfig(backbone="vgg"), "['lite0', 'resnet50', 'tiny']"),
    (ModelConfig(backbone="tiny", context=ContextConfig(mode="local")),  # type: ignore[arg-type]
     "['none', 'global', 'group']"),
    (ModelConfig(backbone="tiny", num_classes=1), "model.num_classes"),
    (ModelConfig(backbone="tiny", psp_channels=0), "model.psp_channels"),
    (ModelConfig(backbone="tiny", context=ContextConfig(group_temperature=0.0)), "group_temperature"),
    (ModelConfig(backbone="tiny", context=ContextConfig(dropout=1.0)), "dropout"),
    (ModelConfig(backbone="tiny", weights_path="w.pth"), "no pretrained weights"),
    (ModelConfig(backbone="lite0", pretrained=False, weights_path="w.pth"), "model.pretrained"),
])
def test_invalid_configs_raise_config_error(cfg: ModelConfig, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_segmenter(cfg)
    assert needle in str(info.value)


def test_build_backbone_lists_options() -> None:
    with pytest.raises(ConfigError) as info:
        build_backbone("mobilenet", pretrained=False)
    assert all(name in str(info.value) for name in BACKBONES)


def test_heads_follow_the_official_layout() -> None:
    psp = PSPModule(2048, 512)
    assert [stage[0].output_size for stage in psp.stages] == [1, 2, 3, 6]
    assert all(stage[1].out_channels == 512 and stage[1].bias is None for stage in psp.stages)  # 2048 / 4 bins
    conv = psp.bottleneck[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.bias) == (4096, 512, (3, 3), None)
    aux = AuxHead(1024, 21)
    assert aux.block[0].out_channels == 1024 and aux.block[0].bias is None and aux.classifier.bias is not None
    assert _tiny().classifier.bias is None


def test_upsample_uses_half_pixel_bilinear() -> None:
    row = torch.tensor([[[[0.0, 1.0]]]])
    # align_corners=False: output pixel j samples x = (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped)
    assert torch.allclose(upsample(row, (1, 4)), torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))
    assert upsample(torch.rand(2, 21, 5, 7), (40, 56)).shape == (2, 21, 40, 56)


def test_param_groups_split_backbone_and_head() -> None:
    model = _tiny()
    model.classifier.weight.requires_grad_(False)
    groups = param_groups(model, lr=0.01, head_lr_mult=10.0)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == 0.01 and groups[1]["lr"] == pytest.approx(0.1)
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.backbone.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    assert sum(len(g["params"]) for g in groups) == len(trainable)  # no parameter in both groups


def test_discriminator_layout_and_output_size() -> None:
    disc = build_discriminator(21, ndf=8)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(21, 8), (8, 16), (16, 32), (32, 64), (64, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert [m.negative_slope for m in disc.modules() if isinstance(m, torch.nn.LeakyReLU)] == [0.2] * 4
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Sigmoid)) for m in disc.modules())
    with torch.no_grad():
        assert disc(torch.rand(2, 21, 320, 320)).shape == (2, 1, 10, 10)
        # per conv: floor((s + 2 - 4) / 2) + 1; 100 -> 50, 25, 12, 6, 3 and 75 -> 37, 18, 9, 4, 2
        assert disc(torch.rand(1, 21, 100, 75)).shape == (1, 1, 3, 2)
    with pytest.raises(ModelError, match="32"):
        disc(torch.rand(1, 21, 16, 64))
    with pytest.raises(ModelError, match="ndf"):
        build_discriminator(21, ndf=0)


def test_dilated_lite0_reproduces_the_pretrained_features() -> None:
    """Output stride 8 must compute the same features as the ImageNet network, just on a denser grid.

    With TF "SAME" padding a stride-2 output i is centred on input 2i + 1, so the OS32 stage-7 output (i) equals the
    OS8 output at 4i + 3, and the OS16 stage-4/5 outputs (i) equal the OS8 ones at 2i + 1.
    """
    torch.manual_seed(9)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        plain = load_lite0(pretrained=True, dilate_from_stage=None).eval().forward_stages(x)
        dilated = load_lite0(pretrained=True, dilate_from_stage=3).eval().forward_stages(x)
    for index, step in [(3, 2), (4, 2), (6, 4), (7, 4)]:
        sampled = dilated[index][..., step - 1::step, step - 1::step]
        assert sampled.shape == plain[index].shape
        assert torch.allclose(sampled, plain[index], atol=1e-3), index


@pytest.mark.parametrize("backbone", ["lite0", "resnet50"])
def test_output_stride_16(backbone: str) -> None:
    model = build_segmenter(ModelConfig(backbone=backbone, pretrained=False, output_stride=16)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert model.output_stride == 16
    assert out.logits.shape == (2, 21, 4, 6) and out.aux_logits.shape == (2, 21, 4, 6)


def test_unsupported_output_stride_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="output_stride"):
        build_segmenter(ModelConfig(backbone="tiny", pretrained=False, output_stride=16))
