"""``synth-street``: a street scene in perspective (Cityscapes-like, 64x128, 10 classes)."""
from __future__ import annotations

import numpy as np

from .draw import _Canvas, _any_colour, _blend, _hsv, _poly_mask, _regular, _shift, _t_fine, _t_noise, _textured
from ..records import DatasetRecord, register
from .spec import SyntheticSpec

# Street classes in Cityscapes' order (a subset), with Cityscapes' palette.
ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = range(10)
STREET = SyntheticSpec(
    name="synth-street",
    class_names=("road", "sidewalk", "building", "fence", "pole", "traffic sign", "vegetation", "sky",
                 "person", "car"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (190, 153, 153), (153, 153, 153),
             (220, 220, 0), (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142)),
    image_size=(64, 128),
    default_pool_size=3000,
    default_val_size=500,
)
# Cityscapes' stand-in: its label counts 100 / 375 / 750 / 1500 of the 3,000-image pool are the
# paper's 100 / 372 / 744 / 1488 of 2,975 (the same fractions); the ablations at 100
RECORD = register(DatasetRecord(STREET.info(), stands_for="cityscapes", counts=(100, 375, 750, 1500)))


def street_image(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
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
    things = [("tree", rng.uniform(yh + 1, h + 6)) for _ in range(rng.integers(0, 5))]
    things += [("pole", rng.uniform(yh + 2, h + 4)) for _ in range(rng.integers(1, 4) if rng.random() < 0.5 else 0)]
    things += [("car", rng.uniform(yh + 2, h + 6)) for _ in range(rng.integers(1, 5) if rng.random() < 0.6 else 0)]
    things += [("person", rng.uniform(yh + 2, h + 3)) for _ in range(rng.integers(1, 5) if rng.random() < 0.25 else 0)]
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
