"""The gated context (``model.context.gate``): a context model loaded from a context-free one predicts exactly as
it at the start, and the gate is a parameter that training moves."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pss.engine.checkpoint import load_model_weights, save_checkpoint
from pss.errors import CheckpointError
from pss.models.context import ContextConfig
from pss.models.segmenter import ModelConfig, build_segmenter


@pytest.mark.parametrize("mode", ["group", "global"])
def test_gated_context_model_starts_as_the_context_free_model(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = build_segmenter(ModelConfig(backbone="tiny", pretrained=False, context=ContextConfig(mode="none")))
    path = save_checkpoint(tmp_path / "plain.pt", {"model": plain.state_dict()})
    gated = build_segmenter(ModelConfig(backbone="tiny", pretrained=False,
                                        context=ContextConfig(mode=mode, key_channels=16, gate=True)))
    with pytest.raises(CheckpointError):  # strict by default: the context layers are missing from the file
        load_model_weights(gated, path)
    load_model_weights(gated, path, new_prefixes=("context.",))
    x = torch.rand(4, 3, 64, 64)
    plain.eval(), gated.eval()
    with torch.no_grad():
        assert torch.equal(gated(x).logits, plain(x).logits)
    # the paper's context (no gate) replaces the features with psi([X, c]): a fresh one changes the prediction
    paper = build_segmenter(ModelConfig(backbone="tiny", pretrained=False,
                                        context=ContextConfig(mode=mode, key_channels=16, gate=False)))
    load_model_weights(paper, path, new_prefixes=("context.",))
    paper.eval()
    with torch.no_grad():
        assert not torch.allclose(paper(x).logits, plain(x).logits)
    # the gate gets a gradient at 0, so training can open it
    gated.train()
    gated(x).logits.square().mean().backward()
    gamma = gated.context.block.gamma
    assert gamma is not None and gamma.grad is not None and float(gamma.grad.abs()) > 0


def test_attention_probe_on_a_tiny_group_model(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from pss.data.labels import write_label_png
    from pss.data.records import ImageRecord
    from pss.experiments.context_probe import probe_attention

    records = []
    for i in range(4):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.jpg")
        label = np.zeros((64, 64), np.uint8)
        label[:32] = 1 + i % 2
        write_label_png(tmp_path / f"{i}.png", label)
        records.append(ImageRecord(f"im{i}", tmp_path / f"{i}.jpg", tmp_path / f"{i}.png"))
    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(backbone="tiny", pretrained=False,
                                        context=ContextConfig(mode="group", key_channels=16, gate=True)))
    probe = probe_attention(model, records, {r.name: i // 2 for i, r in enumerate(records)}, torch.device("cpu"), 64)
    # two groups of two images: uniform attention would put 1/2 on the own image; masses are fractions
    assert probe.mean_group_size == 2 and probe.own_image_uniform == pytest.approx(0.5)
    assert 0 <= probe.own_class_other_images <= probe.own_class <= 1 and 0 <= probe.own_image <= 1
    assert 0 < probe.entropy <= 1 and probe.gamma == 0.0 and probe.pixels > 0
