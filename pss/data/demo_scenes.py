"""Scene specifications and rendering for the embedded demo.

A :class:`SceneSpec` is a background (family, seed, horizon) plus a list of :class:`ObjectSpec`. Source
images each get a fresh scene with a balanced primary class; a user has 5-10 recurring scenes (their
own room and pet, their street) that are re-shot with jitter, so that images within a user are
correlated. Rendering draws objects far-to-near (later objects occlude earlier ones; the mask keeps the
visible class) and marks a thin 255 "ignore" band along every label boundary, as VOC does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from pss.data.demo_backgrounds import BACKGROUNDS, HORIZON_RANGE
from pss.data.demo_painter import Painter, finish_object, hsv
from pss.data.demo_shapes import DRAWERS
from pss.data.demo_styles import UserStyle, shift_hue
from pss.data.labels import CLASS_NAMES, IGNORE_INDEX


@dataclass(frozen=True)
class ClassLook:
    """Appearance family of one class: colour modes (h0, h1, s0, s1, v0, v1), textures, size, habitats."""

    colours: tuple[tuple[float, float, float, float, float, float], ...]
    textures: tuple[str, ...]
    size: tuple[float, float]  # object size (drawer unit) as a fraction of sqrt(H * W), before perspective
    habitats: tuple[str, ...]


LOOKS: dict[str, ClassLook] = {
    "aeroplane": ClassLook(((0, 360, 0, 0.08, 0.8, 0.95),), ("metal",), (0.6, 0.95), ("sky",)),
    "bicycle": ClassLook(((0, 360, 0.6, 0.95, 0.5, 0.9),), ("metal",), (0.45, 0.6), ("road",)),
    "bird": ClassLook(((0, 50, 0.5, 0.9, 0.5, 0.9), (195, 230, 0.5, 0.8, 0.5, 0.8), (0, 360, 0, 0.1, 0.12, 0.3)),
                      ("stripes",), (0.25, 0.38), ("sky", "field", "water")),
    "boat": ClassLook(((0, 360, 0, 0.06, 0.85, 0.97), (0, 10, 0.7, 0.9, 0.6, 0.8), (210, 230, 0.6, 0.9, 0.4, 0.7),
                       (22, 35, 0.5, 0.7, 0.4, 0.6)), ("smooth", "grain"), (0.4, 0.6), ("water",)),
    "bottle": ClassLook(((90, 140, 0.5, 0.9, 0.25, 0.55), (20, 35, 0.7, 0.9, 0.25, 0.45),
                         (180, 210, 0.15, 0.35, 0.7, 0.9)), ("metal",), (0.35, 0.5), ("indoor",)),
    "bus": ClassLook(((45, 55, 0.8, 0.95, 0.85, 0.95), (0, 8, 0.75, 0.9, 0.65, 0.85), (200, 225, 0.6, 0.85, 0.5, 0.75),
                      (100, 140, 0.4, 0.7, 0.45, 0.65)), ("metal",), (0.32, 0.45), ("road",)),
    "car": ClassLook(((0, 360, 0.5, 0.9, 0.4, 0.85), (0, 360, 0, 0.06, 0.15, 0.9)), ("metal",), (0.28, 0.38),
                     ("road",)),
    "cat": ClassLook(((22, 32, 0.6, 0.8, 0.65, 0.85), (0, 360, 0, 0.08, 0.45, 0.65), (0, 360, 0, 0.1, 0.1, 0.2),
                      (35, 45, 0.05, 0.15, 0.85, 0.95)), ("stripes", "fur"), (0.38, 0.5), ("indoor",)),
    "chair": ClassLook(((20, 35, 0.5, 0.75, 0.3, 0.55), (0, 360, 0.4, 0.7, 0.4, 0.8)), ("grain",), (0.45, 0.6),
                       ("indoor",)),
    "cow": ClassLook(((0, 360, 0, 0.05, 0.85, 0.95), (15, 30, 0.5, 0.75, 0.3, 0.55)), ("spots",), (0.42, 0.55),
                     ("field",)),
    "diningtable": ClassLook(((20, 35, 0.45, 0.75, 0.35, 0.65), (0, 360, 0.0, 0.5, 0.75, 0.95)), ("grain", "checker"),
                             (0.36, 0.48), ("indoor",)),
    "dog": ClassLook(((20, 35, 0.5, 0.8, 0.35, 0.6), (35, 45, 0.45, 0.7, 0.7, 0.9), (0, 360, 0, 0.1, 0.08, 0.2),
                      (0, 360, 0, 0.06, 0.85, 0.95)), ("fur",), (0.4, 0.52), ("indoor", "field")),
    "horse": ClassLook(((15, 28, 0.55, 0.85, 0.25, 0.5), (0, 360, 0, 0.1, 0.08, 0.2), (0, 360, 0, 0.05, 0.65, 0.9)),
                       ("smooth",), (0.5, 0.65), ("field",)),
    "motorbike": ClassLook(((0, 8, 0.8, 0.95, 0.6, 0.85), (0, 360, 0, 0.1, 0.1, 0.25), (210, 230, 0.7, 0.9, 0.5, 0.8),
                            (25, 35, 0.85, 0.95, 0.8, 0.95)), ("metal",), (0.45, 0.6), ("road",)),
    "person": ClassLook(((0, 360, 0.3, 0.9, 0.3, 0.9),), ("smooth", "checker"), (0.6, 0.85),
                        ("indoor", "road", "field")),
    "pottedplant": ClassLook(((12, 25, 0.6, 0.8, 0.5, 0.7), (0, 360, 0, 0.05, 0.85, 0.95),
                              (200, 220, 0.5, 0.7, 0.4, 0.6)),
                             ("leaf",), (0.42, 0.58), ("indoor",)),
    "sheep": ClassLook(((35, 45, 0.05, 0.2, 0.8, 0.95),), ("wool",), (0.4, 0.55), ("field",)),
    "sofa": ClassLook(((0, 360, 0.25, 0.6, 0.3, 0.7),), ("checker", "smooth"), (0.32, 0.45), ("indoor",)),
    "train": ClassLook(((0, 360, 0.5, 0.9, 0.4, 0.85), (0, 360, 0, 0.05, 0.85, 0.95)), ("metal",), (0.3, 0.42),
                       ("road",)),
    "tvmonitor": ClassLook(((0, 360, 0, 0.05, 0.05, 0.25), (0, 360, 0, 0.05, 0.6, 0.8)), ("smooth",), (0.4, 0.55),
                           ("indoor",)),
}
_SIZE_GAIN = 1.1  # global object scale: ~20 % foreground pixels in the source set (VOC has ~25 %)
_MAX_SIZE_PER_Y = 0.75  # grounded objects: size <= 0.75 * base height, so tall ones keep their top in view
_PORTABLE = frozenset({"person", "dog", "cat", "bird", "bottle", "pottedplant", "chair", "bicycle"})
HABITAT_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "indoor": ("room", "room", "room", "abstract"), "road": ("street",), "field": ("field",),
    "water": ("water",), "sky": ("sky",),
}


@dataclass(frozen=True)
class ObjectSpec:
    cls: str
    x: float  # anchor, fraction of the width
    y: float  # anchor (ground contact, or centre for flying objects), fraction of the height
    size: float  # drawer unit as a fraction of sqrt(H * W)
    flip: bool
    angle: float
    colour: tuple[float, float, float]
    texture: str
    flying: bool  # drawn first (far away, in the sky) and anchored at its centre
    seed: int  # pose/shape seed: the same seed draws the same individual (a user's own cat)


@dataclass(frozen=True)
class BackgroundSpec:
    family: str
    seed: int
    horizon: float  # fraction of the height


@dataclass(frozen=True)
class SceneSpec:
    background: BackgroundSpec
    objects: tuple[ObjectSpec, ...]
    habitat: str


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_object(rng: np.random.Generator, cls: str, habitat: str, horizon: float, scale: float) -> ObjectSpec:
    """Place one object of ``cls`` in a scene of ``habitat``: flying above the horizon, else on the ground."""
    look = LOOKS[cls]
    mode = look.colours[int(rng.integers(len(look.colours)))]
    colour = tuple(float(c) for c in hsv(rng.uniform(mode[0], mode[1]), rng.uniform(mode[2], mode[3]),
                                         rng.uniform(mode[4], mode[5])))
    size = rng.uniform(*look.size) * scale * _SIZE_GAIN
    flying = habitat == "sky" and cls in ("aeroplane", "bird")
    if flying:
        y, angle = rng.uniform(0.18, max(0.25, horizon - 0.2)), rng.uniform(-15, 15)
    else:  # grounded: nearer objects (lower in the frame) are bigger
        y, angle = rng.uniform(horizon + 0.15 * (1 - horizon), 1.02), 0.0
        size *= 0.55 + 0.45 * (y - horizon) / max(1 - horizon, 1e-3)
        size = min(size, _MAX_SIZE_PER_Y * y)  # keep the top (a person's head) mostly inside the frame
    return ObjectSpec(cls=cls, x=float(rng.uniform(0.12, 0.88)), y=float(y), size=float(size),
                      flip=bool(rng.random() < 0.5), angle=float(angle), colour=colour,  # type: ignore[arg-type]
                      texture=str(rng.choice(look.textures)), flying=flying, seed=int(rng.integers(2**31)))


def _companion(rng: np.random.Generator, style: UserStyle, habitat: str) -> str:
    """Mostly a context-consistent class; sometimes an out-of-context one that can be anywhere (a person)."""
    fitting = {c: w for c, w in style.classes.items() if habitat in LOOKS[c].habitats}
    anywhere = {c: w for c, w in style.classes.items() if c in _PORTABLE} or style.classes
    return _pick(rng, fitting) if fitting and rng.random() < 0.85 else _pick(rng, anywhere)


def sample_scene(rng: np.random.Generator, style: UserStyle, primary: str | None = None) -> SceneSpec:
    """A new scene in ``style``: primary class (given, or from the prior), habitat, background, 0-3 companions."""
    primary = primary or _pick(rng, style.classes)
    habitats = {h: style.habitats.get(h, 0.0) for h in LOOKS[primary].habitats}
    habitat = _pick(rng, habitats) if sum(habitats.values()) > 0 else LOOKS[primary].habitats[0]
    family = str(rng.choice(HABITAT_BACKGROUNDS[habitat]))
    horizon = float(rng.uniform(*HORIZON_RANGE[family]))
    background = BackgroundSpec(family=family, seed=int(rng.integers(2**31)), horizon=horizon)
    objects = [sample_object(rng, primary, habitat, horizon, style.object_scale)]
    for _ in range(int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))):
        objects.append(sample_object(rng, _companion(rng, style, habitat), habitat, horizon, style.object_scale))
    return SceneSpec(background=background, objects=tuple(objects), habitat=habitat)


def jitter_scene(scene: SceneSpec, rng: np.random.Generator, style: UserStyle) -> SceneSpec:
    """Re-shoot a recurring scene: move/rescale objects a little, sometimes drop or add a companion."""
    objects = []
    for k, obj in enumerate(scene.objects):
        if k > 0 and rng.random() < 0.15:
            continue
        y = float(np.clip(obj.y + rng.normal(0, 0.03), 0.1, 1.05))
        size = float(obj.size * np.exp(rng.normal(0, 0.1)))
        objects.append(replace(obj, x=float(np.clip(obj.x + rng.normal(0, 0.07), 0.05, 0.95)), y=y,
                               size=size if obj.flying else min(size, _MAX_SIZE_PER_Y * y),
                               flip=obj.flip ^ bool(rng.random() < 0.15)))
    if rng.random() < 0.15:
        companion = _companion(rng, style, scene.habitat)
        objects.append(sample_object(rng, companion, scene.habitat, scene.background.horizon, style.object_scale))
    horizon = float(np.clip(scene.background.horizon + rng.normal(0, 0.025), 0.25, 0.97))
    return replace(scene, objects=tuple(objects), background=replace(scene.background, horizon=horizon))


def ignore_boundaries(label: np.ndarray) -> np.ndarray:
    """Set a 2-pixel band along every boundary between different labels to 255 (VOC's "void" outline)."""
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    out = label.copy()
    out[edge] = IGNORE_INDEX
    return out


def render_scene(scene: SceneSpec, h: int, w: int, rng: np.random.Generator,
                 hue_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scene`` at (h, w): background, objects far to near, object hue shift, ignore band.

    Shape: returns image (h, w, 3) float32 in [0, 1] (before the camera) and label (h, w) uint8.
    """
    margin_y, margin_x = int(0.1 * h), int(0.1 * w)  # the camera moves a little between shots
    bg_full = BACKGROUNDS[scene.background.family](np.random.default_rng(scene.background.seed), h + margin_y,
                                                   w + margin_x, int(scene.background.horizon * h))
    oy, ox = int(rng.integers(margin_y + 1)), int(rng.integers(margin_x + 1))
    image = np.ascontiguousarray(bg_full[oy:oy + h, ox:ox + w])
    fg = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)
    ref = float(np.sqrt(h * w))
    order = sorted(scene.objects, key=lambda o: (not o.flying, o.y))  # flying first, then far to near
    for obj in order:
        painter = Painter(h, w, (obj.x * w, obj.y * h), obj.size * ref, obj.flip, obj.angle)
        obj_rng = np.random.default_rng(obj.seed)
        DRAWERS[obj.cls](painter, obj_rng, np.asarray(obj.colour, np.float32))
        finish_object(painter, obj.texture, obj_rng)
        drawn = painter.mask.astype(bool)
        fg[drawn] = painter.albedo[drawn]
        label[drawn] = CLASS_NAMES.index(obj.cls)
    objects = label > 0
    fg = shift_hue(fg, objects, hue_shift)
    image = np.where(objects[..., None], fg, image)
    return image, ignore_boundaries(label)
