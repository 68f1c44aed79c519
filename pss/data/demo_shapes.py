"""One shape family per VOC foreground class for the embedded demo.

Each drawer builds its object from parts in the local frame of a :class:`Painter` (origin on the ground
under the object's centre, or at the centre for flying objects; y up; 1 unit = the object's size).
Poses vary through the drawer's ``rng`` (legs, arms, sails, windows, leaves), colours through ``main``.
Parts painted inside the object (windows, screens, eyes) belong to the object's class in the mask,
as in VOC where a car's windows are "car".
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pss.data.demo_painter import Painter, hsv, shade

DARK = np.array([0.07, 0.07, 0.08], np.float32)
GLASS = np.array([0.22, 0.3, 0.38], np.float32)
SKIN = [hsv(25, 0.35, 0.95), hsv(24, 0.45, 0.8), hsv(22, 0.55, 0.6), hsv(20, 0.6, 0.4)]
Drawer = Callable[[Painter, np.random.Generator, np.ndarray], None]


def _accent(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng.uniform(0, 360), rng.uniform(0.6, 0.9), rng.uniform(0.5, 0.85))


def _legs(p: Painter, xs: list[float], top: float, width: float, colour: np.ndarray,
          rng: np.random.Generator, swing: float = 0.08) -> None:
    for x in xs:
        dx = rng.uniform(-swing, swing)
        p.line([(x, top), (x + dx * 0.5, top * 0.45), (x + dx, 0.02)], width, colour)


def draw_aeroplane(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    far = shade(main, 0.75)
    p.poly([(0.02, 0.02), (-0.14, 0.24), (-0.2, 0.24), (-0.1, 0.02)], far)  # far wing
    p.poly([(-0.36, 0.03), (-0.47, 0.1), (-0.5, 0.1), (-0.44, 0.0)], far)  # far stabiliser
    p.ellipse((0.0, 0.0), (0.5, 0.075), 0.0, main)  # fuselage
    p.poly([(-0.34, 0.04), (-0.47, 0.24), (-0.52, 0.24), (-0.49, 0.02)], main)  # tail fin
    p.poly([(0.06, -0.02), (-0.16, -0.34), (-0.25, -0.34), (-0.12, -0.03)], main)  # near wing
    p.ellipse((-0.07, -0.14), (0.06, 0.028), 0.0, shade(main, 0.6))  # engine
    p.line([(-0.42, -0.01), (0.42, -0.01)], 0.025, _accent(rng), min_px=1)  # livery stripe
    for x in np.arange(-0.3, 0.35, 0.07):
        p.circle((float(x), 0.025), 0.012, GLASS)
    p.ellipse((0.43, 0.02), (0.05, 0.025), 0.0, GLASS)  # cockpit


def draw_bicycle(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    r = 0.3
    for x in (-0.5, 0.5):
        p.ring((x, r), r, 0.07, DARK, min_px=3)
        p.circle((x, r), 0.05, shade(main, 0.8))
    seat, head, crank = (-0.14, 0.72), (0.36, 0.72), (0.0, r)
    for a, b in ((( -0.5, r), seat), (seat, head), (head, (0.5, r)), (seat, crank), (crank, (-0.5, r)),
                 (crank, head)):
        p.line([a, b], 0.06, main, min_px=3)
    p.ellipse((-0.16, 0.8), (0.1, 0.035), 0.0, DARK)  # saddle
    p.line([head, (0.42, 0.9), (0.3, 0.95)], 0.05, DARK, min_px=3)  # handlebar


def draw_bird(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    wing = shade(main, 0.6)
    if rng.random() < 0.4:  # flying: both wings up
        p.poly([(-0.05, 0.3), (-0.35, 0.85), (0.1, 0.35)], wing)
    p.poly([(-0.28, 0.3), (-0.58, 0.42), (-0.56, 0.18)], wing)  # tail
    p.ellipse((0.0, 0.3), (0.32, 0.17), 15.0, main)  # body
    p.circle((0.3, 0.46), 0.13, main)  # head
    p.poly([(0.4, 0.5), (0.6, 0.45), (0.4, 0.4)], hsv(40, 0.9, 0.9))  # beak
    p.ellipse((-0.04, 0.32), (0.24, 0.09), 20.0, wing)  # folded wing
    p.circle((0.34, 0.5), 0.025, DARK)
    _legs(p, [-0.02, 0.06], 0.16, 0.03, hsv(30, 0.6, 0.4), rng, swing=0.02)


def draw_boat(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    p.poly([(-0.7, 0.24), (0.75, 0.24), (0.52, 0.0), (-0.55, 0.0)], main)  # hull
    p.line([(-0.66, 0.19), (0.7, 0.19)], 0.04, _accent(rng), min_px=1)
    if rng.random() < 0.5:  # sailing boat
        p.line([(0.0, 0.22), (0.0, 1.15)], 0.03, DARK, min_px=2)
        p.poly([(0.03, 1.1), (0.03, 0.32), (0.55, 0.32)], hsv(40, 0.05, 0.97))
        p.poly([(-0.03, 1.0), (-0.03, 0.34), (-0.45, 0.34)], hsv(40, 0.08, 0.9))
    else:  # motor boat with a cabin
        p.poly([(-0.3, 0.22), (0.2, 0.22), (0.1, 0.45), (-0.3, 0.45)], hsv(0, 0.0, 0.92))
        p.rect(-0.25, 0.3, 0.05, 0.4, GLASS)


def draw_bottle(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    w = rng.uniform(0.11, 0.15)
    p.rect(-w, 0.0, w, 0.55, main)
    p.ellipse((0.0, 0.55), (w, 0.1), 0.0, main)  # shoulders
    p.rect(-0.045, 0.55, 0.045, 0.9, main)  # neck
    p.rect(-0.055, 0.88, 0.055, 0.97, _accent(rng))  # cap
    p.rect(-w, 0.16, w, 0.4, hsv(rng.uniform(0, 60), 0.15, 0.92))  # paper label
    p.rect(-w * 0.6, 0.2, -w * 0.3, 0.52, shade(main, 1.5))  # glass highlight


def draw_bus(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    p.poly([(-1.1, 0.1), (1.1, 0.1), (1.12, 0.9), (1.0, 1.0), (-1.08, 1.0), (-1.1, 0.92)], main)
    for x in np.arange(-1.0, 0.75, 0.27):
        p.rect(float(x), 0.55, float(x) + 0.21, 0.86, GLASS)
    p.rect(0.86, 0.45, 1.1, 0.88, GLASS)  # windscreen
    p.rect(0.62, 0.14, 0.8, 0.5, shade(GLASS, 0.7))  # door
    p.line([(-1.08, 0.3), (1.1, 0.3)], 0.05, _accent(rng), min_px=1)
    for x in (-0.7, 0.7):
        p.circle((x, 0.14), 0.15, DARK)
        p.circle((x, 0.14), 0.06, hsv(0, 0, 0.6))


def draw_car(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    roof = rng.uniform(0.82, 0.95)
    p.poly([(-0.5, 0.48), (0.42, 0.48), (0.22, roof), (-0.42, roof)], main)  # cabin
    p.poly([(-0.42, 0.52), (-0.1, 0.52), (-0.1, roof - 0.05), (-0.37, roof - 0.05)], GLASS)
    p.poly([(-0.04, 0.52), (0.36, 0.52), (0.19, roof - 0.05), (-0.04, roof - 0.05)], GLASS)
    p.poly([(-1.0, 0.15), (1.0, 0.15), (1.04, 0.32), (0.95, 0.52), (-0.98, 0.54), (-1.04, 0.32)], main)
    p.ellipse((0.95, 0.38), (0.05, 0.04), 0.0, hsv(50, 0.3, 1.0))  # headlight
    for x in (-0.6, 0.6):
        p.circle((x, 0.17), 0.18, DARK)
        p.circle((x, 0.17), 0.08, hsv(0, 0, 0.7))


def draw_cat(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    tail_up = rng.uniform(0.6, 1.0)
    p.line([(-0.4, 0.45), (-0.62, 0.55), (-0.7, tail_up)], 0.07, main)  # thin long tail
    _legs(p, [-0.3, -0.2, 0.22, 0.32], 0.4, 0.08, main, rng)
    p.ellipse((0.0, 0.42), (0.42, 0.17), 0.0, main)
    p.circle((0.45, 0.64), 0.17, main)
    p.poly([(0.32, 0.72), (0.35, 0.95), (0.46, 0.78)], main)  # pointed ears
    p.poly([(0.5, 0.78), (0.6, 0.95), (0.61, 0.72)], main)
    for x in (0.4, 0.53):
        p.ellipse((x, 0.66), (0.035, 0.02), 0.0, hsv(80, 0.8, 0.7))  # eyes
    p.circle((0.47, 0.58), 0.02, hsv(350, 0.5, 0.8))


def draw_chair(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    back = shade(main, 0.7)
    p.line([(-0.22, 0.45), (-0.22, 0.1)], 0.05, back)  # back legs
    p.line([(0.22, 0.45), (0.22, 0.1)], 0.05, back)
    p.rect(-0.29, 0.45, -0.22, 1.0, main)  # back posts
    p.rect(0.22, 0.45, 0.29, 1.0, main)
    p.rect(-0.29, 0.86, 0.29, 0.98, main)  # top rail
    p.rect(-0.29, 0.66, 0.29, 0.72, main)
    p.poly([(-0.34, 0.4), (0.34, 0.4), (0.29, 0.52), (-0.29, 0.52)], shade(main, 1.1))  # seat
    p.line([(-0.31, 0.42), (-0.33, 0.0)], 0.06, main)  # front legs
    p.line([(0.31, 0.42), (0.33, 0.0)], 0.06, main)


def draw_cow(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    p.line([(-0.58, 0.78), (-0.66, 0.4)], 0.03, main)  # tail
    _legs(p, [-0.45, -0.32, 0.3, 0.43], 0.5, 0.11, main, rng, swing=0.04)
    p.ellipse((0.0, 0.62), (0.6, 0.26), 0.0, main)
    p.ellipse((-0.15, 0.38), (0.09, 0.05), 0.0, hsv(350, 0.35, 0.9))  # udder
    p.ellipse((0.68, 0.68), (0.12, 0.2), -35.0, main)  # head
    p.ellipse((0.78, 0.55), (0.08, 0.06), 0.0, hsv(350, 0.3, 0.85))  # muzzle
    p.line([(0.6, 0.85), (0.5, 0.95)], 0.03, hsv(40, 0.1, 0.95), min_px=1)  # horns
    p.ellipse((0.55, 0.8), (0.08, 0.03), 20.0, main)  # ear


def draw_diningtable(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    back = shade(main, 0.6)
    p.rect(-0.74, 0.15, -0.67, 0.62, back)  # back legs
    p.rect(0.67, 0.15, 0.74, 0.62, back)
    p.poly([(-0.95, 0.62), (0.95, 0.62), (0.75, 0.82), (-0.75, 0.82)], shade(main, 1.15))  # top
    p.rect(-0.95, 0.54, 0.95, 0.63, main)  # front edge / apron
    p.rect(-0.9, 0.0, -0.82, 0.56, main)  # front legs
    p.rect(0.82, 0.0, 0.9, 0.56, main)


def draw_dog(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    ears = shade(main, 0.55)
    p.line([(-0.42, 0.55), (-0.6, rng.uniform(0.6, 0.85))], 0.09, main)  # short thick tail
    _legs(p, [-0.32, -0.2, 0.22, 0.34], 0.48, 0.1, main, rng)
    p.ellipse((0.0, 0.52), (0.44, 0.2), 0.0, main)
    p.circle((0.46, 0.76), 0.15, main)
    p.ellipse((0.62, 0.71), (0.13, 0.07), -10.0, shade(main, 1.1))  # snout
    p.circle((0.74, 0.73), 0.035, DARK)  # nose
    p.ellipse((0.38, 0.7), (0.06, 0.14), -10.0, ears)  # floppy ear
    p.circle((0.5, 0.81), 0.025, DARK)
    if rng.random() < 0.5:
        p.line([(0.38, 0.6), (0.46, 0.64)], 0.04, hsv(0, 0.85, 0.8), min_px=1)  # collar


def draw_horse(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    hair = shade(main, 0.4)
    p.poly([(-0.48, 0.72), (-0.62, 0.35), (-0.5, 0.4), (-0.42, 0.7)], hair)  # tail
    _legs(p, [-0.4, -0.3, 0.28, 0.38], 0.58, 0.07, main, rng, swing=0.1)
    p.ellipse((0.0, 0.66), (0.5, 0.17), 0.0, main)
    p.poly([(0.3, 0.66), (0.46, 0.58), (0.7, 0.95), (0.56, 1.0)], main)  # neck
    p.poly([(0.56, 1.0), (0.7, 0.99), (0.93, 0.78), (0.86, 0.72), (0.62, 0.86)], main)  # long head
    p.poly([(0.6, 0.99), (0.64, 1.08), (0.68, 0.98)], main)  # ear
    p.poly([(0.56, 1.0), (0.3, 0.72), (0.36, 0.7), (0.6, 0.93)], hair)  # mane


def draw_motorbike(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    for x in (-0.5, 0.5):
        p.circle((x, 0.24), 0.24, DARK)
        p.circle((x, 0.24), 0.1, hsv(0, 0, 0.6))
    p.line([(-0.15, 0.3), (-0.62, 0.4)], 0.05, hsv(0, 0, 0.75))  # exhaust
    p.rect(-0.15, 0.28, 0.18, 0.5, hsv(0, 0, 0.3))  # engine
    p.ellipse((0.08, 0.6), (0.26, 0.11), 5.0, main)  # tank
    p.poly([(-0.42, 0.58), (-0.05, 0.58), (-0.05, 0.67), (-0.38, 0.66)], DARK)  # seat
    p.poly([(-0.55, 0.48), (-0.3, 0.6), (-0.3, 0.5)], main)  # rear fairing
    p.line([(0.5, 0.24), (0.33, 0.82)], 0.05, hsv(0, 0, 0.7))  # fork
    p.line([(0.25, 0.86), (0.4, 0.88)], 0.04, DARK)  # handlebar
    p.circle((0.42, 0.7), 0.05, hsv(50, 0.2, 1.0))  # headlight


def draw_person(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    skin = SKIN[int(rng.integers(len(SKIN)))]
    trousers = hsv(rng.choice([220, 30, 0]), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.5))
    stride = rng.uniform(0.0, 0.12)
    p.line([(-0.05, 0.48), (-0.07 - stride, 0.02)], 0.085, trousers)
    p.line([(0.05, 0.48), (0.07 + stride, 0.02)], 0.085, trousers)
    p.poly([(-0.14, 0.8), (0.14, 0.8), (0.12, 0.45), (-0.12, 0.45)], main)  # torso
    pose = rng.integers(3)  # arms down, one raised, both raised
    for side, raised in ((-1, pose == 2), (1, pose >= 1)):
        hand = (side * 0.3, 0.98) if raised else (side * rng.uniform(0.17, 0.24), rng.uniform(0.42, 0.55))
        p.line([(side * 0.13, 0.78), (side * 0.17, 0.65) if not raised else (side * 0.22, 0.88), hand],
               0.06, main)
        p.circle(hand, 0.035, skin)
    p.rect(-0.035, 0.78, 0.035, 0.84, skin)  # neck
    p.circle((0.0, 0.91), 0.085, skin)
    p.ellipse((0.0, 0.95), (0.09, 0.05), 0.0, hsv(rng.uniform(20, 40), 0.5, rng.uniform(0.1, 0.5)))  # hair


def draw_pottedplant(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    for _ in range(int(rng.integers(9, 15))):
        phi = np.deg2rad(rng.uniform(15, 165))
        d = rng.uniform(0.15, 0.38)
        centre = (float(np.cos(phi) * d), float(0.4 + np.sin(phi) * d * 1.3))
        green = hsv(rng.uniform(90, 135), rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.6))
        p.ellipse(centre, (0.16, 0.05), float(np.rad2deg(phi)), green)
    p.poly([(-0.16, 0.0), (0.16, 0.0), (0.21, 0.36), (-0.21, 0.36)], main)  # pot
    p.rect(-0.24, 0.33, 0.24, 0.4, shade(main, 1.15))  # rim


def draw_sheep(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    face = hsv(25, 0.3, rng.uniform(0.08, 0.3))
    _legs(p, [-0.3, -0.18, 0.2, 0.3], 0.4, 0.05, face, rng, swing=0.03)
    for _ in range(14):  # fleece = a cloud of overlapping puffs
        a = rng.uniform(0, 2 * np.pi)
        p.circle((float(0.36 * np.cos(a) * rng.uniform(0.5, 1)), float(0.55 + 0.17 * np.sin(a))),
                 rng.uniform(0.1, 0.15), main)
    p.ellipse((0.0, 0.55), (0.38, 0.18), 0.0, main)
    p.ellipse((0.47, 0.63), (0.09, 0.14), -25.0, face)  # dark face
    p.ellipse((0.4, 0.72), (0.08, 0.03), 25.0, face)  # ear


def draw_sofa(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    back = shade(main, 0.85)
    p.rect(-0.8, 0.35, 0.8, 0.7, back)  # backrest between the arms, two puffy back cushions
    for x in (-0.4, 0.4):
        p.ellipse((x, 0.7), (0.4, 0.09), 0.0, back)
    p.rect(-0.95, 0.1, 0.95, 0.4, main)  # seat block
    for x in (-0.3, 0.3):  # cushion seams
        p.line([(x, 0.4), (x, 0.15)], 0.015, shade(main, 0.6), min_px=1)
    for x in (-1.0, 0.82):  # low arm rests
        p.rect(x, 0.1, x + 0.18, 0.5, shade(main, 1.1))
        p.ellipse((x + 0.09, 0.5), (0.1, 0.06), 0.0, shade(main, 1.1))
    for x in (-0.92, 0.86):
        p.rect(x, 0.0, x + 0.06, 0.11, DARK)


def draw_train(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    stripe = _accent(rng)
    p.poly([(-2.6, 0.1), (0.9, 0.1), (1.25, 0.2), (1.2, 0.55), (0.95, 0.95), (-2.6, 0.95)], main)
    p.poly([(0.95, 0.55), (1.16, 0.55), (0.96, 0.88)], GLASS)  # windscreen
    for x in np.arange(-2.5, 0.7, 0.3):
        p.rect(float(x), 0.55, float(x) + 0.2, 0.8, GLASS)
    p.line([(-2.6, 0.35), (1.2, 0.35)], 0.07, stripe, min_px=2)
    for x in (-1.35, -0.3):  # gaps between carriages
        p.line([(x, 0.12), (x, 0.93)], 0.02, shade(main, 0.4), min_px=1)
    for x in np.arange(-2.4, 0.9, 0.45):
        p.circle((float(x), 0.1), 0.08, DARK)


def draw_tvmonitor(p: Painter, rng: np.random.Generator, main: np.ndarray) -> None:
    wide = rng.uniform(0.5, 0.62)
    p.rect(-0.2, 0.0, 0.2, 0.05, main)  # foot
    p.rect(-0.04, 0.04, 0.04, 0.22, main)  # neck
    p.rect(-wide, 0.2, wide, 0.9, main)  # frame
    if rng.random() < 0.75:  # a picture on the screen: sky, land, a dark block
        p.rect(-wide + 0.05, 0.52, wide - 0.05, 0.85, hsv(rng.uniform(180, 220), 0.5, 0.95))
        p.rect(-wide + 0.05, 0.25, wide - 0.05, 0.52, hsv(rng.uniform(60, 140), 0.6, 0.7))
        p.rect(rng.uniform(-0.3, 0.1), 0.3, rng.uniform(0.15, 0.4), 0.6, _accent(rng))
    else:  # switched off: dark glossy glass
        p.rect(-wide + 0.05, 0.25, wide - 0.05, 0.85, hsv(220, 0.3, 0.18))


DRAWERS: dict[str, Drawer] = {
    "aeroplane": draw_aeroplane,
    "bicycle": draw_bicycle,
    "bird": draw_bird,
    "boat": draw_boat,
    "bottle": draw_bottle,
    "bus": draw_bus,
    "car": draw_car,
    "cat": draw_cat,
    "chair": draw_chair,
    "cow": draw_cow,
    "diningtable": draw_diningtable,
    "dog": draw_dog,
    "horse": draw_horse,
    "motorbike": draw_motorbike,
    "person": draw_person,
    "pottedplant": draw_pottedplant,
    "sheep": draw_sheep,
    "sofa": draw_sofa,
    "train": draw_train,
    "tvmonitor": draw_tvmonitor,
}
