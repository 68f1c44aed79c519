"""Whether the second stage that continues a run would pseudo-label an image, and why (the Inspect view's caption).

The policy is the registered method's own (``pss.methods.pseudo``), found through the registry: the run's method
when it trains on pseudo labels, else the method that starts from it (``Method.starts_from``: ``pss`` -> ``pss_s2``,
``fda`` -> ``fda_ssl``, ``mrnet`` -> ``mrnet_s2``), else PSS step 2 (the product's second stage, shown for runs that
no registered stage continues, e.g. a No-DA model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pss.methods import METHODS, build_method

if TYPE_CHECKING:  # pragma: no cover
    from pss.api.inspect import RunContext

DEFAULT_STAGE = "pss_s2"


@dataclass
class PseudoStatus:
    """Whether ``stage`` (started from this run) would pseudo-label the image, and why.

    ``rank`` is 1-based among the user's images by ascending mean entropy; ``keep`` of ``total`` images are
    selected by the stage's policy (PSS step 2, ``select_easy_images``: the ``max(1, floor(total * select_rate))``
    lowest; FDA's and MRNet's label every image). ``select_rate`` and ``pixel_keep_rate``: the policy's.
    """

    mean_entropy: float
    rank: int
    total: int
    keep: int
    selected: bool
    select_rate: float
    pixel_keep_rate: float
    stage: str = DEFAULT_STAGE


def next_stage(method: str) -> str:
    """The method whose pseudo labels a run of ``method`` would feed (see the module docstring)."""
    # a pipeline (``Method.stages``) makes its pseudo masks in its own stages, not with a policy over a model's
    # prediction: it is never the "next stage" here (its masks are in its run directory)
    if method in METHODS and METHODS[method].uses("pseudo") and not METHODS[method].stages:
        return method
    return next((name for name, cls in METHODS.items() if cls.starts_from == method and not cls.stages),
                DEFAULT_STAGE)


def pseudo_status(ctx: RunContext, name: str, mean_entropy: float) -> PseudoStatus:
    """Rank ``name`` among the mean entropies of the run's report (its own value from ``mean_entropy`` when the
    report has none) and apply the selection of the next stage's policy with the run's pseudo settings (those of a
    second-stage run; the stage's defaults otherwise)."""
    method = ctx.config.method_name
    stage = next_stage(method)
    params = {"pseudo": ctx.config.method.get("pseudo") or {}} if stage == method else {}
    policy = build_method(stage, params, ctx.config.model.num_classes).pseudo_policy()
    assert policy is not None  # next_stage only returns methods that draw pseudo batches
    scores = dict(ctx.report.get("mean_entropy") or {})
    scores.setdefault(name, mean_entropy)
    chosen = policy.selected_images(scores)
    order = sorted(scores, key=lambda n: (scores[n], list(scores).index(n)))
    return PseudoStatus(float(scores[name]), order.index(name) + 1, len(scores), len(chosen), name in chosen,
                        policy.select_rate, policy.pixel_keep_rate, stage)


__all__ = ["DEFAULT_STAGE", "PseudoStatus", "next_stage", "pseudo_status"]
