"""The user's tags as supervision, as runs (issue 17): two pipeline methods of the one run store.

* ``eps_seg`` = the Table 1 row "EPS (tags)": stages ``saliency -> cam -> segmenter``;
* ``eps_affinity`` = "EPS + AffinityNet (tags)": ``saliency -> cam -> affinity -> segmenter``.

Each stage is a building block of ``pss.weak.pipeline`` (its runner: ``pss.weak.eps_run``). ``saliency``: our
class-agnostic saliency model trained on the source masks (``pss.methods.saliency``), skipped when the user supplied
``SALImages/``; ``cam``: EPS (methods.md §9: ``L_cls + L_sal``, τ = 0.4, λ = 0.5) on the user's tagged images, its
multi-scale + flip CAMs restricted to each image's tags and the EPS pseudo masks (background score 0.20);
``affinity``: AffinityNet on the confident regions of those CAMs (methods.md §10: radius 5, ``bg/4 + fg/4 + neg/2``)
and its random walk (β = 8, t = 2^logt, α = 16) refining them; ``segmenter``: ``weak_seg`` (source CE + CE on the
last stage's masks) from ``train.init_from``, the No-DA model (``starts_from = "source_only"``), as every other
second stage.

Run through its runner, a pipeline trains each stage for :meth:`EPSPipeline.stage_steps`. Its own losses (what
the one loop computes when this class is stepped directly) are its final stage's: ``weak_seg``'s on a source batch
and a pseudo batch. ``method.pseudo.folder`` is set by the runner (the run's mask folder), never by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pss.methods.eps import EPSConfig
from pss.methods.weak_seg import WeakSeg, WeakSegConfig
from pss.models.affinity import PSA_RADIUS


PLAIN_CAM = "cam_plain"  # the optional plain-CAM stage (``EPSPipelineConfig.cam_plain``), not in ``stages``


@dataclass
class EPSPipelineConfig(WeakSegConfig):
    """Stage lengths and options of the tags pipelines (the segmenter stage trains ``train.steps``).

    saliency_steps / cam_steps / affinity_steps: training steps of those stages (the saliency stage is skipped,
        0 steps, when the user has ``SALImages/``).
    eps: the EPS loss (methods.md §9: τ 0.4, λ 0.5, weights 1 and 1).
    radius: AffinityNet's pair radius on the stride-8 grid (psa: 5).
    infer_short_side: CAMs, saliency and the random walk are computed at this short side (None: the image's own
        size; large phone photos: e.g. 320 bounds the walk's memory) and written at the image's size.
    net_output_stride: output stride of the CAM classifier and AffinityNet (EPS and psa: 8, the random walk's
        grid); the saliency model and the segmenter keep ``model.output_stride``.
    cam_plain: also train the plain CAM baseline (the same classifier and inference without the saliency loss,
        ``cam_steps`` steps, its own training stage ``cam_plain`` after ``cam``) and score its masks, written to
        ``<run>/cam_plain/`` (the "CAM" row of the pseudo-mask quality table); nothing trains on them.
    """

    saliency_steps: int = 100
    cam_steps: int = 100
    affinity_steps: int = 100
    eps: EPSConfig = field(default_factory=EPSConfig)
    radius: int = PSA_RADIUS
    infer_short_side: int | None = None
    net_output_stride: int = 8
    cam_plain: bool = False

    def __post_init__(self) -> None:
        for name in ("saliency_steps", "cam_steps", "affinity_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.radius < 2:
            raise ValueError(f"radius must be >= 2 (psa: 5), got {self.radius}")
        if self.infer_short_side is not None and self.infer_short_side < 16:
            raise ValueError(f"infer_short_side must be >= 16 pixels (or null), got {self.infer_short_side}")
        if self.net_output_stride not in (8, 16):
            raise ValueError(f"net_output_stride must be 8 (EPS, psa) or 16, got {self.net_output_stride}")
        if self.pseudo.folder:
            raise ValueError("method.pseudo.folder is set by the pipeline (its mask stage's folder in the run): "
                             "leave it empty")


class EPSPipeline(WeakSeg):
    """Base of the two pipelines: saliency, EPS CAMs, (AffinityNet), the segmenter on the masks."""

    Config = EPSPipelineConfig
    starts_from = "source_only"
    mask_stage = "cam"  # the stage whose masks the segmenter trains on

    def stage_steps(self, train_steps: int) -> dict[str, int]:
        cfg: EPSPipelineConfig = self.config
        steps = {"saliency": cfg.saliency_steps, "cam": cfg.cam_steps, "affinity": cfg.affinity_steps,
                 "segmenter": train_steps}
        out = {}
        for stage in self.stages:
            out[stage] = steps[stage]
            if stage == "cam" and cfg.cam_plain:  # the optional baseline, right after the EPS stage
                out[PLAIN_CAM] = cfg.cam_steps
        return out


    def skipped_stages(self, config: Any) -> frozenset[str]:
        """The saliency stage when the user supplies ``SALImages/`` (``pss.weak.eps_run`` uses them as they are)."""
        from pss.data.saliency import SALIENCY_FOLDER

        if config.data.target != "personal" or not config.data.user:
            return frozenset()
        user_maps = Path(config.data.personal_path()) / config.data.user / SALIENCY_FOLDER
        return frozenset({"saliency"}) if user_maps.is_dir() else frozenset()


class EPSSeg(EPSPipeline):
    """EPS (tags): the segmenter trains on the EPS pseudo masks (``<run>/cam/<name>.png``)."""

    name = "eps_seg"
    stages = ("saliency", "cam", "segmenter")


class EPSAffinity(EPSPipeline):
    """EPS + AffinityNet (tags): the segmenter trains on the random-walk refined masks
    (``<run>/affinity/refined/<name>.png``)."""

    name = "eps_affinity"
    stages = ("saliency", "cam", "affinity", "segmenter")
    mask_stage = "affinity"
