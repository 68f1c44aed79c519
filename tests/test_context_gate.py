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
