"""Per-user photographic styles of the embedded demo, and the camera that applies them.

A style is what makes one person's photos a domain of their own: what they photograph (class and
habitat priors, how close they stand), how their camera and light render it (colour cast, exposure,
contrast, gamma, saturation, noise, blur, JPEG quality, vignetting) and a moderate shift of object
appearance (a hue rotation of object colours). Shapes and textures are untouched, so the classes stay
recognisable and adaptation can close part of the gap.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np


# Random streams: image i of the source is [seed, 0, i], image i of user u is [seed, u, i] (u >= 1);
# the other streams use keys far above any user index so that no two streams ever share a key.
STREAM_PLAN, STREAM_STYLE, STREAM_CLASS_ORDER, STREAM_SPLIT = 1_000_000, 1_000_001, 1_000_002, 1_000_003


@dataclass(frozen=True)
class UserStyle:
    """How one user's photos look. ``classes``/``habitats`` are unnormalised prior weights."""

    name: str
    classes: dict[str, float]
    habitats: dict[str, float]
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel colour cast (RGB)
    brightness: float = 0.0  # added after contrast, in [0, 1] units
    contrast: float = 1.0
    gamma: float = 1.0  # > 1 darkens mid-tones, < 1 brightens them
    saturation: float = 1.0
    noise: float = 0.008  # sensor noise standard deviation, [0, 1] units
    blur: float = 0.5  # Gaussian blur sigma in pixels (optics + demosaicing)
    jpeg_quality: int = 90
    hue_shift: float = 0.0  # degrees, applied to object colours only
    object_scale: float = 1.0  # > 1: close-ups, < 1: far-away subjects
    vignette: float = 0.0


_ALL = ("aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
        "pottedplant sheep sofa train tvmonitor").split()

SOURCE_STYLE = UserStyle(name="source: neutral daylight, VOC-like", classes={c: 1.0 for c in _ALL},
                         habitats={"indoor": 1.0, "road": 1.0, "field": 1.0, "water": 1.0, "sky": 1.0})

USER_STYLES: tuple[UserStyle, ...] = (
    UserStyle("pet owner: warm tungsten living room, close-ups",
              classes={"cat": 3, "dog": 3, "sofa": 2, "person": 2, "pottedplant": 1, "chair": 1, "tvmonitor": 0.5},
              habitats={"indoor": 6, "field": 1}, gains=(1.18, 0.98, 0.7), brightness=0.03, contrast=0.95,
              gamma=0.95, saturation=1.1, noise=0.02, blur=0.9, jpeg_quality=88, hue_shift=18, object_scale=1.2),
    UserStyle("traveller: hazy over-exposed daylight, far subjects",
              classes={"aeroplane": 2, "boat": 2, "bus": 2, "car": 2, "train": 2, "person": 2, "bird": 1,
                       "bicycle": 1},
              habitats={"sky": 2, "water": 2, "road": 3}, gains=(0.95, 1.0, 1.1), brightness=0.16, contrast=0.62,
              gamma=0.8, saturation=0.65, noise=0.012, blur=0.8, jpeg_quality=70, hue_shift=-35, object_scale=0.85),
    UserStyle("farm: green-yellow cast, cheap noisy phone",
              classes={"cow": 3, "horse": 3, "sheep": 3, "person": 2, "dog": 1.5, "bird": 1},
              habitats={"field": 6, "road": 1}, gains=(1.06, 1.12, 0.78), contrast=1.15, saturation=1.25,
              noise=0.055, blur=0.4, jpeg_quality=80, hue_shift=28, object_scale=1.05),
    UserStyle("home at night: dark, bluish screen light, noisy and soft",
              classes={"person": 3, "tvmonitor": 2.5, "chair": 2, "diningtable": 2, "bottle": 2, "pottedplant": 1.5,
                       "sofa": 1},
              habitats={"indoor": 1}, gains=(0.8, 0.92, 1.2), brightness=-0.04, contrast=0.85, gamma=1.7,
              saturation=0.8, noise=0.045, blur=1.1, jpeg_quality=85, hue_shift=-15, object_scale=1.1,
              vignette=0.35),
    UserStyle("commuter: grey street, desaturated and contrasty",
              classes={"car": 3, "bus": 2, "motorbike": 2, "bicycle": 2, "person": 3, "train": 1},
              habitats={"road": 1}, gains=(0.95, 1.0, 1.05), contrast=1.35, saturation=0.45, noise=0.02,
              blur=0.5, jpeg_quality=85, hue_shift=10, object_scale=0.95),
    UserStyle("sunset album: orange faded vintage look",
              classes={"boat": 2, "bird": 2, "person": 2, "horse": 1.5, "dog": 1.5, "aeroplane": 1},
              habitats={"water": 2, "field": 2, "sky": 1}, gains=(1.25, 0.95, 0.68), brightness=0.06,
              contrast=0.75, saturation=0.85, noise=0.015, blur=0.7, jpeg_quality=82, hue_shift=-30,
              vignette=0.45),
)


def user_style(user_index: int, seed: int) -> UserStyle:
    """The style of user ``id<user_index>`` (1-based). Archetypes repeat after six users with new tints."""
    base = USER_STYLES[(user_index - 1) % len(USER_STYLES)]
    if user_index <= len(USER_STYLES):
        return base
    rng = np.random.default_rng([seed, STREAM_STYLE, user_index])
    gains = tuple(float(g * rng.uniform(0.9, 1.1)) for g in base.gains)
    return replace(base, name=f"{base.name} (variant)", gains=gains,  # type: ignore[arg-type]
                   hue_shift=float(base.hue_shift + rng.uniform(-15, 15)))


def shift_hue(rgb: np.ndarray, mask: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate the hue of the pixels under ``mask`` by ``degrees``. Shape: rgb (H, W, 3) float32 in [0, 1]."""
    if degrees == 0.0 or not mask.any():
        return rgb
    hsv_img = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
    hsv_img[..., 0] = np.where(mask, (hsv_img[..., 0] + degrees) % 360.0, hsv_img[..., 0])
    return cv2.cvtColor(hsv_img, cv2.COLOR_HSV2RGB)


def apply_camera(rgb: np.ndarray, style: UserStyle, rng: np.random.Generator) -> np.ndarray:
    """Render a linear-ish RGB scene (H, W, 3) float32 in [0, 1] through the style's camera -> uint8 (H, W, 3)."""
    x: np.ndarray = rgb.astype(np.float32)
    if style.blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), style.blur)
    exposure = float(np.exp(rng.normal(0.0, 0.06)))  # a little variation between shots
    x = x * (np.asarray(style.gains, np.float32) * exposure)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + style.saturation * (x - grey)
    x = (x - 0.5) * style.contrast + 0.5 + style.brightness
    x = np.clip(x, 0.0, 1.0) ** style.gamma
    if style.vignette > 0:
        h, w = x.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
        x = x * (1.0 - style.vignette * 0.5 * r2)[..., None]
    if style.noise > 0:  # luminance + chroma noise, as a phone sensor at high ISO
        h, w = x.shape[:2]
        luma = rng.standard_normal((h, w, 1), dtype=np.float32)
        chroma = rng.standard_normal((h, w, 3), dtype=np.float32)
        x = x + style.noise * (0.8 * luma + 0.6 * chroma)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
