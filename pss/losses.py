"""Pure loss functions of the adaptation methods (ADVENT/MinEnt, AdaptSegNet, FDA, MaxSquare, MRNet, IntraDA/PSS).

Each function takes logits or probabilities at whatever resolution the caller chose (upsampling to the label size
is the caller's job) and returns an unweighted scalar tensor; the method applies its weight. Facts and equations:
``reference/methods.md`` §2 (ADVENT), §4 (FDA), §5 (MaxSquare), §6 (MRNet), §1.6 (PSS image ranking).
"""
from __future__ import annotations

import math
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
