"""Pure loss functions of the adaptation methods (ADVENT/MinEnt, AdaptSegNet, FDA, MaxSquare, MRNet, IntraDA/PSS).

Each function takes logits or probabilities at whatever resolution the caller chose (upsampling to the label size
is the caller's job) and returns an unweighted scalar tensor; the method applies its weight. Facts and equations:
``reference/methods.md`` §2 (ADVENT), §4 (FDA), §5 (MaxSquare), §6 (MRNet), §1.6 (PSS image ranking).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pss.data.labels import IGNORE_INDEX
from pss.ops.kernels import fast_kernels

# ADVENT adds 1e-30 inside log2 so that p = 0 gives 0 * log2(1e-30) = 0 instead of NaN.
_LOG_EPS = 1e-30


def _check_nchw(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(x.shape)}")


def entropy_map(prob: torch.Tensor) -> torch.Tensor:
    """ADVENT ``prob_2_entropy``: the C-channel weighted self-information map fed to the AdvEnt discriminator.

    ``I_c = -p_c * log2(p_c + 1e-30) / log2(C)`` per channel (ADVENT eq. 1 scaled to [0, 1] per pixel sum).

    Shape:
        prob: (N, C, H, W) softmax probabilities -> (N, C, H, W).
    """
    _check_nchw(prob, "prob")
    return -prob * torch.log2(prob + _LOG_EPS) / math.log2(prob.shape[1])


class _LogitEntropyMap(torch.autograd.Function):
    """``I = -p·ln p / ln C`` with ``p = softmax(x)``, forward and backward in a few fused passes.

    Backward: with ``v_c = g_c · -(ln p_c + 1) / ln C`` (dI_c/dp_c), the chain rule through the softmax gives
    ``dx = p ⊙ (v - Σ_c p_c v_c)``: PyTorch's softmax backward applied to ``v``.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        prob = log_p.exp()
        scale = -1.0 / math.log(logits.shape[1])
        ctx.save_for_backward(prob, log_p)
        ctx.scale = scale
        return torch.mul(prob, log_p).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        prob, log_p = ctx.saved_tensors
        v = (log_p + 1.0).mul_(grad).mul_(ctx.scale)
        return torch._softmax_backward_data(v, prob, 1, prob.dtype)


def entropy_map_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """:func:`entropy_map` of ``softmax(logits)``, from the logits: the same map (ADVENT eq. 1 scaled by 1/log C)
    computed through ``log_softmax``, so ``log p`` is exact and ADVENT's ``1e-30`` guard is not needed (the two agree
    to rounding wherever p > 1e-28; where the softmax underflows to 0 both give 0 and a zero gradient). On CPU it runs
    as one fused forward and backward (:class:`_LogitEntropyMap`), several times faster than the chain of element-wise
    operations; ``pss.ops.kernels.stock_kernels`` selects the plain chain.

    Shape:
        logits: (N, C, H, W) -> (N, C, H, W) float32.
    """
    _check_nchw(logits, "logits")
    logits = logits.float()
    if not fast_kernels():
        return entropy_map(torch.softmax(logits, dim=1))
    return _LogitEntropyMap.apply(logits)


def pixel_entropy(prob: torch.Tensor) -> torch.Tensor:
    """Normalised Shannon entropy per pixel, in [0, 1]: the channel sum of ``entropy_map``.

    Shape:
        prob: (N, C, H, W) -> (N, H, W).
    """
    return entropy_map(prob).sum(dim=1)


def entropy_loss(prob: torch.Tensor) -> torch.Tensor:
    """MinEnt loss (ADVENT eq. 3): ``-sum(p * log2(p + 1e-30)) / (N * H * W * log2 C)``, the mean pixel entropy.

    Shape:
        prob: (N, C, H, W) -> scalar.
    """
    return pixel_entropy(prob).mean()


class _SummedCrossEntropy(torch.autograd.Function):
    """``Σ_valid (logsumexp_c x - x_y)``: ``F.cross_entropy(..., reduction="sum")`` with a fused backward.

    Backward: ``dx = g · (softmax(x) - onehot(y))`` on valid pixels, 0 on ignored ones, built from the saved
    log-sum-exp in one exp pass and a scatter (PyTorch's log_softmax backward over the class dimension of a
    full-size NCHW map took ~12 ms of the demo step on two cores, this ~4 ms; ``bench/train_step.py``).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
        valid = target != ignore_index
        index = target.masked_fill(~valid, 0).unsqueeze(1)
        lse = torch.logsumexp(logits, dim=1, keepdim=True)
        ctx.save_for_backward(logits, lse, index, valid)
        return ((lse - logits.gather(1, index)).squeeze(1) * valid).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, lse, index, valid = ctx.saved_tensors
        dx = (logits - lse).exp_()
        dx.scatter_add_(1, index, torch.full_like(lse, -1.0))
        return dx.mul_(valid.unsqueeze(1) * grad), None, None


def seg_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel cross-entropy averaged over the non-ignored pixels (0, with a gradient path, when none is valid).

    Shape:
        logits: (N, C, H, W); target: (N, H, W) class indices, ``ignore_index`` for ignored pixels -> scalar.
    """
    _check_nchw(logits, "logits")
    target = target.long()
    if fast_kernels() and logits.device.type == "cpu":
        total = _SummedCrossEntropy.apply(logits.float(), target, ignore_index)
    else:
        total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    # Dividing by max(count, 1) avoids the NaN that reduction="mean" gives for an all-ignored crop, without a sync.
    count = (target != ignore_index).sum().clamp_min(1)
    return total / count


def bce_domain(d_logits: torch.Tensor, domain_label: int) -> torch.Tensor:
    """Adversarial BCE of a patch discriminator's logits against a constant domain map (AdaptSegNet/ADVENT).

    Shape:
        d_logits: (N, 1, h, w) discriminator logits -> scalar; ``domain_label`` 0 (source) or 1 (target).
    """
    if domain_label not in (0, 1):
        raise ValueError(f"domain_label must be 0 (source) or 1 (target), got {domain_label!r}")
    return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, float(domain_label)))


def max_square_loss(prob: torch.Tensor) -> torch.Tensor:
    """MaxSquare loss (Chen et al. ICCV19 eq. 6): ``-mean(p^2) / 2`` over all N*C*H*W elements.

    Shape:
        prob: (N, C, H, W) softmax probabilities -> scalar.
    """
    _check_nchw(prob, "prob")
    return -prob.pow(2).mean() / 2


def iw_max_square_loss(prob: torch.Tensor, ratio: float = 0.2) -> torch.Tensor:
    """Image-wise weighted MaxSquare (MaxSquare eq. 9, official ``IW_MaxSquareloss``).

    Per image, ``n_c`` = pixels whose argmax is class c and ``n`` = all pixels; class weight
    ``w_c = 1 / max(n_c^ratio * n^(1 - ratio), 1)``; every channel of a pixel is weighted by the (detached) weight of
    its argmax class; ``loss = -sum(p^2 * w) / (N * C)``.

    Shape:
        prob: (N, C, H, W) softmax probabilities -> scalar.
    """
    _check_nchw(prob, "prob")
    n, c, h, w = prob.shape
    with torch.no_grad():
        arg = prob.argmax(dim=1).reshape(n, -1)                                  # (N, H*W)
        counts = torch.zeros(n, c, device=prob.device, dtype=torch.float32)
        counts.scatter_add_(1, arg, torch.ones_like(arg, dtype=torch.float32))
        class_weight = 1.0 / torch.clamp_min(counts.pow(ratio) * float(h * w) ** (1.0 - ratio), 1.0)
        pixel_weight = class_weight.gather(1, arg).reshape(n, 1, h, w).to(prob.dtype)
    return -(prob.pow(2) * pixel_weight).sum() / (n * c)


def robust_entropy(logits: torch.Tensor, eta: float = 2.0) -> torch.Tensor:
    """FDA's robust (Charbonnier-penalised) entropy: ``mean((ent^2 + 1e-8)^eta)``.

    ``ent = -sum_c softmax * log_softmax / ln(C)`` per pixel. The official code divides by ln 19 (Cityscapes)
    whatever C is; we divide by ln C so that ``ent`` is in [0, 1] for any label space.

    Shape:
        logits: (N, C, H, W) -> scalar.
    """
    _check_nchw(logits, "logits")
    log_p = F.log_softmax(logits, dim=1)
    ent = -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])
    return (ent.pow(2) + 1e-8).pow(eta).mean()


def _pixel_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``sum_c p * (log p - log q)`` per pixel (PyTorch's KLDivLoss(log q, p) summed over C). (N,C,H,W) -> (N,H,W)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


def rectified_ce(logits_a: torch.Tensor, logits_b: torch.Tensor, target: torch.Tensor,
                 class_weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """MRNet stage-II variance-rectified pseudo-label loss (Zheng & Yang IJCV21 eq. 9; ``update_variance``).

    ``var = KL(softmax(b) || softmax(a))`` per pixel, ``CE = CE_w(a, y)`` per pixel (0 at ignored pixels),
    ``loss = mean(CE * exp(-var)) + mean(var)``, both means over *all* pixels including ignored ones, as the official
    code. MRNet's total is ``rectified_ce(main, aux, y) + 0.5 * rectified_ce(aux, main, y)``.

    Shape:
        logits_a, logits_b: (N, C, H, W); target: (N, H, W) pseudo labels; class_weight: (C,) -> scalar.
    """
    _check_nchw(logits_a, "logits_a")
    if logits_b.shape != logits_a.shape:
        raise ValueError(f"logits_b shape {tuple(logits_b.shape)} differs from logits_a {tuple(logits_a.shape)}")
    ce = F.cross_entropy(logits_a, target.long(), weight=class_weight, ignore_index=ignore_index, reduction="none")
    variance = _pixel_kl(F.log_softmax(logits_a, dim=1), F.log_softmax(logits_b, dim=1))
    return (ce * torch.exp(-variance)).mean() + variance.mean()


def memory_kl(main_logits: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
    """MRNet memory regularisation: both heads pulled towards their (detached) fused prediction.

    ``m = softmax(0.5 * aux + main)`` (no gradient); ``loss = (sum KL(m || softmax(main)) + sum KL(m || softmax(aux)))
    / (N * H * W)``.

    Shape:
        main_logits, aux_logits: (N, C, H, W) -> scalar.
    """
    _check_nchw(main_logits, "main_logits")
    if aux_logits.shape != main_logits.shape:
        raise ValueError(f"aux_logits shape {tuple(aux_logits.shape)} differs from main {tuple(main_logits.shape)}")
    n, _, h, w = main_logits.shape
    log_m = F.log_softmax(0.5 * aux_logits + main_logits, dim=1).detach()
    kl_main = _pixel_kl(F.log_softmax(main_logits, dim=1), log_m).sum()
    kl_aux = _pixel_kl(F.log_softmax(aux_logits, dim=1), log_m).sum()
    return (kl_main + kl_aux) / (n * h * w)


def select_easy_images(scores: Sequence[float] | np.ndarray | torch.Tensor, rate: float) -> list[int]:
    """Indices of the ``rate`` fraction of images with the lowest entropy score (IntraDA / PSS step-2 ranking).

    Ranks ascending by score (ties by index, NaN last); keeps ``max(1, floor(len * rate))`` images (the official
    ``int(len * lambda)``, with a 1e-9 guard so that e.g. 100 * 0.29 keeps 29, not 28). Returned in rank order.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    values = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, dtype=float)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return []
    keep = min(values.size, max(1, math.floor(values.size * rate + 1e-9)))
    order = np.argsort(values, kind="stable")  # stable: equal scores keep index order; NaN sorts last
    return [int(i) for i in order[:keep]]


# ---- weak supervision: EPS (methods.md §9) and AffinityNet (methods.md §10) -----------------------------------------

EPS_TAU: float = 0.4  # EPS script/voc12_eps.sh (argparse default 0.5)
EPS_LAMBDA: float = 0.5  # EPS default, not overridden
_OVERLAP_EPS = 1e-4  # EPS overlap-ratio guard
_AFF_EPS = 1e-5  # psa affinity-loss log / count guard


def multilabel_soft_margin(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin classification loss (EPS; the report's eq. 4; ``F.multilabel_soft_margin_loss``):
    ``-(1/C) Σ_c [y_c log σ(ŷ_c) + (1 - y_c) log(1 - σ(ŷ_c))]``, averaged over the batch.

    Shape:
        logits: (N, C) pooled class scores (the object classes only); tags: (N, C) multi-hot -> scalar.
    """
    if logits.shape != tags.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and tags {tuple(tags.shape)} must both be (N, C)")
    logits = logits.float()
    per_class = tags * F.logsigmoid(logits) + (1 - tags) * F.logsigmoid(-logits)
    return -per_class.mean(dim=1).mean()


@dataclass
class EPSSaliencyTerms:
    """The pieces of :func:`eps_saliency_loss` (for logging and tests).

    Shape: loss scalar; estimate (N, h, w) = Ŝ; target (N, h, w) = S at CAM size; overlap (N, C) ratios;
    foreground_classes (N, C) bool = tagged and overlap > τ.
    """

    loss: torch.Tensor
    estimate: torch.Tensor
    target: torch.Tensor
    overlap: torch.Tensor
    foreground_classes: torch.Tensor


def eps_saliency_loss(cams: torch.Tensor, tags: torch.Tensor, saliency: torch.Tensor, tau: float = EPS_TAU,
                      lam: float = EPS_LAMBDA) -> EPSSaliencyTerms:
    """EPS's saliency loss (Lee et al. CVPR21; ``papers/eps_affinitynet_reproduction_zh.txt`` §3.2-3.3, eq. 1-3;
    official ``get_eps_loss``, methods.md §9).

    ``p = softmax(cams)`` over the C+1 maps (channel 0 = background here; EPS puts it last). The saliency map S is
    resized *nearest* to the CAM size. Per tagged class, the overlap ratio ``O_c = Σ B(p_c)·B(S) / (Σ B(p_c) + 1e-4)``
    with ``B(x) = [x > 0.5]`` (official ``round``; detached). Eq. 2: a tagged class with ``O_c > τ`` is foreground,
    one with ``O_c ≤ τ`` joins the background: ``M_fg = Σ_{fg} p_c``, ``M_bg = p_bg + Σ_{tagged, not fg} p_c``.
    Eq. 1: ``Ŝ = λ·M_fg + (1 - λ)·(1 - M_bg)``. Eq. 3: ``L_sal = mean (Ŝ - S)²`` over the pixels. Pixels whose
    saliency is negative (the padding of a training crop, ``pss.data.saliency.PAD_VALUE``) are left out of the
    ratios and the mean; without padding this is exactly the official loss.

    Shape:
        cams: (N, C+1, h, w) raw maps; tags: (N, C) multi-hot object classes; saliency: (N, H, W) in [0, 1].
    """
    _check_nchw(cams, "cams")
    n, channels, height, width = cams.shape
    if tags.shape != (n, channels - 1):
        raise ValueError(f"tags must be (N, C) = {(n, channels - 1)} for cams {tuple(cams.shape)}, "
                         f"got {tuple(tags.shape)}")
    target = F.interpolate(saliency.float().unsqueeze(1), size=(height, width), mode="nearest").squeeze(1)
    valid = (target >= 0).float()
    target = target.clamp_min(0)
    prob = torch.softmax(cams.float(), dim=1)
    fg_prob, bg_prob = prob[:, 1:], prob[:, 0]
    tagged = tags.float()
    with torch.no_grad():
        binary = (fg_prob > 0.5).float() * valid.unsqueeze(1)
        overlap = (binary * (target > 0.5).float().unsqueeze(1)).sum(dim=(2, 3)) / (binary.sum(dim=(2, 3))
                                                                                    + _OVERLAP_EPS)
        foreground = (tagged > 0) & (overlap > tau)
    fg_weight = foreground.float().view(n, -1, 1, 1)
    bg_weight = (tagged.view(n, -1, 1, 1) * (1 - fg_weight))
    m_fg = (fg_prob * fg_weight).sum(dim=1)
    m_bg = bg_prob + (fg_prob * bg_weight).sum(dim=1)
    estimate = lam * m_fg + (1 - lam) * (1 - m_bg)
    loss = (((estimate - target) ** 2) * valid).sum() / valid.sum().clamp_min(1)
    return EPSSaliencyTerms(loss, estimate, target, overlap, foreground)


@dataclass
class AffinityPairLabels:
    """Per pair of the batch, as float 0/1 (psa ``VOC12AffDataset``): ``bg_pos`` both ends background (0),
    ``fg_pos`` the same object class, ``neg`` two different valid labels; pairs touching an ignored (255) end are
    in none. Shape: each (N, P)."""

    bg_pos: torch.Tensor
    fg_pos: torch.Tensor
    neg: torch.Tensor


def affinity_pair_labels(grid_labels: torch.Tensor, index_from: torch.Tensor, index_to: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX) -> AffinityPairLabels:
    """The three pair label sets of psa from label maps on the feature grid.

    Shape: grid_labels (N, h, w) (0 background, 1..C classes, ``ignore_index`` uncertain); indices (P,) ->
    each (N, P)."""
    flat = grid_labels.reshape(grid_labels.shape[0], -1)
    a, b = flat[:, index_from], flat[:, index_to]
    valid = (a != ignore_index) & (b != ignore_index)
    same = (a == b) & valid
    return AffinityPairLabels((same & (a == 0)).float(), (same & (a != 0)).float(), (valid & (a != b)).float())


@dataclass
class AffinityLossTerms:
    """``loss = bg/4 + fg/4 + neg/2`` (psa ``train_aff.py``) and its three averaged parts (scalars)."""

    loss: torch.Tensor
    bg: torch.Tensor
    fg: torch.Tensor
    neg: torch.Tensor


def affinity_loss(aff: torch.Tensor, labels: AffinityPairLabels) -> AffinityLossTerms:
    """AffinityNet's loss (Ahn & Kwak CVPR18; psa ``train_aff.py``, methods.md §10): each part averaged over its pairs,
    ``bg = Σ -bg_pos·log(aff + 1e-5) / (Σ bg_pos + 1e-5)``, ``fg`` likewise, ``neg = Σ -neg·log(1 + 1e-5 - aff) /
    (Σ neg + 1e-5)``; ``loss = bg/4 + fg/4 + neg/2`` (the two positive terms' mean halved, plus half the negative).

    Shape: aff (N, P) in (0, 1]; labels each (N, P) -> scalars.
    """
    aff = aff.float()
    pos_log = -torch.log(aff + _AFF_EPS)
    bg = (labels.bg_pos * pos_log).sum() / (labels.bg_pos.sum() + _AFF_EPS)
    fg = (labels.fg_pos * pos_log).sum() / (labels.fg_pos.sum() + _AFF_EPS)
    neg = (labels.neg * -torch.log(1 + _AFF_EPS - aff)).sum() / (labels.neg.sum() + _AFF_EPS)
    return AffinityLossTerms(bg / 4 + fg / 4 + neg / 2, bg, fg, neg)
