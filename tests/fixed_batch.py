"""Every registered method's named losses over three steps of the one loop on fixed data (fp32, NCHW, seed 0).

``tests/data/fixed_batch_losses.json`` holds the values recorded before the method contract of issue 13 moved every
method onto it; ``tests/test_method_contract.py`` checks that they have not changed. Regenerate (only when a
method's maths is meant to change, and say so in the commit) with::

    python tests/fixed_batch.py --write
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pss.config import build_config
from pss.data.labels import write_label_png
from pss.data.records import ImageRecord
from pss.engine.data import make_stream
from pss.engine.hooks import Hook
from pss.engine.trainer import Trainer
from pss.methods import METHODS, build_method
from pss.models.segmenter import build_segmenter

RECORDED = Path(__file__).parent / "data" / "fixed_batch_losses.json"
STEPS = 3


def write_records(root: Path) -> dict[str, list[ImageRecord]]:
    """Eight labelled source and eight unlabelled target images: random texture, one coloured box each."""
    rng = np.random.default_rng(0)
    out: dict[str, list[ImageRecord]] = {"source": [], "target": []}
    for split in out:
        for i in range(8):
            image = rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)
            label = np.zeros((72, 80), np.uint8)
            label[10:40, 20:60] = 1 + i % 3
            image[10:40, 20:60] = (40 * (1 + i % 3), 200, 90)
            Image.fromarray(image).save(root / f"{split}{i}.jpg")
            mask = None
            if split == "source":
                mask = root / f"{split}{i}.png"
                write_label_png(mask, label)
            out[split].append(ImageRecord(f"{split}{i}", root / f"{split}{i}.jpg", mask))
    return out


def method_losses(name: str, records: dict[str, list[ImageRecord]]) -> list[dict[str, float]]:
    """The losses of ``STEPS`` steps of method ``name`` (pseudo batches = the source images, as in test_engine)."""
    torch.manual_seed(0)
    config = build_config("tiny", [f"method.name={name}", f"train.steps={STEPS}", "train.log_every=1",
                                   "train.amp=off", "train.channels_last=off", "data.num_workers=0"])
    model = build_segmenter(config.model)
    method = build_method(name, config.method_params(), config.model.num_classes)
    groups = {r.name: i % 2 for i, r in enumerate(records["source"] + records["target"])}
    use = groups if config.model.context.mode != "none" else None
    # the method's declared fields (transfer's P-Net loss reads tags); () for the others: their batches as recorded
    streams = {"source": make_stream(records["source"], use, config, 1, fields=method.fields),
               "target": make_stream(records["target"], use, config, 2),
               "pseudo": make_stream(records["source"], None, config, 3)}
    seen: list[dict[str, float]] = []

    class Spy(Hook):
        def on_log(self, trainer: Trainer, step: int, losses: dict[str, float], lr: float) -> None:
            seen.append(dict(losses))

    trainer = Trainer(config, model, method, streams, torch.device("cpu"), hooks=[Spy()])
    trainer.run()
    for stream in streams.values():
        stream.close()
    return seen


def all_losses() -> dict[str, list[dict[str, float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        records = write_records(Path(tmp))
        return {name: method_losses(name, records) for name in sorted(METHODS)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RECORDED}")
    parser.add_argument("--out", type=Path, help="write to this path instead")
    args = parser.parse_args()
    values = all_losses()
    text = json.dumps(values, indent=1, sort_keys=True)
    target = args.out or (RECORDED if args.write else None)
    if target:
        target.write_text(text + "\n")
    print(text)
