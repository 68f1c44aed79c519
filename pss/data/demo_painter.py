"""Drawing primitives for the embedded demo: one object's parts go into a mask and a colour layer at once.

Every part is drawn with the *same* OpenCV polygon/ellipse/line call into both arrays, so the label mask
agrees with the image exactly. Objects are described in a local frame (origin at the object's anchor,
x to the right, y up, lengths in units of the object's size) so that a class drawer does not care about
the image size, mirroring or rotation. Textures are multiplicative fields that give each class its own
surface (fur, stripes, spots, wood grain, fabric, metal highlights).
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

Colour = Sequence[float] | np.ndarray  # RGB in [0, 1]: a tuple or a (3,) array

_SHIFT = 4  # OpenCV fixed-point sub-pixel bits: coordinates are multiplied by 16
_ONE = float(1 << _SHIFT)


def hsv(hue_deg: float, sat: float, val: float) -> np.ndarray:
    """RGB colour (3,) float32 in [0, 1] from hue in degrees, saturation and value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, sat, val), dtype=np.float32)


def shade(colour: Colour, factor: float) -> np.ndarray:
    """A darker (factor < 1) or lighter (factor > 1) version of ``colour``, clipped to [0, 1]."""
    return np.clip(np.asarray(colour, dtype=np.float32) * factor, 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise: unit Gaussians on a grid with one node per ``cell`` pixels, bicubically upsampled.

    Shape: returns (h, w) float32, roughly zero-mean with standard deviation below 1.
    """
    gh, gw = max(2, int(h / max(cell, 1.0)) + 2), max(2, int(w / max(cell, 1.0)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


class Painter:
    """Draws the parts of one object into ``mask`` (H, W) uint8 {0, 1} and ``albedo`` (H, W, 3) float32."""

    def __init__(self, h: int, w: int, origin: tuple[float, float], unit: float,
                 flip: bool = False, angle_deg: float = 0.0) -> None:
        self.mask = np.zeros((h, w), dtype=np.uint8)
        self.albedo = np.zeros((h, w, 3), dtype=np.float32)
        self.ox, self.oy = origin
        self.unit = float(unit)
        self.sx = -1.0 if flip else 1.0
        self.angle = float(angle_deg)
        rad = np.deg2rad(angle_deg)
        self._cos, self._sin = float(np.cos(rad)), float(np.sin(rad))

    def xy(self, pts: Sequence[Sequence[float]]) -> np.ndarray:
        """Local points (N, 2) -> fixed-point pixel coordinates (N, 2) int32 (mirror, rotate, scale, shift)."""
        p = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
        x, y = p[:, 0] * self.sx, p[:, 1]
        xr, yr = x * self._cos - y * self._sin, x * self._sin + y * self._cos
        pix = np.stack([self.ox + xr * self.unit, self.oy - yr * self.unit], axis=1)
        return np.round(pix * _ONE).astype(np.int32)

    def _px(self, length: float, minimum: int = 1) -> int:
        return max(minimum, int(round(length * self.unit)))

    def poly(self, pts: Sequence[Sequence[float]], colour: Colour) -> None:
        q = [self.xy(pts)]
        cv2.fillPoly(self.mask, q, 1, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.albedo, q, tuple(float(c) for c in colour), cv2.LINE_8, _SHIFT)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float], angle: float,
                colour: Colour) -> None:
        """Filled ellipse; ``angle`` is counter-clockwise in the local frame (degrees)."""
        c = tuple(int(v) for v in self.xy([centre])[0])
        ax = (max(1, int(round(axes[0] * self.unit * _ONE))), max(1, int(round(axes[1] * self.unit * _ONE))))
        cv_angle = -(self.sx * angle + self.angle)  # OpenCV angles turn clockwise in image coordinates
        for target, value in ((self.mask, 1), (self.albedo, tuple(float(v) for v in colour))):
            cv2.ellipse(target, c, ax, cv_angle, 0, 360, value, -1, cv2.LINE_8, _SHIFT)

    def circle(self, centre: tuple[float, float], radius: float, colour: Colour) -> None:
        self.ellipse(centre, (radius, radius), 0.0, colour)

    def line(self, pts: Sequence[Sequence[float]], width: float, colour: Colour,
             min_px: int = 2) -> None:
        """Thick open polyline through the local points ``pts``; never thinner than ``min_px`` pixels."""
        q = [self.xy(pts)]
        thickness = self._px(width, min_px)
        cv2.polylines(self.mask, q, False, 1, thickness, cv2.LINE_8, _SHIFT)
        cv2.polylines(self.albedo, q, False, tuple(float(c) for c in colour), thickness, cv2.LINE_8, _SHIFT)

    def ring(self, centre: tuple[float, float], radius: float, width: float, colour: Colour,
             min_px: int = 3) -> None:
        """Circle outline (a wheel) of ``width`` units, at least ``min_px`` pixels thick."""
        c = tuple(int(v) for v in self.xy([centre])[0])
        r = max(1, int(round(radius * self.unit * _ONE)))
        thickness = self._px(width, min_px)
        cv2.circle(self.mask, c, r, 1, thickness, cv2.LINE_8, _SHIFT)
        cv2.circle(self.albedo, c, r, tuple(float(v) for v in colour), thickness, cv2.LINE_8, _SHIFT)


def object_texture(kind: str, rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """Multiplicative surface texture of one object crop.

    ``period`` is the texture's characteristic length in pixels (stripe spacing, spot size).
    Shape: returns (h, w) float32 around 1.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0.0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    period = max(period, 2.5)
    if kind == "stripes":  # tabby fur, feathers: wavy dark bands
        wave = np.sin(2 * np.pi * u / period + 1.5 * smooth_noise(rng, h, w, period * 2))
        return (1.0 - 0.45 * (wave > 0.3)).astype(np.float32)
    if kind == "spots":  # Holstein patches: large dark blobs
        blobs = smooth_noise(rng, h, w, period * 1.5)
        return np.where(blobs > 0.45, 0.13, 1.0).astype(np.float32)
    if kind == "checker":  # woven fabric / table cloth
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        cells = (np.floor(u / period) + np.floor(v / period)) % 2
        return (0.82 + 0.3 * cells).astype(np.float32)
    if kind == "fur":  # fine streaks that run downwards
        n = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7, sigmaY=2.5)
        return (1.0 + 0.22 * n / (n.std() + 1e-6) + 0.08 * smooth_noise(rng, h, w, period * 2)).astype(np.float32)
    if kind == "wool":  # tight curls: bright rims around small dark cells
        n = smooth_noise(rng, h, w, period * 0.35)
        return (0.78 + 0.3 * np.abs(np.tanh(2.0 * n))).astype(np.float32)
    if kind == "grain":  # wood: stretched sinusoid with a noisy phase
        n = smooth_noise(rng, h, w, period * 3)
        return (1.0 + 0.16 * np.sin(2 * np.pi * yy / (period * 0.5) + 3.0 * n)).astype(np.float32)
    if kind == "leaf":
        return (1.0 + 0.3 * smooth_noise(rng, h, w, period * 0.6)).astype(np.float32)
    return (1.0 + 0.06 * smooth_noise(rng, h, w, period * 2)).astype(np.float32)  # "smooth", "metal"


def finish_object(painter: Painter, texture: str, rng: np.random.Generator) -> None:
    """Apply the class texture and a simple 3-D shading (top light, darker rims) inside the object's box."""
    ys, xs = np.nonzero(painter.mask)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    crop = painter.albedo[y0:y1, x0:x1]
    mask = painter.mask[y0:y1, x0:x1].astype(np.float32)
    tex = object_texture(texture, rng, h, w, period=max(3.0, painter.unit * 0.12))
    t = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None]
    light = 1.12 - 0.3 * t  # light from above
    if texture == "metal":  # a specular band a third of the way down (car bodies, bottles, planes)
        light = light + 0.35 * np.exp(-(((t - 0.3) / 0.08) ** 2))
    sigma = max(1.0, 0.06 * min(h, w))
    rim = cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    factor = tex * light * (0.68 + 0.32 * np.clip(rim * 1.6, 0.0, 1.0))
    painter.albedo[y0:y1, x0:x1] = np.clip(crop * factor[..., None], 0.0, 1.0)
