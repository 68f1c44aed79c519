"""What the group context looks at: statistics of a trained model's group attention on a user's labelled images.

For every labelled pixel (ground truth resized to the feature grid, nearest), the group attention ``w`` (paper
eq. 6) over the N*C soft regions of its group gives:

* ``own_image``: the attention mass on regions of the pixel's own image (uniform attention: 1/N); the rest goes
  to the other images of its group, which is what "group context" adds over per-image context;
* ``own_class``: the mass on regions of the pixel's ground-truth class, in any image (uniform: 1/C);
* ``own_class_other_images``: the mass on regions of its class in the *other* images of its group;
* ``entropy``: the attention's entropy divided by log(N*C) (1 = uniform, 0 = one region);
* ``gamma``: the context gate (``model.context.gate``), if any: how much of the context enters the features.

Images are chunked by group exactly as the evaluation chunks them (``pss.engine.evaluate``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pss.data.image_io import load_mask, load_rgb
from pss.data.labels import NUM_CLASSES
from pss.data.records import ImageRecord
from pss.engine.evaluate import chunk_batch, chunk_by_group
from pss.models.segmenter import Segmenter


@dataclass
class AttentionProbe:
    """Pixel-averaged attention statistics (module docstring) and their uniform-attention baselines."""

    pixels: int
    mean_group_size: float
    own_image: float
    own_image_uniform: float
    own_class: float
    own_class_uniform: float
    own_class_other_images: float
    entropy: float
    gamma: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@torch.inference_mode()
def probe_attention(model: Segmenter, records: Sequence[ImageRecord], groups: dict[str, int] | None,
                    device: torch.device, short_side: int, batch_size: int = 8) -> AttentionProbe:
    """Attention statistics of ``model`` (group context) over the labelled ``records``, chunked by ``groups``."""
    model.eval()
    sums = dict(own_image=0.0, own_image_uniform=0.0, own_class=0.0, own_class_other_images=0.0, entropy=0.0)
    pixels, sizes = 0, []
    for chunk in chunk_by_group(records, groups, batch_size):
        chunk_records = [records[i] for i in chunk]
        images = [load_rgb(r.image_path) for r in chunk_records]
        out = model(chunk_batch(images, short_side, device), None, return_attention=True)
        att = out.attention
        if att is None:
            raise ValueError("probe_attention needs a model with the group context (model.context.mode=group)")
        n, c, h, w = att.region_masks.shape
        sizes.append(n)
        for i, (record, image) in enumerate(zip(chunk_records, images, strict=True)):
            if record.eval_mask is None:  # statistics over ground truth use the evaluation images only
                continue
            mask = torch.from_numpy(load_mask(record.eval_mask, image.shape[:2]).astype(np.int64))
            gt = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0].long().flatten()
            keep = gt < NUM_CLASSES
            if not keep.any():
                continue
            weights = att.weights[i][keep.to(att.weights.device)]            # (p, N*C)
            labels = gt[keep].to(weights.device)
            own = (att.region_image == i)                                     # (N*C,)
            same_class = att.region_class[None, :] == labels[:, None]         # (p, N*C)
            sums["own_image"] += float(weights[:, own].sum())
            sums["own_image_uniform"] += float(keep.sum()) / n
            sums["own_class"] += float((weights * same_class).sum())
            sums["own_class_other_images"] += float((weights * (same_class & ~own[None, :])).sum())
            sums["entropy"] += float(-(weights * torch.log(weights.clamp_min(1e-12))).sum() / math.log(n * c)) \
                if n * c > 1 else 0.0
            pixels += int(keep.sum())
    block = model.context.block
    gamma = getattr(block, "gamma", None)
    p = max(pixels, 1)
    return AttentionProbe(pixels, float(np.mean(sizes)) if sizes else 0.0, sums["own_image"] / p,
                          sums["own_image_uniform"] / p, sums["own_class"] / p, 1 / NUM_CLASSES,
                          sums["own_class_other_images"] / p, sums["entropy"] / p,
                          None if gamma is None else float(gamma.detach().cpu().reshape(-1)[0]))
