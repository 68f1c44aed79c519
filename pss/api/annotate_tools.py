"""The Annotate tab's helpers that use a model or the photo: pre-label from a run, click refinement (GrabCut),
superpixel fill, the "annotate next" queue and the fine-tune launch request.

No downloaded weights: the pre-label and the GrabCut seeds come from a finished run of the workbench itself (its
cached inference, ``pss.api.inspect.image_inference``); superpixels are OpenCV's watershed seeded on a grid
(scikit-image's SLIC is not a dependency, and ~20 ms for a VOC-sized photo is interactive).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pss.api.annotate import Target, blank_mask
from pss.api.launch_form import LaunchRequest
from pss.data.annotations import QueueItem, QueueOrder, rank_queue, tag_mismatch
from pss.data.labels import IGNORE_INDEX, NUM_CLASSES
from pss.errors import DatasetError
from pss.workspace import Workspace

DEFAULT_THRESHOLD = 0.6  # pre-label: pixels whose (tag-restricted) probability is below this stay unlabelled
ANNOTATED_WEIGHT_OVERRIDE = "train.annotated_weight=1.0"  # the engine's extra supervised stream (issue 16, item 5)
CLICK_RADIUS = 5  # px: a click marks a disc of definite foreground / background
SUPERPIXEL_STEP = 12  # px between watershed seeds


# ---- pre-label -------------------------------------------------------------------------------------------------

def _probabilities(ws: Workspace, run_id: str, t: Target) -> np.ndarray:
    """(C, H, W) float32 class probabilities of the run at the image's size (the cached inference)."""
    from pss.api.inspect import image_inference, run_context

    ctx = run_context(ws, run_id)
    if ctx.user != t.user:
        raise DatasetError(f"run {run_id} was trained for user {ctx.user}, not {t.user}; pick a run of {t.user}")
    prob = image_inference(ws, run_id, t.name, ctx=ctx).prob
    if prob.shape[1:] != (t.height, t.width):
        import cv2

        planes = [cv2.resize(p, (t.width, t.height), interpolation=cv2.INTER_LINEAR) for p in prob]
        prob = np.stack(planes)
    return prob.astype(np.float32, copy=False)


def allowed_classes(tags: Sequence[int]) -> list[int]:
    """Background plus the image's tags; every class when the image has no tag (nothing to restrict to)."""
    return [0, *sorted(set(tags))] if tags else list(range(NUM_CLASSES))


def restricted_prelabel(prob: np.ndarray, tags: Sequence[int], threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The prediction restricted to background + ``tags``: other classes' probabilities are dropped and the rest
    renormalised; pixels whose renormalised probability is below ``threshold`` are left 255 for the annotator.

    Shape:
        prob: (C, H, W) probabilities; returns (H, W) uint8.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise DatasetError(f"the confidence threshold must be between 0 and 1 (got {threshold})")
    allowed = allowed_classes(tags)
    kept = prob[allowed]
    total = kept.sum(0)
    kept = kept / np.maximum(total, 1e-8)
    best = kept.argmax(0)
    confidence = kept.max(0)
    out = np.asarray(allowed, dtype=np.uint8)[best]
    out[confidence < float(threshold)] = IGNORE_INDEX
    return out


def prelabel(ws: Workspace, run_id: str, t: Target, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Pre-label image ``t`` from finished run ``run_id`` (see ``restricted_prelabel``)."""
    if not run_id:
        raise DatasetError("pick a finished run of this user to pre-label from")
    return restricted_prelabel(_probabilities(ws, run_id, t), t.record.tags, threshold)


# ---- click refinement ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Click:
    """A click at image pixel (x, y): ``positive`` = this is the class, else it is not."""

    x: int
    y: int
    positive: bool


def _roi(shape: tuple[int, int], core: np.ndarray, clicks: Sequence[Click], pad: float = 0.25,
         minimum: int = 48) -> tuple[slice, slice]:
    """A box around the clicks and the class's current region (padded), so GrabCut works on what matters."""
    height, width = shape
    ys, xs = np.nonzero(core)
    px = [c.x for c in clicks] + ([int(xs.min()), int(xs.max())] if xs.size else [])
    py = [c.y for c in clicks] + ([int(ys.min()), int(ys.max())] if ys.size else [])
    x0, x1, y0, y1 = min(px), max(px), min(py), max(py)
    mx = max(int((x1 - x0) * pad), minimum // 2)
    my = max(int((y1 - y0) * pad), minimum // 2)
    return slice(max(0, y0 - my), min(height, y1 + my + 1)), slice(max(0, x0 - mx), min(width, x1 + mx + 1))


def grabcut_refine(image: np.ndarray, mask: np.ndarray, class_id: int, clicks: Sequence[Click],
                   prob: np.ndarray | None = None, iterations: int = 3) -> np.ndarray:
    """Refine the region of ``class_id`` in ``mask`` with OpenCV GrabCut seeded by the model and the clicks.

    Seeds: probable foreground where the class's probability is >= 0.5 (or, without ``prob``, where the mask has
    the class), definite foreground where it is > 0.9, definite background where it is < 0.02, probable background
    elsewhere; each click paints a disc of definite foreground (positive) or background (negative) over that.
    The result: GrabCut's foreground becomes ``class_id``; pixels of ``class_id`` it rejects become 255 (left to the
    annotator, not guessed). Works on a box around the clicks and the region.

    Shape:
        image: (H, W, 3) uint8 RGB; mask: (H, W) uint8; prob: (H, W) probability of ``class_id``; returns (H, W).
    """
    import cv2

    if not clicks:
        raise DatasetError("click on the image first: + marks the class, − marks what is not the class")
    if not 0 < class_id < NUM_CLASSES and class_id != 0:
        raise DatasetError(f"class id {class_id} is not a VOC class")
    height, width = mask.shape
    for c in clicks:
        if not (0 <= c.x < width and 0 <= c.y < height):
            raise DatasetError(f"click ({c.x}, {c.y}) is outside the {width}x{height} image")
    seed = (prob >= 0.5) if prob is not None else (mask == class_id)
    rows, cols = _roi((height, width), seed, clicks)
    gc = np.where(seed[rows, cols], cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    if prob is not None:
        p = prob[rows, cols]
        gc[p > 0.9] = cv2.GC_FGD
        gc[p < 0.02] = cv2.GC_BGD
    for c in clicks:
        cv2.circle(gc, (c.x - cols.start, c.y - rows.start), CLICK_RADIUS,
                   int(cv2.GC_FGD if c.positive else cv2.GC_BGD), thickness=-1)
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if not fg.any():
        raise DatasetError("no foreground to refine: add a + click on the object")
    if fg.all():
        gc[0, :] = gc[-1, :] = gc[:, 0] = gc[:, -1] = cv2.GC_PR_BGD  # GrabCut needs some background to model
    crop = np.ascontiguousarray(image[rows, cols][..., ::-1])  # OpenCV wants BGR
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(crop, gc, (0, 0, 0, 0), bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # rect unused with a mask
    result = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    out = mask.copy()
    region = out[rows, cols]
    region[(region == class_id) & ~result] = IGNORE_INDEX
    region[result] = class_id
    out[rows, cols] = region
    return out


def refine_with_run(ws: Workspace, run_id: str | None, t: Target, mask: np.ndarray, class_id: int,
                    clicks: Sequence[Click]) -> tuple[np.ndarray, float]:
    """``grabcut_refine`` on image ``t`` seeded by run ``run_id``'s probabilities (by the mask alone without a run);
    returns the refined mask and the seconds GrabCut took (shown in the tab: the target is < 1 s)."""
    from pss.api.data import load_image

    image = load_image(t.record.image_path)
    prob = _probabilities(ws, run_id, t)[class_id] if run_id else None
    started = time.perf_counter()
    refined = grabcut_refine(image, mask, class_id, clicks, prob)
    return refined, time.perf_counter() - started


# ---- superpixels ---------------------------------------------------------------------------------------------------

_SUPERPIXELS: OrderedDict[tuple, np.ndarray] = OrderedDict()
_SP_LOCK = threading.Lock()
_SP_SLOTS = 16


def superpixels(image: np.ndarray, step: int = SUPERPIXEL_STEP) -> np.ndarray:
    """Grid-seeded watershed regions of ``image``: one seed every ``step`` px, grown along colour edges by
    ``cv2.watershed``; the one-pixel boundaries it leaves (-1) join a neighbouring region.

    Shape:
        image: (H, W, 3) uint8 RGB; returns (H, W) int32 region ids from 1.
    """
    import cv2

    height, width = image.shape[:2]
    markers = np.zeros((height, width), np.int32)
    ys = np.arange(step // 2, height, step)
    xs = np.arange(step // 2, width, step)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    markers[grid_y, grid_x] = np.arange(1, grid_y.size + 1).reshape(grid_y.shape)
    blurred = cv2.GaussianBlur(np.ascontiguousarray(image[..., ::-1]), (3, 3), 0)
    labels = cv2.watershed(blurred, markers)
    boundary = labels <= 0
    if boundary.any():  # give each boundary pixel the largest id around it (3x3), twice for corners
        filled = labels.astype(np.float32)
        for _ in range(2):
            grown = cv2.dilate(filled, np.ones((3, 3), np.uint8))
            filled[boundary] = grown[boundary]
            boundary = filled <= 0
        labels = filled.astype(np.int32)
        labels[labels <= 0] = 1
    return labels


def image_superpixels(t: Target) -> np.ndarray:
    """``superpixels`` of the image, cached per file (path, size, mtime) for the clicks that follow."""
    from pss.api.data import file_key, load_image

    key = (str(t.record.image_path), file_key(t.record.image_path))
    with _SP_LOCK:
        if key in _SUPERPIXELS:
            _SUPERPIXELS.move_to_end(key)
            return _SUPERPIXELS[key]
    labels = superpixels(load_image(t.record.image_path))
    with _SP_LOCK:
        _SUPERPIXELS[key] = labels
        while len(_SUPERPIXELS) > _SP_SLOTS:
            _SUPERPIXELS.popitem(last=False)
    return labels


def fill_superpixel(mask: np.ndarray, regions: np.ndarray, x: int, y: int, class_id: int) -> np.ndarray:
    """``mask`` with the superpixel under (x, y) set to ``class_id`` (255 clears it)."""
    height, width = mask.shape
    if not (0 <= x < width and 0 <= y < height):
        raise DatasetError(f"click ({x}, {y}) is outside the {width}x{height} image")
    if not (0 <= class_id < NUM_CLASSES or class_id == IGNORE_INDEX):
        raise DatasetError(f"class id {class_id} is not a VOC class")
    out = mask.copy()
    out[regions == regions[y, x]] = class_id
    return out


def superpixel_edges(regions: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels on a superpixel boundary (drawn over the preview while filling)."""
    edges = np.zeros(regions.shape, bool)
    edges[:, 1:] |= regions[:, 1:] != regions[:, :-1]
    edges[1:, :] |= regions[1:, :] != regions[:-1, :]
    return edges


# ---- the "annotate next" queue ---------------------------------------------------------------------------------------

def _prediction(ws: Workspace, run_id: str, run_dir: Path, t_user: str, name: str) -> np.ndarray | None:
    """The run's saved prediction of ``name`` (``predictions/<n>.png``), or the cached inference's label."""
    from pss.data.labels import read_label_png

    path = run_dir / "predictions" / f"{name}.png"
    if path.is_file():
        try:
            return read_label_png(path)
        except DatasetError:
            pass
    from pss.api.inspect import image_inference

    return image_inference(ws, run_id, name).label


def queue_candidates(ws: Workspace, user: str) -> list[str]:
    """The user's images to annotate: no mask yet, not an evaluation image, not listed as annotated."""
    from pss.api.users import read_user

    collection = read_user(ws, user)
    evaluation = {r.name for r in collection.eval_set}
    return [r.name for r in collection.records
            if r.mask_path is None and r.name not in evaluation and r.name not in collection.annotated]


def annotate_queue(ws: Workspace, user: str, run_id: str | None, order: QueueOrder = "uncertainty", k: int = 8,
                   seed: int = 0) -> list[QueueItem]:
    """The "annotate next" queue of ``user`` (``rank_queue``): mean entropies from run ``run_id``'s report (images it
    did not predict are inferred now, cached), groups from the user's k-means grouping with ``k`` (the Groups tab's;
    the run's own evaluation groups when none is cached), and tag mismatches from the run's predictions."""
    from pss.api.data import cached_grouping
    from pss.api.users import read_user

    candidates = queue_candidates(ws, user)
    collection = read_user(ws, user)
    grouping = cached_grouping(ws, user, int(k))
    groups: dict[str, int] | None = (
        {n: int(g) for n, g in zip(grouping.names, grouping.groups, strict=True)} if grouping is not None else None)
    if order == "random" or not run_id:
        if order != "random":
            raise DatasetError("the uncertainty order needs a finished run of this user; pick one, or use random")
        return rank_queue(candidates, "random", groups=groups, seed=seed)
    from pss.api.inspect import image_inference, run_context

    ctx = run_context(ws, run_id)
    if ctx.user != user:
        raise DatasetError(f"run {run_id} was trained for user {ctx.user}, not {user}; pick a run of {user}")
    run_dir = ws.store().open_run(run_id).dir
    entropy = {n: float(v) for n, v in (ctx.report.get("mean_entropy") or {}).items()}
    for name in candidates:
        if name not in entropy:
            entropy[name] = float(image_inference(ws, run_id, name, ctx=ctx).entropy.mean())
    if groups is None and ctx.report.get("groups"):
        groups = {n: int(g) for n, g in ctx.report["groups"].items()}
    tags = {r.name: r.tags for r in collection.records}
    mismatch = {}
    for name in candidates:
        prediction = _prediction(ws, run_id, run_dir, user, name)
        if prediction is not None:
            why = tag_mismatch(tags.get(name, ()), prediction)
            if why:
                mismatch[name] = why
    return rank_queue(candidates, "uncertainty", entropy=entropy, groups=groups, tag_mismatch=mismatch, seed=seed)


# ---- fine-tune with the annotations --------------------------------------------------------------------------------

def finetune_request(ws: Workspace, start_run: str, device: str = "auto") -> LaunchRequest:
    """The launch request of "Fine-tune with my annotations": the start run's own saved config (same model, data
    and method) initialised from its weights, with the user's annotated images as an extra supervised stream
    (``train.annotated_weight=1.0``, the engine's option)."""
    if not start_run:
        raise DatasetError("pick the finished run to start from")
    run = ws.store().open_run(start_run)
    config = run.config
    user = str(config.get("data", {}).get("user", ""))
    method = str(config.get("method", {}).get("name", "")) or "pss"
    context = str(config.get("model", {}).get("context", {}).get("mode", "default"))
    return LaunchRequest(user=user, method=method, context=context, device=device, init_from=start_run,
                         preset=str(run.dir / "config.yaml"), extra=(ANNOTATED_WEIGHT_OVERRIDE,))



@dataclass(frozen=True)
class RunScore:
    """One run's scores on the user's evaluation images, read from its ``report.json`` (``None`` before the run
    was evaluated). ``miou`` is the report's ``miou["pss"]`` (21 classes, absent = 0: the paper's convention)."""

    run_id: str
    status: str
    fiou: float | None
    miou: float | None
    images: frozenset[str]


@dataclass(frozen=True)
class FinetuneGain:
    """Before (the start run) and after (the fine-tune run) on the held-out evaluation images.

    ``same_images``: both reports scored the same images (a changed ``val_all.txt`` between the two runs makes the
    numbers incomparable, and the view says so). ``finished``: the fine-tune has stopped (done, failed, cancelled).
    """

    before: RunScore
    after: RunScore
    finished: bool

    @property
    def same_images(self) -> bool:
        return self.before.images == self.after.images

    def gain(self, metric: str) -> float | None:
        """after - before of ``metric`` ("fiou" or "miou"); ``None`` while either is missing."""
        a, b = getattr(self.after, metric), getattr(self.before, metric)
        return None if a is None or b is None else a - b


def run_score(ws: Workspace, run_id: str) -> RunScore:
    """The run's status and its report's FIoU / MIoU and scored image names; DatasetError if no such run."""
    from pss.errors import RunStoreError

    try:
        run = ws.store().open_run(run_id)
    except RunStoreError as exc:
        raise DatasetError(f"run {run_id!r} is not in this workspace any more; pick another run") from exc
    status = str(run.meta.get("status", "unknown"))
    report = run.read_report() or {}

    def number(value: object) -> float | None:  # None: not evaluated yet, or NaN saved as null
        return float(value) if isinstance(value, (int, float)) else None

    images = frozenset(str(i["name"]) for i in report.get("images", []))
    return RunScore(run_id, status, number(report.get("fiou")), number((report.get("miou") or {}).get("pss")),
                    images)


def finetune_gain(ws: Workspace, start_run: str, run_id: str) -> FinetuneGain:
    """Scores of the start run and of its fine-tune from their reports (issue 16, item 5: the measured gain)."""
    after = run_score(ws, run_id)
    return FinetuneGain(run_score(ws, start_run), after, after.status in ("done", "failed", "cancelled"))


__all__ = ["ANNOTATED_WEIGHT_OVERRIDE", "DEFAULT_THRESHOLD", "Click", "FinetuneGain", "RunScore", "allowed_classes",
           "annotate_queue", "blank_mask", "fill_superpixel", "finetune_gain", "finetune_request", "grabcut_refine",
           "image_superpixels", "prelabel", "queue_candidates", "refine_with_run", "restricted_prelabel", "run_score",
           "superpixel_edges", "superpixels", "tag_mismatch"]
