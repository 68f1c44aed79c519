"""Background scenes (label 0) for the embedded demo: rooms, streets, fields, water, sky, abstract clutter.

Each family is a function ``(rng, h, w, horizon_px) -> (h, w, 3) float32 in [0, 1]``; all its choices
(colours, wallpaper, floor, buildings, hills) come from ``rng``, so the same seed gives the same room:
that is how a user's recurring scenes share a background. Everything is background in the mask,
including windows, buildings and fences, as in VOC.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from pss.data.demo_painter import hsv, shade, smooth_noise

Background = Callable[[np.random.Generator, int, int, int], np.ndarray]


def _vertical_gradient(h: int, w: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.linspace(0.0, 1.0, max(h, 1), dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.float32)


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    top = hsv(rng.uniform(200, 225), rng.uniform(0.35, 0.7), rng.uniform(0.7, 0.95))
    sky = _vertical_gradient(h, w, top, hsv(rng.uniform(190, 215), 0.12, 0.97))
    if rng.random() < 0.6:  # soft clouds
        cloud = np.clip(smooth_noise(rng, h, w, max(h, w) / 5.0) - 0.2, 0.0, 1.0)[..., None]
        sky = sky * (1 - cloud) + cloud * 0.97
    return sky


def _noisy(base: np.ndarray, rng: np.random.Generator, cell: float, amount: float) -> np.ndarray:
    h, w = base.shape[:2]
    return base * (1.0 + amount * smooth_noise(rng, h, w, cell))[..., None]


def room(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """A wall (plain, striped or patterned wallpaper, maybe a window and a picture) over a floor."""
    wall = np.full((h, w, 3), hsv(rng.uniform(0, 360), rng.uniform(0.08, 0.35), rng.uniform(0.55, 0.9)), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pattern = rng.integers(3)
    if pattern == 1:
        wall *= (1.0 + 0.07 * np.sign(np.sin(2 * np.pi * xx / rng.uniform(6, 16))))[..., None]
    elif pattern == 2:
        period = rng.uniform(8, 14)
        wall *= (1.0 - 0.06 * ((np.floor((xx + yy) / period) + np.floor((xx - yy) / period)) % 2))[..., None]
    wall = _noisy(wall, rng, 20, 0.04)
    if rng.random() < 0.45:  # a window with a cross bar
        x0, y0 = int(rng.uniform(0.05, 0.6) * w), int(rng.uniform(0.05, 0.2) * horizon)
        x1, y1 = x0 + int(rng.uniform(0.2, 0.35) * w), int(rng.uniform(0.55, 0.8) * horizon)
        cv2.rectangle(wall, (x0, y0), (x1, y1), (0.95, 0.95, 0.93), -1)
        cv2.rectangle(wall, (x0 + 3, y0 + 3), (x1 - 3, y1 - 3), tuple(float(c) for c in hsv(205, 0.35, 0.95)), -1)
        cv2.line(wall, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), (0.95, 0.95, 0.93), 2)
    if rng.random() < 0.4:  # a framed picture
        x0, y0 = int(rng.uniform(0.1, 0.75) * w), int(rng.uniform(0.1, 0.3) * horizon)
        sz = int(rng.uniform(0.12, 0.2) * w)
        cv2.rectangle(wall, (x0, y0), (x0 + sz, y0 + int(sz * 0.75)), (0.2, 0.15, 0.1), -1)
        inner = tuple(float(c) for c in hsv(rng.uniform(0, 360), 0.5, 0.7))
        cv2.rectangle(wall, (x0 + 2, y0 + 2), (x0 + sz - 2, y0 + int(sz * 0.75) - 2), inner, -1)
    floor = _floor(rng, h, w, horizon, yy, xx)
    img = np.where(yy[..., None] < horizon, wall, floor)
    cv2.line(img, (0, horizon), (w, horizon), tuple(float(c) for c in shade(wall[0, 0], 1.2)), 2)
    return img


def _floor(rng: np.random.Generator, h: int, w: int, horizon: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    depth = np.maximum(yy - horizon, 0.0) + 3.0
    kind = rng.integers(3)
    if kind == 0:  # wooden planks, wider towards the camera
        base = hsv(rng.uniform(18, 35), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6))
        seams = (np.log(depth) * rng.uniform(5, 8)) % 1.0 < 0.12
        grain = 1.0 + 0.1 * np.sin(xx / 3.0 + 4 * smooth_noise(rng, h, w, 12))
        return base * (grain * np.where(seams, 0.7, 1.0))[..., None]
    if kind == 1:  # tiles in perspective
        base = hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.25), rng.uniform(0.5, 0.85))
        u, v = (xx - w / 2) / depth * rng.uniform(3, 6), 60.0 / depth * rng.uniform(1.0, 2.0)
        cells = (np.floor(u) + np.floor(v)) % 2
        return base * (0.8 + 0.25 * cells)[..., None]
    base = hsv(rng.uniform(0, 360), rng.uniform(0.15, 0.5), rng.uniform(0.3, 0.6))  # carpet
    return _noisy(np.full((h, w, 3), base, np.float32), rng, 2, 0.12)


def street(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """Sky, a row of buildings with windows, a pavement, a road with dashed lane markings."""
    img = np.concatenate([_sky(rng, horizon, w), np.zeros((h - horizon, w, 3), np.float32)], axis=0)
    x = int(-rng.uniform(0, 20))
    while x < w:
        bw, bh = int(rng.uniform(0.12, 0.3) * w), int(rng.uniform(0.3, 0.95) * horizon)
        colour = hsv(rng.uniform(0, 50), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.8))
        cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), tuple(float(c) for c in colour), -1)
        win = tuple(float(c) for c in shade(colour, 0.55))
        for wy in range(horizon - bh + 4, horizon - 6, 9):
            for wx in range(x + 3, x + bw - 5, 8):
                cv2.rectangle(img, (wx, wy), (wx + 3, wy + 4), win, -1)
        x += bw + int(rng.uniform(0, 8))
    road = hsv(rng.uniform(0, 360), 0.05, rng.uniform(0.28, 0.5))
    img[horizon:] = road
    pave = max(3, int(0.06 * h))
    img[horizon:horizon + pave] = hsv(30, 0.1, rng.uniform(0.55, 0.75))
    img[horizon:] = _noisy(img[horizon:], rng, 2, 0.08)
    lane_y = horizon + int((h - horizon) * rng.uniform(0.45, 0.7))
    for lx in range(int(rng.uniform(0, 20)), w, 30):
        cv2.rectangle(img, (lx, lane_y), (lx + 16, lane_y + 2), (0.92, 0.92, 0.85), -1)
    return img


def field(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """Sky, distant hills, grass with blade-like streaks, sometimes a wooden fence."""
    img = _sky(rng, h, w)
    xs = np.arange(w, dtype=np.float32)
    ridge = horizon - (0.08 * h) * (1 + np.sin(xs / rng.uniform(15, 40) + rng.uniform(0, 6))) * rng.uniform(0.3, 1)
    yy = np.arange(h, dtype=np.float32)[:, None]
    img = np.where((yy > ridge[None, :])[..., None], hsv(rng.uniform(90, 160), 0.35, rng.uniform(0.35, 0.55)), img)
    grass = hsv(rng.uniform(70, 110), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6))
    blades = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.6, sigmaY=2.0)
    ground = grass * (1.0 + 0.25 * blades + 0.1 * smooth_noise(rng, h, w, 25))[..., None]
    img = np.where((yy >= horizon)[..., None], ground, img).astype(np.float32)
    if rng.random() < 0.3:
        y0, wood = horizon + int(0.12 * (h - horizon)), (0.45, 0.33, 0.2)
        for dy in (0, 7):
            cv2.line(img, (0, y0 + dy), (w, y0 + dy), wood, 2)
        for px in range(int(rng.uniform(0, 25)), w, 25):
            cv2.line(img, (px, y0 - 3), (px, y0 + 12), wood, 3)
    return img


def water(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """Sky, a distant shore line, and water with horizontal ripples and sparkles."""
    img = _sky(rng, h, w)
    shore = int(rng.uniform(0.02, 0.07) * h)
    img[max(horizon - shore, 0):horizon] = hsv(rng.uniform(90, 150), 0.3, rng.uniform(0.25, 0.45))
    yy, xx = np.mgrid[horizon:h, 0:w].astype(np.float32)
    sea = hsv(rng.uniform(185, 215), rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.65))
    d = (yy - horizon + 2) / max(h - horizon, 1)
    ripple = np.sin(yy * (1.5 / (d + 0.15)) + 2.0 * smooth_noise(rng, h - horizon, w, 12))
    sparkle = (ripple > 0.92) * (smooth_noise(rng, h - horizon, w, 6) > 0.4)
    body = sea * (0.9 + 0.12 * ripple - 0.2 * d)[..., None]
    img[horizon:] = np.where(sparkle[..., None], 0.95, body)
    return img


def sky(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """Mostly open sky with clouds over a low strip of land or runway."""
    img = _sky(rng, h, w)
    ground = hsv(rng.uniform(30, 110), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.5))
    img[horizon:] = ground
    img[horizon:] = _noisy(img[horizon:], rng, 4, 0.1)
    return img


def abstract(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """Indoor clutter stand-in: a two-colour gradient with stripes, tiles or blobs."""
    c0 = hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    c1 = hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    t = ((xx * np.cos(theta) + yy * np.sin(theta)) / (h + w) + 0.5).clip(0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    kind, period = rng.integers(3), rng.uniform(6, 20)
    if kind == 0:
        pattern = 1.0 + 0.1 * np.sign(np.sin(2 * np.pi * (xx - yy) / period))
    elif kind == 1:
        pattern = 0.9 + 0.15 * ((np.floor(xx / period) + np.floor(yy / period)) % 2)
    else:
        pattern = 1.0 + 0.25 * np.tanh(2 * smooth_noise(rng, h, w, period))
    return (img * pattern[..., None]).astype(np.float32)


BACKGROUNDS: dict[str, Background] = {
    "room": room, "street": street, "field": field, "water": water, "sky": sky, "abstract": abstract,
}
HORIZON_RANGE: dict[str, tuple[float, float]] = {
    "room": (0.5, 0.72), "street": (0.35, 0.55), "field": (0.3, 0.5), "water": (0.35, 0.55),
    "sky": (0.82, 0.97), "abstract": (0.45, 0.7),
}
