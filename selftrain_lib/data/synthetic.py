"""Procedurally generated segmentation benchmarks that ship with the project (no download).

Two datasets stand in for the paper's benchmarks:

* ``synth-street`` (Cityscapes-like, 64x128, 10 classes): a street scene in perspective -- sky,
  buildings with window grids rising from the horizon, a road trapezoid with lane markings,
  sidewalks, fences, trees, thin poles (1-2 px) carrying traffic signs, cars on the road and
  persons on the sidewalks. Objects grow with their distance below the horizon and are drawn
  far-to-near, so nearer ones occlude farther ones. Cast shadows, fog and dusk vary the
  appearance without touching the labels.
* ``synth-objects`` (PASCAL-like, 96x96, background + 10 classes): 1-3 objects defined by their
  *shape* (disk, square, triangle, ring, cross, star, ellipse, diamond, hexagon, crescent) at
  random positions, scales and rotations, sometimes overlapping, on cluttered backgrounds
  (textured noise, half-plane patches, lines and irregular blobs that are background; a thin
  line sometimes crosses in front of the objects). Background textures are softer than the
  objects' and half the objects carry an outline, so that a small CNN can learn the task.

Colour never gives a class away on its own: colours are drawn per instance from overlapping
distributions, every class has a texture family with random parameters, and every image gets a
brightness/contrast/colour-cast jitter and Gaussian pixel noise. Masks are drawn from the same
geometry as the pixels, so a mask labels exactly the pixels painted for that class.

A third, classification task (:func:`generate_pretraining_images`) of generic textures x generic
shapes pre-trains the small CPU backbone, as ImageNet pre-trains the paper's ResNet-101. It uses
neither dataset's class definitions.

Everything is deterministic from the seed and image ``i`` is drawn from its own generator
``default_rng([seed, dataset, stream, i])``, so it does not depend on how many images are drawn.
"""
from __future__ import annotations

import colorsys
import os
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "IGNORE_INDEX", "GENERATOR_VERSION", "generator_digest", "SyntheticSpec", "SPECS", "PRETRAIN_NUM_CLASSES",
    "PRETRAIN_TEXTURES", "PRETRAIN_SHAPES", "get_spec", "generate", "load_synthetic",
    "generate_pretraining_images", "default_cache_dir", "cache_path", "colorize",
]

IGNORE_INDEX = 255
# Part of every cache key: bump whenever a generator's output changes.
GENERATOR_VERSION = 2
CACHE_ENV = "SELFTRAIN_CACHE"


def generator_digest() -> str:
    """Version and source hash of this generator: part of every cache key built on its output.

    Hashing the source, not only ``GENERATOR_VERSION``, means an edit that changes the images
    can never be served stale data (or stale runs) from an old cache.
    """
    import hashlib

    return f"v{GENERATOR_VERSION}-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]}"


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic dataset is: its classes, their figure colours and default sizes."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class, for figures
    image_size: tuple[int, int]  # (H, W)
    default_pool_size: int
    default_val_size: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# Street classes in Cityscapes' order (a subset), with Cityscapes' palette.
ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = range(10)
_STREET = SyntheticSpec(
    name="synth-street",
    class_names=("road", "sidewalk", "building", "fence", "pole", "traffic sign", "vegetation", "sky",
                 "person", "car"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (190, 153, 153), (153, 153, 153),
             (220, 220, 0), (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142)),
    image_size=(64, 128),
    default_pool_size=3000,
    default_val_size=500,
)

# Object classes are shapes; VOC's palette.
_OBJECT_SHAPES = ("disk", "square", "triangle", "ring", "cross", "star", "ellipse", "diamond", "hexagon",
                  "crescent")
_OBJECTS = SyntheticSpec(
    name="synth-objects",
    class_names=("background",) + _OBJECT_SHAPES,
    palette=((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
             (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0)),
    image_size=(96, 96),
    default_pool_size=3000,
    default_val_size=500,
)

SPECS: dict[str, SyntheticSpec] = {s.name: s for s in (_STREET, _OBJECTS)}
_DATASET_TAG = {"synth-street": 1, "synth-objects": 2}
_PRETRAIN_TAG = 3

PRETRAIN_TEXTURES = ("stripes", "checks", "dots", "blotches")
PRETRAIN_SHAPES = ("L-shape", "T-shape", "chevron", "double-bar")
PRETRAIN_NUM_CLASSES = len(PRETRAIN_TEXTURES) * len(PRETRAIN_SHAPES)


def get_spec(name: str) -> SyntheticSpec:
    """The spec of dataset ``name``; ``ValueError`` naming the known ones if there is none."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown synthetic dataset {name!r}; known: {', '.join(sorted(SPECS))}") from None


def colorize(mask: np.ndarray, name_or_spec: str | SyntheticSpec) -> np.ndarray:
    """RGB uint8 rendering of a label mask with the dataset's palette (ignore/unknown: white)."""
    spec = name_or_spec if isinstance(name_or_spec, SyntheticSpec) else get_spec(name_or_spec)
    lut = np.full((256, 3), 255, np.uint8)
    lut[:spec.num_classes] = np.asarray(spec.palette, np.uint8)
    return lut[np.asarray(mask, np.uint8)]


# ==========================================================================================
# drawing primitives
# ==========================================================================================

@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                      np.float32) * 255.0


def _any_colour(rng, s=(0.0, 1.0), v=(0.15, 0.95)) -> np.ndarray:
    return _hsv(rng.uniform(), rng.uniform(*s), rng.uniform(*v))


def _shift(rng, c: np.ndarray, amount: float) -> np.ndarray:
    """A second colour near ``c`` (for two-tone textures)."""
    return np.clip(c * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, 0.4 * amount * 255, 3), 0, 255)


class _Canvas:
    """An image being painted and its label mask; every paint writes both from one boolean mask."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.zeros((h, w), np.uint8)
        self.Y, self.X = _grid(h, w)

    def box(self, y0: float, y1: float, x0: float, x1: float):
        """Clipped integer bounding box (slices and coordinate grids), or None when empty."""
        iy0, iy1 = max(0, int(np.floor(y0))), min(self.h, int(np.ceil(y1)) + 1)
        ix0, ix1 = max(0, int(np.floor(x0))), min(self.w, int(np.ceil(x1)) + 1)
        if iy0 >= iy1 or ix0 >= ix1:
            return None
        sl = (slice(iy0, iy1), slice(ix0, ix1))
        return sl, self.Y[sl], self.X[sl]

    def paint(self, sl, m: np.ndarray, colour: np.ndarray, cls: int) -> None:
        np.copyto(self.img[sl], colour, where=m[..., None])
        np.copyto(self.lab[sl], np.uint8(cls), where=m)

    def finish(self, rng, noise=(2.0, 8.0)) -> tuple[np.ndarray, np.ndarray]:
        """Photometric jitter (brightness, contrast, colour cast) + Gaussian noise -> uint8."""
        img = self.img
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.7, 1.3) + mean + rng.uniform(-25, 25)
        img *= rng.uniform(0.9, 1.1, 3).astype(np.float32)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(*noise))
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), self.lab


# ---- scalar texture fields in roughly [-1, 1] ----------------------------------------------

def _t_smooth(rng, Y, X):
    a = rng.uniform(0, 2 * np.pi)
    p = X * np.float32(np.cos(a)) + Y * np.float32(np.sin(a))
    lo, hi = p.min(), p.max()
    return (p - lo) * np.float32(2.0 / max(hi - lo, 1.0)) - 1.0


def _wave(Y, X, fy: float, fx: float, phase: float) -> np.ndarray:
    """sin(fx * X + fy * Y + phase) on an axis-aligned grid, computed separably (two outer products)."""
    ys, xs = Y[:, :1], X[:1, :]
    ay, ax = ys * np.float32(fy) + np.float32(phase), xs * np.float32(fx)
    return np.sin(ax) * np.cos(ay) + np.cos(ax) * np.sin(ay)


def _t_stripes(rng, Y, X, period=(3.0, 9.0), square=None):
    a = rng.uniform(0, np.pi)
    f = 2 * np.pi / rng.uniform(*period)
    t = _wave(Y, X, f * np.sin(a), f * np.cos(a), rng.uniform(0, 6.3))
    if square if square is not None else rng.random() < 0.5:
        t = np.sign(t)
    return t


def _t_checks(rng, Y, X, period=(3.0, 9.0)):
    a = rng.uniform(0, np.pi / 2) if rng.random() < 0.5 else 0.0
    c, s = np.cos(a), np.sin(a)
    f = np.pi / rng.uniform(*period)
    # u = X c + Y s, v = Y c - X s
    return np.sign(_wave(Y, X, f * s, f * c, rng.uniform(0, 6.3)) * _wave(Y, X, f * c, -f * s, rng.uniform(0, 6.3)))


def _t_noise(rng, Y, X, period=(8.0, 30.0), k=4):
    """Band-limited noise: a sum of ``k`` random plane waves."""
    t = np.zeros(np.broadcast_shapes(Y.shape, X.shape), np.float32)
    for _ in range(k):
        a = rng.uniform(0, 2 * np.pi)
        f = 2 * np.pi / rng.uniform(*period)
        t += _wave(Y, X, f * np.sin(a), f * np.cos(a), rng.uniform(0, 6.3))
    return t * np.float32(1.0 / np.sqrt(k / 2.0))


def _t_fine(rng, Y, X):
    return np.clip(rng.standard_normal(Y.shape, dtype=np.float32) * np.float32(0.6), -1, 1)


def _t_dots(rng, Y, X, period=(4.0, 9.0)):
    p = np.float32(rng.uniform(*period))
    r2 = np.float32((p * rng.uniform(0.2, 0.4)) ** 2)
    u = (X + np.float32(rng.uniform(0, p))) % p - p / 2
    v = (Y + np.float32(rng.uniform(0, p))) % p - p / 2
    return np.where(u * u + v * v < r2, np.float32(1), np.float32(-1))


_TEXTURES = {"smooth": _t_smooth, "stripes": _t_stripes, "checks": _t_checks, "noise": _t_noise,
             "fine": _t_fine, "dots": _t_dots,
             "noise_hi": lambda rng, Y, X: _t_noise(rng, Y, X, period=(2.5, 6.0), k=5)}


def _blend(t: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Colour field from a scalar field in [-1, 1]: c1 at -1, c2 at +1."""
    w = (t * np.float32(0.5) + np.float32(0.5))[..., None]
    return c1 + w * (c2 - c1)


def _textured(rng, family: str, Y, X, c1, c2=None, contrast=(0.15, 0.5), grain=(0.0, 0.08)):
    """Colour field of texture ``family`` around base colour ``c1`` (second colour ``c2``)."""
    if c2 is None:
        c2 = _shift(rng, c1, rng.uniform(*contrast))
    col = _blend(_TEXTURES[family](rng, Y, X), c1, c2)
    g = rng.uniform(*grain)
    if g > 0.01:
        col = col * (1 + np.float32(g) * rng.standard_normal(Y.shape, dtype=np.float32))[..., None]
    return col


def _poly_mask(Y, X, px, py) -> np.ndarray:
    """Even-odd fill of the polygon with vertices (px, py) (any polygon, vectorised per edge)."""
    inside = np.zeros(Y.shape, bool)
    n = len(px)
    for i in range(n):
        x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        if y0 == y1:
            continue
        cross = (Y < y0) != (Y < y1)
        xint = np.float32(x0) + (Y - np.float32(y0)) * np.float32((x1 - x0) / (y1 - y0))
        inside ^= cross & (X < xint)
    return inside


def _regular(cx, cy, r, n, rot, inner=None):
    """Vertices of a regular n-gon (or an n-pointed star when ``inner`` is a radius ratio)."""
    if inner is None:
        ang = rot + np.arange(n) * 2 * np.pi / n
        rad = np.full(n, r)
    else:
        ang = rot + np.arange(2 * n) * np.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, r, r * inner)
    return cx + rad * np.cos(ang), cy + rad * np.sin(ang)


def _rot(Y, X, cy, cx, a):
    """Coordinates (u, v) of the grid in a frame centred on (cy, cx) and rotated by ``a``."""
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    dx, dy = X - np.float32(cx), Y - np.float32(cy)
    return dx * c + dy * s, dy * c - dx * s


# ==========================================================================================
# synth-street
# ==========================================================================================

def _street_image(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    cv = _Canvas(h, w)
    Y, X = cv.Y, cv.X
    yh = rng.uniform(0.28, 0.48) * h  # horizon
    xv = rng.uniform(0.3, 0.7) * w  # vanishing point
    depth = h - yh
    road_w = rng.uniform(0.7, 1.4) * w  # road width at the bottom row
    f = rng.uniform(0.3, 0.7)
    rl, rr = road_w * f / depth, road_w * (1 - f) / depth  # road edges: x = xv -/+ r * (y - yh)
    sl = rl + rng.uniform(0.12, 0.5) * w / depth  # outer sidewalk edges (building lines)
    sr = rr + rng.uniform(0.12, 0.5) * w / depth
    ref = 0.55 * h  # scale 1 at this many rows below the horizon

    # -- sky: vertical gradient, blue or overcast, with clouds
    if rng.random() < 0.65:
        top = _hsv(rng.uniform(0.52, 0.68), rng.uniform(0.25, 0.75), rng.uniform(0.55, 1.0))
    else:
        top = _hsv(rng.uniform(), rng.uniform(0.0, 0.12), rng.uniform(0.45, 0.95))
    low = np.clip(top * rng.uniform(1.0, 1.3) + rng.uniform(0, 50), 0, 255)
    t = np.clip(Y / np.float32(max(yh, 1.0)), 0, 1)[..., None]
    sky = top + t * (low - top)
    if rng.random() < 0.6:
        cloud = np.clip(_t_noise(rng, Y, X, period=(10, 40)), 0, 1)[..., None] * np.float32(rng.uniform(0.3, 0.9))
        sky = sky + cloud * (np.float32(rng.uniform(180, 255)) - sky)
    cv.paint((slice(None), slice(None)), np.ones((h, w), bool), sky, SKY)

    # ground rows (everything below the horizon) in ground-plane coordinates
    g = cv.box(yh, h, 0, w)
    gsl, GY, GX = g
    below = GY > yh
    d = np.maximum(GY - np.float32(yh), np.float32(0.5))

    # -- ground beyond the sidewalks: grass / hedges (vegetation)
    veg_c = _veg_colour(rng)
    cv.paint(gsl, below, _textured(rng, "noise_hi", GY, GX, veg_c, contrast=(0.2, 0.5)), VEGETATION)

    # -- distant buildings around the vanishing point
    for _ in range(rng.integers(0, 5)):
        bw, bh = rng.uniform(3, 16), rng.uniform(2, 12)
        bx = xv + rng.uniform(-0.25, 0.25) * w
        b = cv.box(yh - bh, yh + 1, bx - bw / 2, bx + bw / 2)
        if b:
            sl_, Yb, Xb = b
            m = (Yb >= yh - bh) & (Yb <= yh + 1) & (Xb >= bx - bw / 2) & (Xb < bx + bw / 2)
            cv.paint(sl_, m, _building_texture(rng, Yb, Xb, small=True), BUILDING)

    # -- buildings (and some walls of trees) on both sides, roofs and bases converging to the
    #    vanishing point; their bases are the sidewalks' outer edges
    for side in (-1, 1):
        slope = sl if side < 0 else sr
        end = xv + side * rng.uniform(1, 14)
        x = 0.0 if side < 0 else float(w)
        while (x - end) * side > 0:
            bw = rng.uniform(8, 45)
            xa, xb = (x, min(x + bw, end)) if side < 0 else (max(x - bw, end), x)
            x = xb if side < 0 else xa
            kind = rng.random()
            if kind < 0.1:
                continue  # a gap
            trees = kind > 0.78
            k, c = (rng.uniform(0.05, 0.4), rng.uniform(-2, 5)) if trees else (rng.uniform(0.1, 0.9), rng.uniform(0, 8))
            near = xa if side < 0 else xb
            top_near = yh - c - k * abs(xv - near) - (6 if trees else 0)
            bot_near = yh + abs(xv - near) / slope
            b = cv.box(top_near, bot_near, xa, xb)
            if not b:
                continue
            sl_, Yb, Xb = b
            dist = np.abs(Xb - np.float32(xv))
            top = yh - c - k * dist
            if trees:  # an irregular crown line
                top = top + _t_noise(rng, np.zeros_like(Xb), Xb, period=(3, 12), k=3) * np.float32(rng.uniform(1, 4))
            m = (Yb >= top) & (Yb < yh + dist / np.float32(slope)) & (Xb >= xa) & (Xb < xb)
            if trees:
                col = _textured(rng, "noise_hi", Yb, Xb, _veg_colour(rng), contrast=(0.25, 0.6))
                cv.paint(sl_, m, col, VEGETATION)
            else:
                near_scale = abs(xv - 0.5 * (xa + xb)) / (0.5 * w)
                cv.paint(sl_, m, _building_texture(rng, Yb, Xb, scale=near_scale), BUILDING)
        # a fence along the building line
        if rng.random() < 0.2:
            _fence(rng, cv, xv, yh, slope, side)

    # -- sidewalks and road
    walk = below & (GX >= xv - sl * d) & (GX <= xv + sr * d)
    c1 = _hsv(rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.8))
    lat, z = (GX - np.float32(xv)) / d, np.float32(1.0) / d  # ground-plane coordinates
    tiles = np.sign(np.sin(lat * np.float32(rng.uniform(3, 8)) + np.float32(rng.uniform(0, 6.3)))
                    * np.sin(z * np.float32(rng.uniform(30, 80))))
    walk_col = _blend(tiles * np.float32(rng.uniform(0.2, 0.8)), c1, _shift(rng, c1, 0.25))
    walk_col += _t_fine(rng, GY, GX)[..., None] * np.float32(rng.uniform(3, 12))
    cv.paint(gsl, walk, walk_col, SIDEWALK)

    road = below & (GX >= xv - rl * d) & (GX <= xv + rr * d)
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.12), rng.uniform(0.18, 0.6))
    road_col = _blend(_t_noise(rng, GY, GX, period=(6, 30)) * np.float32(rng.uniform(0.2, 0.7)),
                      c1, _shift(rng, c1, 0.3))
    road_col += _t_fine(rng, GY, GX)[..., None] * np.float32(rng.uniform(4, 16))
    cv.paint(gsl, road, road_col, ROAD)
    # lane markings (road): dashed centre line, sometimes solid edge lines
    mark_c = _hsv(rng.uniform(0.1, 0.17), rng.uniform(0, 0.8), rng.uniform(0.75, 1.0))
    lc = rng.uniform(-0.3, 0.3) * (rl + rr) / 2
    mw = rng.uniform(0.006, 0.012) * w / depth * 2
    dash = np.sin(z * np.float32(rng.uniform(40, 90)) + np.float32(rng.uniform(0, 6.3))) > 0
    marks = road & (np.abs(GX - (xv + lc * d)) < mw * d + 0.35) & dash
    if rng.random() < 0.5:
        marks |= road & ((np.abs(GX - (xv - rl * 0.9 * d)) < mw * d + 0.3)
                         | (np.abs(GX - (xv + rr * 0.9 * d)) < mw * d + 0.3))
    cv.paint(gsl, marks, mark_c, ROAD)

    # -- things standing on the ground, drawn far to near (occlusion by drawing order)
    # A long tail, as in real street scenes: people, fences, poles and signs appear in a
    # minority of images, so a few labelled images show few of them.
    things = []
    for _ in range(rng.integers(0, 5)):
        things.append(("tree", rng.uniform(yh + 1, h + 6)))
    for _ in range(rng.integers(1, 4) if rng.random() < 0.5 else 0):
        things.append(("pole", rng.uniform(yh + 2, h + 4)))
    for _ in range(rng.integers(1, 5) if rng.random() < 0.6 else 0):
        things.append(("car", rng.uniform(yh + 2, h + 6)))
    for _ in range(rng.integers(1, 5) if rng.random() < 0.25 else 0):
        things.append(("person", rng.uniform(yh + 2, h + 3)))
    things.sort(key=lambda t: t[1])
    for kind, yb in things:
        dd = yb - yh
        s = dd / ref
        if kind == "car":
            xc = rng.uniform(xv - rl * dd, xv + rr * dd)
            _car(rng, cv, yb, xc, s)
            continue
        # sidewalk things; sometimes a person crosses the road
        side = -1 if rng.random() < 0.5 else 1
        inner, outer = (rl, sl) if side < 0 else (rr, sr)
        if kind == "person" and rng.random() < 0.2:
            xc = rng.uniform(xv - rl * dd, xv + rr * dd)
        elif kind == "pole":
            xc = xv + side * dd * (inner + rng.uniform(0.05, 0.5) * (outer - inner))
        else:
            xc = xv + side * dd * rng.uniform(inner, outer)
        if kind == "tree":
            _tree(rng, cv, yb, xc, s)
        elif kind == "pole":
            _pole(rng, cv, yb, xc, s, toward_road=-side)
        else:
            _person(rng, cv, yb, xc, s)
    _street_weather(rng, cv, yh)
    return cv.finish(rng)


def _street_weather(rng, cv, yh):
    """Shadows, fog and dusk: appearance changes that leave the labels alone."""
    img, Y, X = cv.img, cv.Y, cv.X
    h, w = cv.h, cv.w
    if rng.random() < 0.4:  # cast shadows: slanted bands across the lower image
        a = rng.uniform(-1.2, 1.2)
        for _ in range(rng.integers(1, 3)):
            x0, bw = rng.uniform(-0.3, 1.0) * w, rng.uniform(0.1, 0.4) * w
            u = X - np.float32(a) * (Y - np.float32(h))
            m = (u >= x0) & (u < x0 + bw) & (Y > np.float32(yh - rng.uniform(0, 10)))
            img *= np.where(m, np.float32(rng.uniform(0.45, 0.8)), np.float32(1.0))[..., None]
    if rng.random() < 0.25:  # fog, densest at the horizon
        fog = np.float32(rng.uniform(140, 230))
        wgt = np.clip(1 - np.abs(Y - np.float32(yh)) / np.float32(rng.uniform(0.3, 0.9) * h), 0, 1)
        wgt = (wgt * np.float32(rng.uniform(0.3, 0.8)))[..., None]
        img += wgt * (fog - img)
    if rng.random() < 0.2:  # dusk: darker, tinted
        img *= np.float32(rng.uniform(0.35, 0.7))
        img += _hsv(rng.uniform(), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.2))


def _veg_colour(rng):
    if rng.random() < 0.75:
        return _hsv(rng.uniform(0.16, 0.45), rng.uniform(0.25, 0.85), rng.uniform(0.2, 0.7))
    return _hsv(rng.uniform(0.0, 0.16), rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.75))  # autumn


def _building_texture(rng, Y, X, scale: float = 0.5, small: bool = False):
    wall = _hsv(rng.uniform(), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.9))
    if small:
        return _textured(rng, "smooth", Y, X, wall, contrast=(0.05, 0.3), grain=(0, 0.06))
    style = rng.random()
    if style < 0.75:  # window grid, bigger when nearer
        py = rng.uniform(3.0, 5.0) + 5.0 * scale * rng.uniform(0.5, 1.0)
        px = py * rng.uniform(0.7, 1.5)
        wy, wx = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.7)
        win = (((Y + np.float32(rng.uniform(0, py))) % np.float32(py)) < np.float32(py * wy)) & \
              (((X + np.float32(rng.uniform(0, px))) % np.float32(px)) < np.float32(px * wx))
        if rng.random() < 0.7:
            glass = _hsv(rng.uniform(0.5, 0.7), rng.uniform(0, 0.5), rng.uniform(0.05, 0.35))
        else:
            glass = _hsv(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.6, 1.0))
        col = _textured(rng, "noise", Y, X, wall, contrast=(0.05, 0.25), grain=(0, 0.06))
        col = np.where(win[..., None], glass, col)
    elif style < 0.9:  # horizontal siding
        col = _blend(np.sign(np.sin(Y * np.float32(2 * np.pi / rng.uniform(2, 5)))), wall, _shift(rng, wall, 0.3))
    else:
        col = _textured(rng, "smooth", Y, X, wall, grain=(0, 0.1))
    return col


def _fence(rng, cv, xv, yh, slope, side):
    w = cv.w
    xa, xb = sorted((xv + side * rng.uniform(0.2, 0.6) * w, xv + side * rng.uniform(0.8, 1.2) * w))
    k = rng.uniform(0.3, 0.6)
    near = xa if side < 0 else xb
    bot_near = yh + abs(xv - near) / slope
    b = cv.box(yh, bot_near, xa, xb)
    if not b:
        return
    sl_, Y, X = b
    dist = np.abs(X - np.float32(xv))
    base = yh + dist / np.float32(slope)
    fh = k * (base - np.float32(yh))
    region = (Y < base) & (Y >= base - fh) & (X >= xa) & (X < xb)
    colour = _hsv(rng.uniform(), rng.uniform(0, 0.5), rng.uniform(0.2, 0.8))
    if rng.random() < 0.6:  # rails and bars: thin, the background shows through
        p = rng.uniform(4.0, 7.0)
        rail = np.maximum(np.float32(2.0), fh * np.float32(0.18))
        m = region & ((((X + np.float32(rng.uniform(0, p))) % np.float32(p)) < 2.0)
                      | (Y < base - fh + rail) | ((Y >= base - fh * np.float32(0.5)) & (Y < base - fh * np.float32(0.5) + rail)))
        cv.paint(sl_, m, _textured(rng, "smooth", Y, X, colour), FENCE)
    else:  # planks
        planks = np.sign(np.sin(X * np.float32(2 * np.pi / rng.uniform(2, 5))))
        cv.paint(sl_, region, _blend(planks, colour, _shift(rng, colour, 0.3)), FENCE)


def _tree(rng, cv, yb, xc, s):
    s = max(s, 0.05)
    r = s * rng.uniform(5, 12) + 1.0
    th = s * rng.uniform(5, 14)
    tw = max(1.0, s * rng.uniform(1.2, 3.0))
    b = cv.box(yb - th - 1, yb, xc - tw / 2, xc + tw / 2)
    if b:
        sl_, Y, X = b
        m = (Y >= yb - th - 1) & (Y < yb) & (X >= xc - tw / 2) & (X < xc - tw / 2 + tw)
        trunk = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.15, 0.5))
        cv.paint(sl_, m, _textured(rng, "stripes", Y, X, trunk), VEGETATION)
    cy = yb - th - 0.7 * r
    n = rng.integers(3, 7)
    oy, ox = rng.uniform(-0.6, 0.5, n) * r, rng.uniform(-0.7, 0.7, n) * r
    rad = rng.uniform(0.45, 0.9, n) * r
    b = cv.box(cy - 1.6 * r, cy + 1.5 * r, xc - 1.6 * r, xc + 1.6 * r)
    if not b:
        return
    sl_, Y, X = b
    m = np.zeros(Y.shape, bool)
    for i in range(n):
        m |= (Y - np.float32(cy + oy[i])) ** 2 + (X - np.float32(xc + ox[i])) ** 2 <= np.float32(rad[i] ** 2)
    c = _veg_colour(rng)
    col = _textured(rng, "noise_hi" if rng.random() < 0.7 else "noise", Y, X, c, contrast=(0.25, 0.6))
    cv.paint(sl_, m, col, VEGETATION)


def _pole(rng, cv, yb, xc, s, toward_road):
    s = max(s, 0.05)
    hp = s * rng.uniform(30, 50) + 4
    pw = int(np.clip(round(s * rng.uniform(2.0, 4.5)), 2, 4))
    x0 = int(np.floor(xc))
    b = cv.box(yb - hp, yb, x0, x0 + pw - 1)
    colour = _hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.12, 0.65))
    if b:
        sl_, Y, X = b
        m = (Y >= yb - hp) & (Y < yb)
        cv.paint(sl_, m, _textured(rng, "smooth", Y, X, colour, grain=(0, 0.1)), POLE)
    top = yb - hp
    if rng.random() < 0.3:  # street lamp: a 1-px arm towards the road
        arm = s * rng.uniform(4, 10) + 2
        xa, xb = sorted((x0, x0 + toward_road * arm))
        b = cv.box(top, top + 1, xa, xb)
        if b:
            sl_, Y, X = b
            cv.paint(sl_, np.ones(Y.shape, bool), colour, POLE)
    if rng.random() < 0.6:  # traffic sign
        sz = max(3.0, s * rng.uniform(4.0, 7.5))
        cy = top + sz + rng.uniform(0, 0.25) * hp
        cx = x0 + pw / 2 + rng.uniform(-0.5, 0.5) * sz * 0.5
        b = cv.box(cy - sz, cy + sz, cx - sz, cx + sz)
        if not b:
            return
        sl_, Y, X = b
        shape = rng.integers(4)
        dy, dx = Y - np.float32(cy), X - np.float32(cx)
        if shape == 0:
            m = dy * dy + dx * dx <= np.float32(sz * sz)
            inner = dy * dy + dx * dx <= np.float32((0.6 * sz) ** 2)
        elif shape == 1:
            m = (np.abs(dy) <= sz) & (np.abs(dx) <= sz)
            inner = (np.abs(dy) <= 0.6 * sz) & (np.abs(dx) <= 0.6 * sz)
        elif shape == 2:
            m = np.abs(dy) + np.abs(dx) <= sz
            inner = np.abs(dy) + np.abs(dx) <= 0.6 * sz
        else:
            px, py = _regular(cx, cy, sz * 1.15, 3, rng.choice([-np.pi / 2, np.pi / 2]))
            m = _poly_mask(Y, X, px, py)
            px, py = _regular(cx, cy, sz * 0.6, 3, np.arctan2(py[0] - cy, px[0] - cx))
            inner = _poly_mask(Y, X, px, py)
        c1 = _any_colour(rng, s=(0.3, 1.0), v=(0.3, 1.0))
        c2 = _any_colour(rng, s=(0.0, 0.4), v=(0.6, 1.0)) if rng.random() < 0.7 else _any_colour(rng)
        col = np.where(inner[..., None], c2, c1).astype(np.float32)
        cv.paint(sl_, m, col, SIGN)


def _car(rng, cv, yb, xc, s):
    s = max(s, 0.05)
    w = max(3.0, s * rng.uniform(24, 34))
    hb = w * rng.uniform(0.26, 0.36)
    hc = w * rng.uniform(0.18, 0.28)
    top = yb - hb - hc
    b = cv.box(top, yb + 0.12 * hb, xc - w / 2 - 1, xc + w / 2 + 1)
    if not b:
        return
    sl_, Y, X = b
    u = (X - np.float32(xc)) / np.float32(w / 2)
    v = (Y - np.float32(yb - hb / 2)) / np.float32(hb / 2)
    body = u ** 4 + v ** 4 <= 1.0
    t = (Y - np.float32(top)) / np.float32(hc)  # 0 at the roof, 1 at the body
    half = np.float32(w / 2 * rng.uniform(0.5, 0.65)) + t * np.float32(w / 2 * rng.uniform(0.2, 0.3))
    off = np.float32(rng.uniform(-0.08, 0.08) * w)
    cabin = (t >= 0) & (t <= 1.05) & (np.abs(X - np.float32(xc) - off) <= half)
    glass_m = cabin & (t >= 0.25) & (np.abs(X - np.float32(xc) - off) <= half - max(1.0, 0.06 * w))
    wr = max(0.6, 0.09 * w)
    wh = max(0.8, 0.22 * hb)
    wheels = ((np.abs(X - np.float32(xc - 0.33 * w)) <= wr) | (np.abs(X - np.float32(xc + 0.33 * w)) <= wr)) & \
             (Y >= np.float32(yb - wh)) & (Y < np.float32(yb + 0.12 * hb))
    m = body | cabin | wheels
    paint = _any_colour(rng, s=(0.0, 1.0), v=(0.12, 0.95))
    col = _textured(rng, "smooth", Y, X, paint, contrast=(0.1, 0.4), grain=(0, 0.04))
    glass = _hsv(rng.uniform(0.5, 0.7), rng.uniform(0, 0.4), rng.uniform(0.05, 0.45))
    col = np.where(glass_m[..., None], glass, col)
    col = np.where((wheels & ~body)[..., None], np.float32(rng.uniform(10, 50)), col)
    if rng.random() < 0.7:  # rear lights
        lights = body & (np.abs(np.abs(u) - 0.8) < 0.12) & (np.abs(v + 0.2) < 0.3)
        col = np.where(lights[..., None], _hsv(rng.uniform(-0.03, 0.08), rng.uniform(0.6, 1.0),
                                               rng.uniform(0.6, 1.0)), col)
    cv.paint(sl_, m, col, CAR)


def _person(rng, cv, yb, xc, s):
    s = max(s, 0.05)
    hp = max(8.0, s * rng.uniform(22, 36))
    top = yb - hp
    b = cv.box(top, yb, xc - 0.3 * hp, xc + 0.3 * hp)
    if not b:
        return
    sl_, Y, X = b
    r = max(0.6, 0.085 * hp)
    head_c = (top + r, xc + rng.uniform(-0.03, 0.03) * hp)
    head = (Y - np.float32(head_c[0])) ** 2 + (X - np.float32(head_c[1])) ** 2 <= np.float32(r * r + 0.25)
    tw = max(1.5, hp * rng.uniform(0.12, 0.17))
    hip = top + hp * rng.uniform(0.5, 0.58)
    torso = (Y >= top + 1.8 * r) & (Y < hip) & (np.abs(X - np.float32(xc)) <= np.float32(tw))
    lw = max(1.0, hp * 0.06)
    stride = rng.uniform(0, 0.12) * hp
    frac = np.clip((Y - np.float32(hip)) / np.float32(yb - hip), 0, 1)
    legs = (Y >= hip) & (Y < yb) & (
        (np.abs(X - np.float32(xc - 0.5 * tw) + frac * np.float32(stride)) <= lw)
        | (np.abs(X - np.float32(xc + 0.5 * tw) - frac * np.float32(stride)) <= lw))
    skin = _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.25, 0.95))
    shirt = _any_colour(rng)
    trousers = _any_colour(rng, v=(0.08, 0.6))
    col = np.where(head[..., None], skin, np.where(torso[..., None], shirt, trousers))
    col = col + _t_fine(rng, Y, X)[..., None] * np.float32(rng.uniform(3, 12))
    cv.paint(sl_, head | torso | legs, col, PERSON)


# ==========================================================================================
# synth-objects
# ==========================================================================================

# Texture and hue an object of each class prefers (70% of the time each, independently;
# otherwise any): appearance cues as real classes have them, never decisive alone: the hue bands
# of neighbouring classes overlap and 30% of objects take any colour.
_OBJECT_HUE_SPREAD = 0.07
_OBJECT_TEXTURE = ("smooth", "checks", "stripes", "noise_hi", "smooth", "dots", "stripes", "checks", "noise",
                   "dots")
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
    if name == "ellipse":
        u, v = _rot(Y, X, cy, cx, a)
        return u * u + (v / np.float32(rng.uniform(0.38, 0.6))) ** 2 <= np.float32(r * r)
    if name == "square":  # axis-aligned up to +-15 degrees
        u, v = _rot(Y, X, cy, cx, rng.uniform(-np.pi / 12, np.pi / 12))
        e = np.float32(0.82 * r)
        return (np.abs(u) <= e) & (np.abs(v) <= e)
    if name == "diamond":  # a rhombus with unequal diagonals (never a square)
        u, v = _rot(Y, X, cy, cx, a)
        return np.abs(u) / np.float32(r) + np.abs(v) / np.float32(r * rng.uniform(0.5, 0.72)) <= 1.0
    if name == "cross":
        u, v = _rot(Y, X, cy, cx, a)
        t = np.float32(r * rng.uniform(0.22, 0.38))
        au, av = np.abs(u), np.abs(v)
        return ((au <= t) & (av <= r)) | ((av <= t) & (au <= r))
    if name == "crescent":
        d = r * rng.uniform(0.35, 0.6)
        rr = r * rng.uniform(0.8, 0.95)
        outer = (Y - np.float32(cy)) ** 2 + (X - np.float32(cx)) ** 2 <= np.float32(r * r)
        bite = (Y - np.float32(cy + d * np.sin(a))) ** 2 + (X - np.float32(cx + d * np.cos(a))) ** 2 <= np.float32(rr * rr)
        return outer & ~bite
    if name == "triangle":
        px, py = _regular(cx, cy, r * 1.1, 3, a)
    elif name == "hexagon":
        px, py = _regular(cx, cy, r, 6, a)
    else:  # star
        px, py = _regular(cx, cy, r * 1.1, 5, a, inner=rng.uniform(0.38, 0.5))
    return _poly_mask(Y, X, px, py)


def _objects_image(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
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
    # -- 1-3 objects: any colour, any texture (half the time the class's own family)
    k = rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25])
    for _ in range(k):
        cls = int(rng.integers(1, len(_OBJECT_SHAPES) + 1))
        r = rng.uniform(10, 32) if k == 1 else rng.uniform(8, 26)
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


# ==========================================================================================
# generation and caching
# ==========================================================================================

_DRAW = {"synth-street": _street_image, "synth-objects": _objects_image}


def _check_count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
    return int(n)


def generate(name: str, n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of dataset ``name``: uint8 ``(n, H, W, 3)`` and uint8 masks ``(n, H, W)``.

    Mask values lie in ``[0, num_classes)`` (``IGNORE_INDEX`` is not used). Image ``i`` is drawn
    from ``default_rng([seed, dataset, stream, i])``: it does not depend on ``n``. ``stream``
    separates independent sets drawn from one seed (0: train pool, 1: validation).
    """
    spec = get_spec(name)
    n = _check_count(n, "n")
    seed = _check_count(seed, "seed")
    stream = _check_count(stream, "stream")
    h, w = spec.image_size
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.empty((n, h, w), np.uint8)
    draw = _DRAW[name]
    for i in range(n):
        images[i], masks[i] = draw(np.random.default_rng([seed, _DATASET_TAG[name], stream, i]), h, w)
    return images, masks


def cache_root() -> Path:
    """The library's cache: ``$SELFTRAIN_CACHE`` or ``~/.cache/selftrain_lib`` (data, pre-trained weights)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "selftrain_lib"


def default_cache_dir() -> Path:
    """Where :func:`load_synthetic` caches: ``<cache_root>/synthetic``."""
    return cache_root() / "synthetic"


def cache_path(name: str, pool_size: int, val_size: int, seed: int, cache_dir: str | os.PathLike) -> Path:
    """The cache file of one (dataset, sizes, seed, generator version)."""
    return Path(cache_dir) / f"{name}_pool{pool_size}_val{val_size}_seed{seed}_{generator_digest()}.npz"


_KEYS = ("train_images", "train_masks", "val_images", "val_masks")


def load_synthetic(name: str, pool_size: int | None = None, val_size: int | None = None, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> dict[str, np.ndarray]:
    """The train pool and validation set of dataset ``name``, generated once and cached.

    Returns ``{"train_images", "train_masks", "val_images", "val_masks"}``. The pool is stream 0
    of ``seed``, the validation set stream 1 (independent of the pool). ``None`` sizes take the
    dataset's defaults. The arrays are cached as one ``.npz`` per (name, sizes, seed,
    ``GENERATOR_VERSION``) in ``cache_dir`` (default :func:`default_cache_dir`), written to a
    temporary file in the same folder and moved into place atomically; an existing file is reused
    (an unreadable one is regenerated).
    """
    spec = get_spec(name)
    pool_size = spec.default_pool_size if pool_size is None else _check_count(pool_size, "pool_size")
    val_size = spec.default_val_size if val_size is None else _check_count(val_size, "val_size")
    seed = _check_count(seed, "seed")
    path = None
    if use_cache:
        path = cache_path(name, pool_size, val_size, seed, default_cache_dir() if cache_dir is None else cache_dir)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as f:
                    data = {k: f[k] for k in _KEYS}
                h, w = spec.image_size
                if data["train_images"].shape == (pool_size, h, w, 3) and data["val_images"].shape == (val_size, h, w, 3):
                    return data
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
                pass  # unreadable: regenerate and overwrite
    ti, tm = generate(name, pool_size, seed, stream=0)
    vi, vm = generate(name, val_size, seed, stream=1)
    data = {"train_images": ti, "train_masks": tm, "val_images": vi, "val_masks": vm}
    if path is not None:
        _save_atomic(path, data)
    return data


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ==========================================================================================
# pre-training classification task
# ==========================================================================================

def _pretrain_shape(k: int, Y, X, cy, cx, r, a) -> np.ndarray:
    u, v = _rot(Y, X, cy, cx, a)
    t = np.float32(0.28 * r)
    if k == 0:  # L-shape
        return ((np.abs(u + 0.6 * r) <= t) & (np.abs(v) <= r)) | ((np.abs(v - 0.72 * r) <= t) & (np.abs(u) <= r))
    if k == 1:  # T-shape
        return ((np.abs(u) <= t) & (np.abs(v) <= r)) | ((np.abs(v + 0.72 * r) <= t) & (np.abs(u) <= r))
    if k == 2:  # chevron
        return (np.abs(v - 0.8 * np.abs(u) + 0.3 * r) <= 1.2 * t) & (np.abs(u) <= r)
    # double bar
    return (np.abs(np.abs(v) - 0.55 * r) <= t) & (np.abs(u) <= r)


def generate_pretraining_images(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A 16-class classification task (4 texture families x 4 shapes) to pre-train the backbone.

    Class ``label = texture * 4 + shape`` with textures :data:`PRETRAIN_TEXTURES` and shapes
    :data:`PRETRAIN_SHAPES`: a textured shape at a random position, scale, rotation and colours on
    a smooth noisy background. Neither dataset's classes appear. Labels are balanced (each block of
    16 consecutive images holds every class once, in a seeded order); image ``i`` does not depend
    on ``n``. Returns uint8 images ``(n, size, size, 3)`` and int64 labels ``(n,)``.
    """
    n = _check_count(n, "n")
    seed = _check_count(seed, "seed")
    size = _check_count(size, "size")
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    k = PRETRAIN_NUM_CLASSES
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    perm = None
    for i in range(n):
        if i % k == 0:
            perm = np.random.default_rng([seed, _PRETRAIN_TAG, 0, i // k]).permutation(k)
        label = int(perm[i % k])
        labels[i] = label
        rng = np.random.default_rng([seed, _PRETRAIN_TAG, 1, i])
        cv = _Canvas(size, size)
        Y, X = cv.Y, cv.X
        bg = _any_colour(rng)
        cv.paint((slice(None), slice(None)), np.ones((size, size), bool),
                 _textured(rng, "noise", Y, X, bg, contrast=(0.1, 0.5), grain=(0, 0.1)), 0)
        tex, shp = divmod(label, len(PRETRAIN_SHAPES))
        r = rng.uniform(0.22, 0.4) * size
        cy, cx = (size / 2 + rng.uniform(-0.15, 0.15, 2) * size)
        m = _pretrain_shape(shp, Y, X, cy, cx, r, rng.uniform(0, 2 * np.pi))
        scale = size / 64.0
        if tex == 0:
            t = _t_stripes(rng, Y, X, period=(3 * scale, 8 * scale), square=rng.random() < 0.5)
        elif tex == 1:
            t = _t_checks(rng, Y, X, period=(3 * scale, 8 * scale))
        elif tex == 2:
            t = _t_dots(rng, Y, X, period=(4 * scale, 9 * scale))
        else:
            t = np.sign(_t_noise(rng, Y, X, period=(5 * scale, 14 * scale)))
        c1 = _any_colour(rng)
        c2 = _any_colour(rng)
        if np.abs(c1 - c2).sum() < 120:  # keep the texture visible
            c2 = 255.0 - c1
        cv.paint((slice(None), slice(None)), m, _blend(t, c1, c2), 1)
        images[i] = cv.finish(rng)[0]
    return images, labels
