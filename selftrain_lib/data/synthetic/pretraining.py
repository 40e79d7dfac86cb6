"""The pre-training classification task: generic textures x generic shapes (16 classes)."""
from __future__ import annotations

import numpy as np

from .draw import _Canvas, _any_colour, _blend, _rot, _t_checks, _t_dots, _t_noise, _t_stripes, _textured
from .spec import check_count

_PRETRAIN_TAG = 3

PRETRAIN_TEXTURES = ("stripes", "checks", "dots", "blotches")
PRETRAIN_SHAPES = ("L-shape", "T-shape", "chevron", "double-bar")
PRETRAIN_NUM_CLASSES = len(PRETRAIN_TEXTURES) * len(PRETRAIN_SHAPES)


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
    n = check_count(n, "n")
    seed = check_count(seed, "seed")
    size = check_count(size, "size")
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
