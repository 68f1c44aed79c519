"""Fake weak-supervision runs for the Inspect stage views: run directories written in the pipelines' layout
(``pss.api.weak_views``'s docstring) on a tiny demo, with hand-made maps whose values the tests know.

* ``eps_affinity``: image ``A`` has a saliency map (a top-to-bottom ramp), CAMs of cat (a left-to-right ramp
  0..1) and person (0.5 everywhere), an EPS mask and a refined mask (person in the top half), a tiny
  AffinityNet's weights; image ``B`` has none of it (an untagged image). Report: ``stage_quality`` cam /
  refined, ``saliency_source: trained``.
* ``transfer``: its maps are of source (VOC) images: ``s0`` has an object map, a coarse label (255 = unknown in
  the bottom rows) and merged labels, ``s1`` an object map only; report ``split`` (weak: cat and dog) and
  ``coarse_quality``.
* a plain ``source_only`` run with nothing of that.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pss.data.demo import DemoConfig, generate_demo
from pss.data.labels import write_label_png
from pss.status import Status
from pss.workspace import Workspace

USER = "id1"
CAT, DOG, PERSON = 8, 12, 15
# the segmenter at stride 16 as the demo preset; the CAM net and AffinityNet run at the method's net_output_stride (8)
MODEL = {"backbone": "tiny", "pretrained": False, "output_stride": 16}
EPS_QUALITY = {"cam": {"fiou": 0.25, "miou": 0.125, "miou_present": 0.3, "num_images": 4},
               "refined": {"fiou": 0.375, "miou": 0.1875, "miou_present": 0.35, "num_images": 4}}
SPLIT = {"strong": [0, 1, PERSON], "weak": [CAT, DOG], "strong_names": ["background", "aeroplane", "person"],
         "weak_names": ["cat", "dog"], "fraction": 0.5, "seed": 3}
COARSE_QUALITY = {"num_images": 1, "all": 0.5, "strong": 0.625, "weak": 0.25, "coverage": 0.75}


@dataclass
class WeakWorkspace:
    ws: Workspace
    a: str  # the image every stage covered
    b: str  # an image no stage covered
    size: tuple[int, int]  # (height, width) of image a
    eps: str  # eps_affinity run id
    transfer: str
    plain: str
    s0: str  # a source image the transfer run wrote all its maps for
    s1: str  # a source image with an object map only


def _run(ws: Workspace, method: str, report: dict, extra_method: dict | None = None) -> tuple[str, Path]:
    config = {"method": {"name": method, **(extra_method or {})}, "model": dict(MODEL), "data": {"user": USER},
              "train": {"steps": 1, "seed": 0}}
    run = ws.store().create_run(USER, method, config, "cpu", 1)
    from pss.data.labels import CLASS_NAMES

    base = {"fiou": 0.5, "miou": {"pss": 0.25, "present": 0.3}, "num_images": 4, "images": [],
            "per_class_iou": {"pss": [0.25] * 21, "present": [0.3] * 21}, "pixel_accuracy": 0.6,
            "class_names": list(CLASS_NAMES), "confusion": [[0] * 21 for _ in range(21)]}  # a SegReport's fields
    run.write_report({**base, **report})
    run.set_status(Status.DONE, fiou=0.5, miou=0.25)
    return run.run_id, run.dir


def _grey(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(values * 255).astype(np.uint8), mode="L").save(path)


def cat_ramp(height: int, width: int) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))


def saliency_ramp(height: int, width: int) -> np.ndarray:
    """0 in the top row to 1 in the bottom row."""
    return np.tile(np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None], (1, width))


def person_top(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 2] = PERSON
    return mask


def build(root: Path) -> WeakWorkspace:
    from pss.api.users import read_user
    from pss.models.affinity import build_affinity_net
    from pss.models.segmenter import ModelConfig
    from pss.weak.pipeline import save_scores

    generate_demo(root / "data", seed=2, config=DemoConfig(num_source=4, num_users=1, images_per_user=4))
    ws = Workspace(root)
    records = read_user(ws, USER).records
    a, b = records[0], records[1]
    with Image.open(a.image_path) as im:
        width, height = im.size

    eps, eps_dir = _run(ws, "eps_affinity", {"stage_quality": EPS_QUALITY, "saliency_source": "trained"},
                        {"radius": 5, "infer_short_side": None})
    _grey(eps_dir / "saliency" / f"{a.name}.png", saliency_ramp(height, width))
    scores = torch.zeros(20, height, width)
    scores[CAT - 1] = torch.from_numpy(cat_ramp(height, width))
    scores[PERSON - 1] = 0.5
    tags = np.zeros(20, np.float32)
    tags[[CAT - 1, PERSON - 1]] = 1
    (eps_dir / "cam").mkdir()
    save_scores(eps_dir / "cam" / f"{a.name}.npz", scores, tags)
    write_label_png(eps_dir / "cam" / f"{a.name}.png", person_top(height, width))
    (eps_dir / "affinity" / "refined").mkdir(parents=True)
    label = person_top(height, width)
    label[-4:] = 255  # uncertain
    write_label_png(eps_dir / "affinity" / f"{a.name}.png", label)
    write_label_png(eps_dir / "affinity" / "refined" / f"{a.name}.png", person_top(height, width))
    torch.manual_seed(0)
    torch.save(build_affinity_net(ModelConfig(backbone="tiny", pretrained=False)).state_dict(),
               eps_dir / "affinity" / "model.pt")

    # a transfer run's maps are of the SOURCE split images: s0 has all three, s1 only an object map
    sources = sorted((ws.data / "VOC2012" / "JPEGImages").glob("*.jpg"))[:2]
    s0, s1 = sources[0].stem, sources[1].stem
    transfer, transfer_dir = _run(ws, "transfer", {"split": SPLIT, "coarse_quality": COARSE_QUALITY})
    for source in sources:
        with Image.open(source) as im:
            sw, sh = im.size
        _grey(transfer_dir / "objectness" / f"{source.stem}.png", cat_ramp(sh, sw))
    with Image.open(sources[0]) as im:
        sw, sh = im.size
    coarse = person_top(sh, sw)
    coarse[-5:] = 255
    (transfer_dir / "coarse").mkdir()
    write_label_png(transfer_dir / "coarse" / f"{s0}.png", coarse)
    (transfer_dir / "labels").mkdir()
    write_label_png(transfer_dir / "labels" / f"{s0}.png", person_top(sh, sw))

    plain, _ = _run(ws, "source_only", {})
    return WeakWorkspace(ws, a.name, b.name, (height, width), eps, transfer, plain, s0, s1)


_BUILT: dict[str, WeakWorkspace] = {}


def weak_workspace(tmp_path_factory) -> WeakWorkspace:
    """Built once per test process."""
    if "ws" not in _BUILT:
        _BUILT["ws"] = build(tmp_path_factory.mktemp("weak") / "ws")
    return _BUILT["ws"]
