"""The context modules against direct computations written with explicit loops (paper eqs. 4-7, released-code form)."""
from __future__ import annotations

import math

import pytest
import torch

from pss.errors import ModelError
from pss.models.context import ContextConfig, ContextModule, GlobalGroupContext, GroupRegionContext
from pss.models.segmenter import ModelConfig, build_segmenter


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    """Give every BN non-trivial running stats and affine params, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


@pytest.fixture
def group_block() -> GroupRegionContext:
    torch.manual_seed(0)
    block = GroupRegionContext(in_channels=6, key_channels=4, temperature=8.0, dropout=0.05)
    _randomise_bn(block, 1)
    return block.eval()


def _loop_regions(feats: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 as implemented: r_ci = exp(P_ci) / sum_j exp(P_cj) over positions; f_c = sum_i r_ci X_i."""
    n, c, h, w = aux.shape
    masks = torch.zeros(n, c, h, w, dtype=torch.float64)
    regions = torch.zeros(n, c, feats.shape[1], dtype=torch.float64)
    for img in range(n):
        for cls in range(c):
            e = aux[img, cls].double().exp()
            masks[img, cls] = e / e.sum()
            for y in range(h):
                for x in range(w):
                    regions[img, cls] += masks[img, cls, y, x] * feats[img, :, y, x].double()
    return masks, regions


def test_soft_regions_match_loops() -> None:
    torch.manual_seed(3)
    feats, aux = torch.randn(2, 5, 3, 4), torch.randn(2, 3, 3, 4) * 3
    masks, regions = GroupRegionContext.soft_regions(feats, aux)
    ref_masks, ref_regions = _loop_regions(feats, aux)
    assert torch.allclose(masks.reshape(2, 3, 3, 4).double(), ref_masks, atol=1e-6)
    assert torch.allclose(masks.sum(dim=2), torch.ones(2, 3))  # each soft region is a weighted mean
    assert torch.allclose(regions.double(), ref_regions, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 8.0])
def test_group_attention_matches_direct_computation(group_block: GroupRegionContext, temperature: float) -> None:
    group_block.temperature = temperature
    torch.manual_seed(4)
    n, c, ch, h, w, k = 2, 3, 6, 3, 4, 4
    feats, aux = torch.randn(n, ch, h, w), torch.randn(n, c, h, w) * 2
    with torch.no_grad():
        out = group_block(feats, aux, return_attention=True)
        _, regions = _loop_regions(feats, aux)
        proxy = regions.float().transpose(1, 2).unsqueeze(-1)             # (N, ch, C, 1)
        q = group_block.pixel_query(feats).double()                         # phi(X): (N, K, h, w)
        key = group_block.region_key(proxy).double()[..., 0]               # f_object(f): (N, K, C)
        val = group_block.region_value(proxy).double()[..., 0]             # sigma(f) = varphi(f): (N, K, C)
        fused_in = torch.zeros(n, 2 * k + ch, h, w, dtype=torch.float64)
        weights = torch.zeros(n, h * w, n * c, dtype=torch.float64)
        for img in range(n):
            for y in range(h):
                for x in range(w):
                    qv = q[img, :, y, x]
                    s_img = torch.stack([qv @ key[img, :, j] for j in range(c)]) / math.sqrt(k)
                    w_img = s_img.exp() / s_img.exp().sum()
                    s_grp = torch.stack([qv @ val[m, :, j] for m in range(n) for j in range(c)])
                    s_grp = s_grp * temperature / math.sqrt(k)
                    w_grp = s_grp.exp() / s_grp.exp().sum()                # eq. 6 over all N*C regions
                    weights[img, y * w + x] = w_grp
                    ctx_img = sum(w_img[j] * val[img, :, j] for j in range(c))
                    ctx_grp = sum(w_grp[m * c + j] * val[m, :, j] for m in range(n) for j in range(c))  # eq. 5
                    fused_in[img, :, y, x] = torch.cat([ctx_img, ctx_grp, feats[img, :, y, x].double()])
        expected = group_block.fuse(fused_in.float())                      # eq. 7
    att = out.attention
    assert att is not None
    assert torch.allclose(att.weights.double(), weights, atol=1e-6)
    assert torch.allclose(att.weights.sum(-1), torch.ones(n, h * w), atol=1e-6)  # sums to 1 over the 2*C regions
    assert torch.allclose(out.features, expected, atol=1e-5)
    assert att.region_image.tolist() == [0, 0, 0, 1, 1, 1]
    assert att.region_class.tolist() == [0, 1, 2, 0, 1, 2]
    assert att.region_masks.shape == (n, c, h, w)
    assert torch.allclose(att.region_masks.sum(dim=(2, 3)), torch.ones(n, c), atol=1e-6)


def test_group_ids_mask_other_groups(group_block: GroupRegionContext) -> None:
    torch.manual_seed(5)
    feats, aux = torch.randn(4, 6, 3, 3), torch.randn(4, 3, 3, 3)
    ids = torch.tensor([0, 1, 0, 1])  # interleaved, so masking by index arithmetic errors would show
    with torch.no_grad():
        mixed = group_block(feats, aux, ids, return_attention=True)
        alone = group_block(feats[[0, 2]], aux[[0, 2]], None, return_attention=True)
    weights = mixed.attention.weights.reshape(4, 9, 4, 3)  # (image, pixel, region image, class)
    for img, g in enumerate(ids.tolist()):
        for other in range(4):
            if ids[other] != g:
                assert torch.equal(weights[img, :, other], torch.zeros(9, 3))
    assert torch.allclose(mixed.attention.weights.sum(-1), torch.ones(4, 9), atol=1e-6)
    assert torch.allclose(mixed.features[[0, 2]], alone.features, atol=1e-6)
    assert torch.allclose(weights[[0, 2]][:, :, [0, 2]].reshape(2, 9, 6), alone.attention.weights, atol=1e-6)


def test_segmenter_mixed_batch_equals_groups_run_alone() -> None:
    torch.manual_seed(6)
    model = build_segmenter(ModelConfig(backbone="tiny", context=ContextConfig(key_channels=8))).eval()
    _randomise_bn(model, 2)
    x = torch.rand(4, 3, 40, 40)
    x[[1, 2]] *= 0.1      # group 3 dark, group 7 bright: different regions per group
    x[:, 0, :20] = 1.0    # a red band in every image
    ids = torch.tensor([7, 3, 3, 7])
    with torch.no_grad():
        mixed = model(x, group_ids=ids)
        first = model(x[[0, 3]])
        second = model(x[[1, 2]])
    assert torch.allclose(mixed.features[[0, 3]], first.features, atol=1e-6)
    assert torch.allclose(mixed.features[[1, 2]], second.features, atol=1e-6)
    assert torch.allclose(mixed.logits[[1, 2]], second.logits, atol=1e-6)
    with torch.no_grad():
        one_group = model(x)  # the same images as one group attend across groups: a different result
    # random-init attention is flat, so the difference is small (~7e-4), but far above float error (~3e-8)
    assert (one_group.features - mixed.features).abs().max() > 1e-4


def test_none_is_identity_and_group_differs() -> None:
    torch.manual_seed(7)
    feats, aux = torch.randn(2, 6, 4, 4), torch.randn(2, 3, 4, 4)
    none = ContextModule(6, 3, ContextConfig(mode="none"))
    group = ContextModule(6, 3, ContextConfig(mode="group", key_channels=4)).eval()
    assert list(none.parameters()) == []
    out_none = none(feats, aux, return_attention=True)
    assert torch.equal(out_none.features, feats) and out_none.attention is None
    with torch.no_grad():
        out_group = group(feats, aux)
    assert out_group.features.shape == feats.shape
    assert not torch.allclose(out_group.features, feats, atol=1e-3)


def test_global_context_uses_only_same_group_images() -> None:
    torch.manual_seed(8)
    block = GlobalGroupContext(in_channels=5, key_channels=3, dropout=0.05)
    _randomise_bn(block, 3)
    block.eval()
    feats = torch.randn(4, 5, 3, 3)
    ids = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        out = block(feats, ids).features
        changed_other = feats.clone()
        changed_other[2:] = torch.randn(2, 5, 3, 3)
        out_other = block(changed_other, ids).features
        changed_member = feats.clone()
        changed_member[1] = torch.randn(5, 3, 3)
        out_member = block(changed_member, ids).features
        # direct computation for image 0: mean over the pixels of images 0 and 1, projected, broadcast, fused
        mean01 = feats[:2].mean(dim=(0, 2, 3))
        g = block.project(mean01[None, :, None, None]).expand(1, 3, 3, 3)
        expected0 = block.fuse(torch.cat([g, feats[:1]], dim=1))
    assert torch.allclose(out[:1], expected0, atol=1e-5)
    assert torch.equal(out[:2], out_other[:2])            # another group's images do not matter
    assert not torch.allclose(out[0], out_member[0])      # a member of the group does


def test_group_ids_are_validated(group_block: GroupRegionContext) -> None:
    feats, aux = torch.randn(2, 6, 2, 2), torch.randn(2, 3, 2, 2)
    with pytest.raises(ModelError, match="group_ids"):
        group_block(feats, aux, torch.tensor([0.0, 1.0]))
    with pytest.raises(ModelError, match=r"shape \(2,\)"):
        group_block(feats, aux, torch.tensor([0, 1, 1]))
