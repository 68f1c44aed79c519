"""The segmentation stage of the weakly supervised rows (issue 17): a segmenter trained on the user's pseudo masks
made from their image tags (EPS, or EPS refined by AffinityNet's random walk: ``pss.weak.pipeline``), next to
the labelled source.

EPS and psa train DeepLab on their pseudo masks alone (methods.md §9-10); as for MRNet stage II (PSS paper §5.3:
a person's collection is small), the source CE stays here, so the weakly supervised rows differ from the
adaptation rows only in where the user's labels come from. Per step: ``λ_main·CE + λ_aux·CE`` on a source batch
and on a pseudo batch (every ``pseudo_every`` steps, default every step). It starts from the No-DA model
(``starts_from = "source_only"``).

The pseudo masks are made outside the loop (their stages train other networks); the policy
(:class:`WeakMasksPseudoConfig`) only collects them: every target image with a mask in ``folder`` (untagged images
have none and are left out), its pixels as they are (255 where the stage was uncertain).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pss.data.labels import read_label_png
from pss.errors import ConfigError
from pss.methods.base import Method, SegLossWeights, StepBatch, StepLosses, supervised_losses
from pss.methods.pseudo import PseudoLabels, PseudoSource
from pss.models.segmenter import Segmenter


@dataclass
class WeakMasksPseudoConfig:
    """Pseudo labels = the PNGs ``<folder>/<name>.png`` made by a weak stage, for every target image that has one.

    pseudo_every: train a pseudo batch every this many steps (1: every step)."""

    folder: str = ""
    pseudo_every: int = 1

    select_rate: ClassVar[float] = 1.0  # every image with a mask
    pixel_keep_rate: ClassVar[float] = 1.0  # pixels as the weak stage left them

    def __post_init__(self) -> None:
        if self.pseudo_every < 1:
            raise ValueError("pseudo_every must be >= 1")

    def _folder(self) -> Path:
        if not self.folder:
            raise ConfigError("method.pseudo.folder is empty: give the folder of the weak stage's pseudo masks "
                              "(e.g. the refined masks written by pss.weak.pipeline.write_refined_masks)")
        folder = Path(self.folder).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"method.pseudo.folder {folder} does not exist; write the pseudo masks there first")
        return folder

    def selected_images(self, mean_entropy: dict[str, float]) -> list[str]:
        """The images (of those predicted) that have a pseudo mask in ``folder``."""
        folder = self._folder()
        return [name for name in mean_entropy if (folder / f"{name}.png").is_file()]

    def build(self, model: Segmenter, source: PseudoSource) -> PseudoLabels:
        folder = self._folder()
        mean_entropy = {p.name: float(p.entropy.mean()) for p in source.predict(model)}
        records = [source.write(name, read_label_png(folder / f"{name}.png"))
                   for name in self.selected_images(mean_entropy)]
        if not records:
            raise ConfigError(f"no target image has a pseudo mask in {folder}: the masks must be named "
                              "<image name>.png")
        return PseudoLabels(records, mean_entropy, [r.name for r in records], {"folder": str(folder)})


@dataclass
class WeakSegConfig(SegLossWeights):
    pseudo: WeakMasksPseudoConfig = field(default_factory=WeakMasksPseudoConfig)


class WeakSeg(Method):
    """Source CE + CE on the weak stage's pseudo masks of the user's images."""

    name = "weak_seg"
    Config = WeakSegConfig
    streams = ("source", "pseudo")
    starts_from = "source_only"

    def pseudo_policy(self) -> WeakMasksPseudoConfig:
        return self.config.pseudo

    def segmenter_losses(self, model: Segmenter, batch: StepBatch) -> StepLosses:
        cfg: WeakSegConfig = self.config
        losses = supervised_losses(model(batch.source["image"]), batch.source["label"], cfg, "source")
        if batch.pseudo is not None:
            losses.update(supervised_losses(model(batch.pseudo["image"]), batch.pseudo["label"], cfg, "pseudo"))
        return StepLosses(losses)
