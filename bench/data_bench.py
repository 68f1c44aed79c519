"""Data-path and metric-update speed against baselines measured in the same run.

(a) images/s of the loaders' decode path (``load_rgb_tensor``, as used by ``SegDataset``) and of whole
    ``SegDataset`` items, vs plain Pillow (``np.asarray(Image.open(p).convert("RGB"))``) on the same files.
    Target: decode path >= 0.8x Pillow.
(b) ``pss.metrics.ConfusionMatrix.update`` vs ``sklearn.metrics.confusion_matrix`` on the same label maps
    (ignored pixels removed for sklearn). Target: >= 5x.

Usage: ``python bench/data_bench.py [--root DATA_ROOT] [--long-side 500] [--repeats 5]``. Without ``--root`` a
demo data root is generated in a temporary folder. Single-threaded by default (``--threads``), because the
DataLoader's workers each decode on one core.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pss.data.datasets import SegDataset
from pss.data.image_io import load_rgb_tensor
from pss.data.labels import NUM_CLASSES, read_label_png
from pss.data.pss_layout import list_users, read_user
from pss.data.records import ImageRecord
from pss.data.voc_layout import read_voc


def collect_records(root: Path) -> list[ImageRecord]:
    records = list(read_voc(root / "VOC2012")) if (root / "VOC2012").is_dir() else []
    personal = root / "personal"
    for user in list_users(personal) if personal.is_dir() else []:
        records += read_user(personal, user).records
    return records


def rates(steps: dict[str, tuple[Callable[[int], object], int]], repeats: int) -> dict[str, float]:
    """Items per second of each step, the median over ``repeats`` rounds.

    Rounds interleave the steps (one pass of each, in turn) so that load from other processes hits them alike.
    """
    for step, count in steps.values():  # warm-up: imports, allocator, file cache
        for index in range(min(count, 8)):
            step(index)
    measured: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (step, count) in steps.items():
            start = time.perf_counter()
            for index in range(count):
                step(index)
            measured[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in measured.items()}


def bench_decode(records: Sequence[ImageRecord], repeats: int, crop: int) -> None:
    records = [r for r in records if r.mask_path is not None]
    images, masks = [r.image_path for r in records], [r.mask_path for r in records]
    pixels = sum(np.prod(Image.open(p).size) for p in images) / len(images)
    print(f"(a) decode: {len(images)} labelled images, mean {pixels / 1e3:.0f} kpixel, median of {repeats} "
          "interleaved rounds")

    def pillow(i: int) -> np.ndarray:
        return np.asarray(Image.open(images[i]).convert("RGB"))

    def pillow_pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        return pillow(i), np.asarray(Image.open(masks[i]))

    evaluation = SegDataset(records, train=False, crop=crop, eval_mode="none")
    train = SegDataset(records, train=True, crop=crop)
    got = rates({"pillow": (pillow, len(images)), "decode": (lambda i: load_rgb_tensor(images[i]), len(images)),
                 "pillow_pair": (pillow_pair, len(images)), "eval": (evaluation.__getitem__, len(records)),
                 "train": (train.__getitem__, len(records))}, repeats)
    print(f"    plain Pillow image decode (baseline)       {got['pillow']:8.1f} images/s")
    print(f"    load_rgb_tensor (the loaders' decode path) {got['decode']:8.1f} images/s   ratio "
          f"{got['decode'] / got['pillow']:.2f}x (target >= 0.8x)")
    print(f"    plain Pillow image + mask decode           {got['pillow_pair']:8.1f} items/s")
    print(f"    SegDataset eval item (full image, float)   {got['eval']:8.1f} items/s    ratio "
          f"{got['eval'] / got['pillow_pair']:.2f}x vs Pillow image + mask, {got['eval'] / got['pillow']:.2f}x vs "
          "Pillow image only")
    print(f"    SegDataset train item (crop {crop})          {got['train']:8.1f} items/s    ratio "
          f"{got['train'] / got['pillow_pair']:.2f}x vs Pillow image + mask (+ random scale/crop/flip)")


def bench_metrics(records: Sequence[ImageRecord], repeats: int) -> None:
    from sklearn.metrics import confusion_matrix

    from pss.metrics import ConfusionMatrix

    rng = np.random.default_rng(0)
    targets = [read_label_png(r.mask_path) for r in records if r.mask_path is not None]
    preds = []
    for target in targets:  # a plausible prediction: the ground truth with 30 % of the pixels wrong
        pred = np.where(target == 255, 0, target).astype(np.int64)
        wrong = rng.random(target.shape) < 0.3
        pred[wrong] = rng.integers(0, NUM_CLASSES, int(wrong.sum()))
        preds.append(pred)
    pred_t = [torch.from_numpy(p) for p in preds]
    target_t = [torch.from_numpy(t) for t in targets]
    labels = list(range(NUM_CLASSES))

    def ours(i: int) -> None:
        ConfusionMatrix(num_classes=NUM_CLASSES, ignore_index=255).update(pred_t[i], target_t[i])

    def sklearn_cm(i: int) -> None:
        keep = targets[i] != 255
        confusion_matrix(targets[i][keep], preds[i][keep], labels=labels)

    check = ConfusionMatrix(num_classes=NUM_CLASSES, ignore_index=255).update(pred_t[0], target_t[0])
    keep = targets[0] != 255
    if not np.array_equal(check.matrix, confusion_matrix(targets[0][keep], preds[0][keep], labels=labels)):
        raise SystemExit("ConfusionMatrix and sklearn disagree: the comparison would be meaningless")
    pixels = sum(t.size for t in targets) / len(targets)
    print(f"(b) confusion matrix: {len(targets)} label maps (uint8 target, int64 prediction), mean "
          f"{pixels / 1e3:.0f} kpixel; both give the same matrix")
    got = rates({"sklearn": (sklearn_cm, len(targets)), "ours": (ours, len(targets))}, repeats)
    print(f"    sklearn.metrics.confusion_matrix (baseline) {got['sklearn']:8.1f} maps/s")
    print(f"    pss.metrics.ConfusionMatrix.update          {got['ours']:8.1f} maps/s   ratio "
          f"{got['ours'] / got['sklearn']:.1f}x (target >= 5x)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="data root (VOC2012/ + personal/); default: a generated demo")
    parser.add_argument("--long-side", type=int, default=500, help="demo image long side (VOC photos: ~500)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        root = args.root
        if root is None:
            from pss.data.demo import DemoConfig, generate_demo

            root = Path(temporary) / "data"
            config = DemoConfig(num_source=60, num_users=2, images_per_user=40, long_side=args.long_side)
            generate_demo(root, seed=0, config=config)
        records = collect_records(root)
        print(f"data: {root} ({len(records)} images), torch threads {torch.get_num_threads()}")
        bench_decode(records, args.repeats, args.crop)
        bench_metrics(records, args.repeats)


if __name__ == "__main__":
    main()
