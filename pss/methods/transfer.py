"""Transfer from strong to weak classes as one run (issue 18; Xiao et al., AAAI 2018, methods.md §11): the L-Net /
P-Net pipeline registered as the method ``transfer``.

Its stages (``pss.weak.transfer_run`` runs them, ``pss.weak.transfer`` holds each one):

* ``objectness``: L-Net's class-agnostic object map M, a segmenter on the strong classes' pixels
  (``objectness_steps``; not trained when no object class is strong, the 0 % setting);
* ``cam``: a CAM network on the complete image-level tags, EPS with M as its saliency (``cam_steps``);
* ``coarse``: L-Net's coarse labels of the weak-class images (no training; CAMs at ``cam_scales``, computed at
  short side ``coarse_short_side``);
* ``pnet``: P-Net, the final segmenter (``train.steps``), with the mask discriminator (``lambda_adv`` > 0:
  "L-Net + P-Net") or without it (``lambda_adv = 0``: the "L-Net only" row of the experiment).

The config is P-Net's (:class:`~pss.methods.pnet.PNetConfig`: the split's ``strong_classes`` / ``strong_fraction``
/ ``split_seed`` / ``hide``, the loss weights, ``lambda_adv``, the discriminator) plus the stages' own settings. The
method's losses are P-Net's: its final stage is one loop of exactly this method on the split's merged labels.
"""
from __future__ import annotations

from dataclasses import dataclass

from pss.methods.pnet import PNet, PNetConfig
from pss.models.cam import EPS_SCALES


@dataclass
class TransferConfig(PNetConfig):
    """P-Net's settings (the split, ``lambda_adv``, ...) and the L-Net stages'.

    objectness_steps / cam_steps: training steps of the object-map and CAM stages (None: ``train.steps``, the
        same budget as the final segmenter; ours, the abstract gives no schedule).
    cam_scales: the CAM input scales of the coarse labels (default EPS's, ``pss.models.cam.EPS_SCALES``), with
        horizontal flips.
    coarse_short_side: the coarse labels are computed with each image resized to this short side (None: the
        image's own size) and written at the image's size.
    """

    objectness_steps: int | None = None
    cam_steps: int | None = None
    cam_scales: tuple[float, ...] = EPS_SCALES
    coarse_short_side: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("objectness_steps", "cam_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"method.{name} must be >= 1 (or null: train.steps), got {value}")
        if not self.cam_scales or any(s <= 0 for s in self.cam_scales):
            raise ValueError(f"method.cam_scales must be positive scales, got {list(self.cam_scales)}")
        if self.coarse_short_side is not None and self.coarse_short_side < 8:
            raise ValueError(f"method.coarse_short_side must be >= 8 pixels (or null), got {self.coarse_short_side}")


class Transfer(PNet):
    """The L-Net / P-Net pipeline (module docstring); one training loop of it is P-Net's."""

    name = "transfer"
    Config = TransferConfig
    stages = ("objectness", "cam", "coarse", "pnet")

    def has_object_map(self) -> bool:
        """Whether the ``objectness`` stage trains: some object class is strong (else M falls back to the CAMs)."""
        return len(self.strong) > 1

    def stage_steps(self, train_steps: int) -> dict[str, int]:
        cfg: TransferConfig = self.config
        steps = {"objectness": cfg.objectness_steps or train_steps} if self.has_object_map() else {}
        return {**steps, "cam": cfg.cam_steps or train_steps, "pnet": train_steps}
