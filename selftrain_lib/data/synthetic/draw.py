"""Drawing primitives shared by the scene generators of this package: colours, a canvas that paints
class masks and pixels together, texture families and shapes."""
from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

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


def _textured(rng, family: str, Y, X, c1, contrast=(0.15, 0.5), grain=(0.0, 0.08)):
    """Colour field of texture ``family`` around base colour ``c1`` (and a second colour ``contrast`` away)."""
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
