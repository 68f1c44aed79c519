"""Everything the model says about one image: prediction, probabilities, entropy, pseudo label, attention.

``infer_image`` runs the model on the image together with the other images of its k-means group (the
group context needs them) and returns an ``ImageInference`` that the app caches per (run, image):

* class probabilities and the argmax label at the image's own size, or — for photos whose long side is over
  :data:`MAX_MAP_SIDE` — at that long side (a 6000x4000 photo's 21 full-size probability planes are 2 GB and
  took most of a ~49 s first Inspect; the app draws at most 1024 px and the model sees the image at its
  evaluation short side, so nothing shown is lost); ``size`` keeps the image's own size and every method
  takes image pixel coordinates,
* the normalised pixel entropy map (ADVENT eq. 2 / log C) and its mean (the step-2 ranking score),
* the pseudo label step 2 would use (uncertain pixels = 255) — whether the image is selected depends on
  its rank among the user's images, which the caller knows,
* for a group-context model, the group attention of every feature-grid pixel over the regions
  (image x class) of its group (paper eqs. 5–6) and each region's soft mask (eq. 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pss.data.image_io import load_rgb
from pss.data.labels import CLASS_NAMES
from pss.data.records import ImageRecord
from pss.engine.evaluate import Prediction, chunk_batch
from pss.methods.pseudo import mask_uncertain_pixels
from pss.losses import pixel_entropy
from pss.models.segmenter import Segmenter

MAX_MAP_SIDE = 1024  # long side of the maps of large photos (= pss.api.maps.MAX_VIEW_SIDE, the app's largest view)


@dataclass
class RegionWeight:
    """One region of the group: class ``class_index`` of image ``image``, and the attention it receives."""

    image: str
    class_index: int
    weight: float

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_index]


@dataclass
class ImageInference:
    """The model's view of one image (see the module docstring).

    Shape:
        size: (H, W) of the image. prob: (C, h, w) float32 with (h, w) = :func:`map_size` of ``size``; label:
            (h, w) uint8; entropy: (h, w) float32 in [0, 1].
        attention: (h*w, G*C) float32 or None — the image's feature-grid pixels (row-major, h x w = ``grid``)
            over the G*C regions of its group (image-major: region index = g*C + c); rows sum to 1.
        region_masks: (G, C, h, w) float32 or None — soft region weights (each map sums to 1).
    """

    name: str
    prob: np.ndarray
    label: np.ndarray
    entropy: np.ndarray
    group_images: list[str]
    grid: tuple[int, int]
    attention: np.ndarray | None = None
    region_masks: np.ndarray | None = None
    size: tuple[int, int] | None = None  # None: the maps' own size (they are at the image's size)

    def __post_init__(self) -> None:
        if self.size is None:
            self.size = tuple(self.label.shape)

    def _image_size(self) -> tuple[int, int]:
        """(height, width) of the image: ``size``, which ``__post_init__`` always sets."""
        height, width = self.size if self.size is not None else self.label.shape
        return height, width

    def map_pixel(self, x: int, y: int) -> tuple[int, int]:
        """The maps' pixel (column, row) under image pixel (x, y)."""
        (height, width), (h, w) = self._image_size(), self.label.shape
        return min(w - 1, int(x * w / width)), min(h - 1, int(y * h / height))

    @property
    def mean_entropy(self) -> float:
        return float(self.entropy.mean())

    def pseudo_label(self, keep_rate: float) -> np.ndarray:
        """The step-2 pseudo label of this image: argmax with the uncertain (1 - keep_rate) pixels set to 255."""
        return mask_uncertain_pixels(Prediction(self.name, self.label, self.entropy, 0), keep_rate)

    def grid_cell(self, x: int, y: int) -> tuple[int, int]:
        """Feature-grid cell (row, col) of image pixel (x, y)."""
        height, width = self._image_size()
        h, w = self.grid
        return min(h - 1, int(y * h / height)), min(w - 1, int(x * w / width))

    def pixel_info(self, x: int, y: int) -> dict[str, object]:
        """Class probabilities (descending) and entropy at image pixel (x, y)."""
        col, row = self.map_pixel(x, y)
        probs = self.prob[:, row, col]
        order = np.argsort(-probs)
        return {"x": x, "y": y, "label": CLASS_NAMES[int(self.label[row, col])],
                "entropy": float(self.entropy[row, col]),
                "probabilities": [(CLASS_NAMES[i], float(probs[i])) for i in order]}

    def attention_at(self, x: int, y: int, top: int = 10) -> list[RegionWeight]:
        """The ``top`` regions that image pixel (x, y) attends to, by weight (empty without group context)."""
        if self.attention is None:
            return []
        row, col = self.grid_cell(x, y)
        weights = self.attention[row * self.grid[1] + col]
        num_classes = self.prob.shape[0]
        order = np.argsort(-weights)[:top]
        return [RegionWeight(self.group_images[i // num_classes], int(i % num_classes), float(weights[i]))
                for i in order]

    def region_mask(self, image: str, class_index: int) -> np.ndarray | None:
        """Soft mask (h, w) of one region of the group, normalised to max 1 for display."""
        if self.region_masks is None:
            return None
        mask = self.region_masks[self.group_images.index(image), class_index]
        return mask / max(float(mask.max()), 1e-12)


@torch.inference_mode()
def infer_image(model: Segmenter, record: ImageRecord, group: Sequence[ImageRecord], device: torch.device,
                short_side: int) -> ImageInference:
    """Run ``model`` on ``record`` with the images of its group (``group`` may include ``record``; at most a
    few images make sense — the trainer's batch size). Raises ``DatasetError`` if the image cannot be read;
    unreadable group members are left out."""
    from pss.errors import DatasetError

    model.eval()
    members = [record] + [r for r in group if r.name != record.name]
    images: list[tuple[ImageRecord, np.ndarray]] = [(record, load_rgb(record.image_path))]
    for other in members[1:]:
        try:
            images.append((other, load_rgb(other.image_path)))
        except DatasetError:
            continue
    batch = chunk_batch([im for _, im in images], short_side, device)
    out = model(batch, return_attention=True)
    size = images[0][1].shape[:2]
    full = F.interpolate(out.logits[:1].float(), size=map_size(size), mode="bilinear", align_corners=False)
    prob = torch.softmax(full, dim=1)
    grid = tuple(out.logits.shape[-2:])
    attention = region_masks = None
    if out.attention is not None:
        attention = out.attention.weights[0].float().cpu().numpy()
        region_masks = out.attention.region_masks.float().cpu().numpy()
    return ImageInference(
        name=record.name, prob=prob[0].cpu().numpy(), label=prob.argmax(1)[0].to(torch.uint8).cpu().numpy(),
        entropy=pixel_entropy(prob)[0].cpu().numpy(), group_images=[r.name for r, _ in images], grid=grid,
        attention=attention, region_masks=region_masks, size=(int(size[0]), int(size[1])))


def map_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the maps of an image of ``size`` = (H, W): the same, or long side :data:`MAX_MAP_SIDE`."""
    height, width = size
    scale = min(1.0, MAX_MAP_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))
