"""``synth-objects``: 2-4 shapes on cluttered backgrounds (PASCAL-like, 96x96, background + 5 classes)."""
from __future__ import annotations

import numpy as np

from .draw import _Canvas, _any_colour, _hsv, _poly_mask, _regular, _rot, _textured
from ..records import DatasetRecord, register
from .spec import SyntheticSpec

# Five shapes whose outlines differ (a disk has no corners, a ring a hole, a cross concave arms); the
# first design's near-twins (ellipse, hexagon ~ disk; diamond ~ square; crescent ~ ring) and star are
# gone. Few classes and several objects an image give the paper's label fractions several labelled
# instances of each class (docs/cpu_scale.md, "The decision").
_OBJECT_SHAPES = ("disk", "square", "triangle", "ring", "cross")
OBJECTS = SyntheticSpec(
    name="synth-objects",
    class_names=("background",) + _OBJECT_SHAPES,
    palette=((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128)),
    image_size=(96, 96),
    default_pool_size=3000,
    default_val_size=500,
)
# Figure colours in place of the spec's palette, which borrowed VOC's: a near-black background and
# dark, close hues; these are distinct at a glance (tab10's hues and a light grey
# background; white stays "ignore"). Colours are for figures only: they are not part of the generated
# data, its cache key or any run hash (the generator is left unchanged).
FIGURE_PALETTE = ((205, 205, 205), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
# VOC's stand-in: its label counts 30 / 60 / 150 / 375 of the 3,000-image pool are the paper's
# fractions 1/100 / 1/50 / 1/20 / 1/8; the ablations at 60 (1/50)
RECORD = register(DatasetRecord(OBJECTS.info(FIGURE_PALETTE), stands_for="voc", counts=(30, 60, 150, 375)))


# Texture and hue an object of each class prefers (70% of the time each, independently;
# otherwise any): appearance cues as real classes have them, never decisive alone: the hue bands
# of neighbouring classes overlap and 30% of objects take any colour.
_OBJECT_HUE_SPREAD = 0.07
_OBJECT_TEXTURE = ("smooth", "checks", "stripes", "noise_hi", "dots")
# How many objects an image holds, and their probabilities.
OBJECT_COUNTS = (2, 3, 4)
OBJECT_COUNT_P = (0.35, 0.4, 0.25)
_ANY_TEXTURE = ("smooth", "stripes", "checks", "noise", "noise_hi", "dots", "fine")
_BACKGROUND_TEXTURE = ("smooth", "noise", "noise", "fine")


def _shape_mask(cls: int, rng, Y, X, cy, cx, r) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    name = _OBJECT_SHAPES[cls - 1]
    if name == "disk":
        return (Y - np.float32(cy)) ** 2 + (X - np.float32(cx)) ** 2 <= np.float32(r * r)
    if name == "ring":
        d2 = (Y - np.float32(cy)) ** 2 + (X - np.float32(cx)) ** 2
        return (d2 <= np.float32(r * r)) & (d2 >= np.float32((r * rng.uniform(0.45, 0.7)) ** 2))
    if name == "square":  # axis-aligned up to +-15 degrees
        u, v = _rot(Y, X, cy, cx, rng.uniform(-np.pi / 12, np.pi / 12))
        e = np.float32(0.82 * r)
        return (np.abs(u) <= e) & (np.abs(v) <= e)
    if name == "cross":
        u, v = _rot(Y, X, cy, cx, a)
        t = np.float32(r * rng.uniform(0.22, 0.38))
        au, av = np.abs(u), np.abs(v)
        return ((au <= t) & (av <= r)) | ((av <= t) & (au <= r))
    px, py = _regular(cx, cy, r * 1.1, 3, a)  # triangle
    return _poly_mask(Y, X, px, py)


def objects_image(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    cv = _Canvas(h, w)
    Y, X = cv.Y, cv.X
    full = (slice(None), slice(None))
    # -- cluttered background (all class 0): soft textures, flat lines, irregular blobs
    c1 = _any_colour(rng, v=(0.15, 0.9))
    cv.paint(full, np.ones((h, w), bool), _textured(rng, rng.choice(_BACKGROUND_TEXTURE), Y, X, c1,
                                                    contrast=(0.1, 0.5), grain=(0, 0.1)), 0)
    for _ in range(rng.integers(0, 3)):  # half-plane patches of another texture
        u, _v = _rot(Y, X, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi))
        cv.paint(full, u > 0, _textured(rng, rng.choice(_BACKGROUND_TEXTURE), Y, X, _any_colour(rng),
                                        contrast=(0.1, 0.5)), 0)
    for _ in range(rng.integers(0, 4)):  # irregular blobs
        _blob(rng, cv, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20))
    for _ in range(rng.integers(0, 4)):  # lines
        _line(rng, cv)
    # -- 2-4 objects: any colour, any texture (70% of the time the class's own family)
    k = int(rng.choice(OBJECT_COUNTS, p=OBJECT_COUNT_P))
    for _ in range(k):
        cls = int(rng.integers(1, len(_OBJECT_SHAPES) + 1))
        r = rng.uniform(8, 26)  # the first design drew a lone object larger; an image now holds 2-4
        cy, cx = rng.uniform(0.12 * h, 0.88 * h), rng.uniform(0.12 * w, 0.88 * w)
        b = cv.box(cy - 1.2 * r, cy + 1.2 * r, cx - 1.2 * r, cx + 1.2 * r)
        if not b:
            continue
        sl_, Yb, Xb = b
        m = _shape_mask(cls, rng, Yb, Xb, cy, cx, r)
        fam = _OBJECT_TEXTURE[cls - 1] if rng.random() < 0.7 else rng.choice(_ANY_TEXTURE)
        if rng.random() < 0.7:
            hue = (cls - 1) / len(_OBJECT_SHAPES) + rng.uniform(-_OBJECT_HUE_SPREAD, _OBJECT_HUE_SPREAD)
            c = _hsv(hue % 1.0, rng.uniform(0.45, 1.0), rng.uniform(0.35, 0.95))
        else:
            c = _any_colour(rng)
        col = _textured(rng, fam, Yb, Xb, c, contrast=(0.3, 0.8), grain=(0, 0.08))
        if rng.random() < 0.5:  # an outline (part of the object)
            inner = m.copy()
            inner[1:] &= m[:-1]
            inner[:-1] &= m[1:]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            edge = c * np.float32(rng.uniform(0.2, 0.6)) if rng.random() < 0.6 else np.clip(c + 120, 0, 255)
            col = np.where((m & ~inner)[..., None], edge.astype(np.float32), col)
        cv.paint(sl_, m, col, cls)
    if rng.random() < 0.25:  # a thin background occluder in front
        _line(rng, cv, width=(1.0, 2.5))
    return cv.finish(rng)


def _blob(rng, cv, cy, cx, r):
    b = cv.box(cy - 1.8 * r, cy + 1.8 * r, cx - 1.8 * r, cx + 1.8 * r)
    if not b:
        return
    sl_, Y, X = b
    dy, dx = Y - np.float32(cy), X - np.float32(cx)
    th = np.arctan2(dy, dx)
    rad = np.ones(Y.shape, np.float32)
    for k in (2, 3, 4, 5):
        rad += np.float32(rng.uniform(0.0, 0.2)) * np.sin(th * np.float32(k) + np.float32(rng.uniform(0, 6.3)))
    m = dy * dy + dx * dx <= (rad * np.float32(r)) ** 2
    cv.paint(sl_, m, _textured(rng, rng.choice(_BACKGROUND_TEXTURE), Y, X, _any_colour(rng), contrast=(0.05, 0.3)), 0)


def _line(rng, cv, width=(1.0, 4.5)):
    u, _v = _rot(cv.Y, cv.X, rng.uniform(0, cv.h), rng.uniform(0, cv.w), rng.uniform(0, np.pi))
    m = np.abs(u) < np.float32(rng.uniform(*width) / 2)
    cv.paint((slice(None), slice(None)), m, _any_colour(rng), 0)
