"""Whether PSS step 2 would pseudo-label an image of a run, and why (the Inspect view's caption)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pss.api.inspect import RunContext


@dataclass
class PseudoStatus:
    """Whether step 2 (``pss_s2`` started from this run) would pseudo-label the image, and why.

    ``rank`` is 1-based among the user's images by ascending mean entropy; the ``keep`` lowest are selected
    (``select_easy_images``: ``max(1, floor(total * select_rate))``).
    """

    mean_entropy: float
    rank: int
    total: int
    keep: int
    selected: bool
    select_rate: float
    pixel_keep_rate: float


def pseudo_status(ctx: RunContext, name: str, mean_entropy: float) -> PseudoStatus:
    """Rank ``name`` among the mean entropies of the run's report (its own value from ``mean_entropy`` when the
    report has none) and apply the step-2 selection of the run's (or the default) pseudo-label settings."""
    from pss.losses import select_easy_images
    from pss.methods.pss import PseudoLabelConfig

    params = ctx.config.method.get("pseudo") or {}
    config = PseudoLabelConfig(**{k: v for k, v in params.items() if k in ("select_rate", "pixel_keep_rate")})
    scores = dict(ctx.report.get("mean_entropy") or {})
    scores.setdefault(name, mean_entropy)
    names = list(scores)
    chosen = select_easy_images([scores[n] for n in names], config.select_rate)
    order = sorted(range(len(names)), key=lambda i: (scores[names[i]], i))
    rank = order.index(names.index(name)) + 1
    return PseudoStatus(float(scores[name]), rank, len(names), len(chosen), names.index(name) in chosen,
                        config.select_rate, config.pixel_keep_rate)


__all__ = ["PseudoStatus", "pseudo_status"]
