"""Tests for selftrain_lib.augment (weak / strong batched augmentation)."""
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from selftrain_lib.augment import (
    ALL_OPS,
    GEOMETRIC_OPS,
    PHOTOMETRIC_OPS,
    MAX_TRANSLATE,
    StrongAugment,
    WeakAugment,
)

IGN = -1  # pixel indices 0..H*W-1 include 255, so position tests use another ignore value


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def position_batch(B, H, W):
    """Images whose channels 0/1 are x/W and y/H (channel 2 = 1), masks = y*W + x."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    img = torch.stack([xs / W, ys / H, torch.ones(H, W)]).float()
    return img.expand(B, 3, H, W).contiguous(), (ys * W + xs).expand(B, H, W).contiguous()


def natural_batch(B, H, W, seed=0):
    """Smooth colourful images plus noise, range about [0.15, 0.75] (not saturated, not grey)."""
    g = gen(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    base = torch.stack([xs, ys, (xs + ys) / 2])
    phase = torch.rand(B, 3, 1, 1, generator=g)
    img = 0.45 + 0.2 * torch.sin(6 * base + 6 * phase) + 0.08 * torch.rand(B, 3, H, W, generator=g)
    return img.clamp(0, 1)


def reference_source(theta, H, W):
    """Source pixel coordinates from F.affine_grid (independent of the library's own grid code)."""
    grid = F.affine_grid(theta.float(), (theta.shape[0], 1, H, W), align_corners=False)
    return ((grid[..., 0] + 1) * W - 1) / 2, ((grid[..., 1] + 1) * H - 1) / 2


def check_alignment(img_out, mask_out, H, W, fill, src=None):
    """Mask pixel source vs image-decoded source agree within 0.5 px; ignore <=> fill."""
    valid = mask_out != IGN
    mx, my = (mask_out % W).float(), torch.div(mask_out, W, rounding_mode="floor").float()
    ix, iy = img_out[:, 0] * W, img_out[:, 1] * H
    assert (mx - ix).abs()[valid].max() <= 0.5 + 1e-3
    assert (my - iy).abs()[valid].max() <= 0.5 + 1e-3
    # outside pixels: fill in the image exactly where the mask is ignore
    assert torch.equal(img_out[:, 2] == fill, ~valid)
    assert torch.all(img_out[:, :2][(~valid).unsqueeze(1).expand(-1, 2, -1, -1)] == fill)
    if src is not None:  # compare with F.affine_grid source points (away from pixel/half-pixel ties)
        sx, sy = src
        outside = (sx < -0.5) | (sx >= W - 0.5) | (sy < -0.5) | (sy >= H - 0.5)
        near_edge = torch.minimum(torch.minimum((sx + 0.5).abs(), (sx - W + 0.5).abs()),
                                  torch.minimum((sy + 0.5).abs(), (sy - H + 0.5).abs())) < 1e-3
        far = ~near_edge
        assert torch.equal(outside[far], ~valid[far])
        tie = ((sx - sx.floor() - 0.5).abs() < 1e-3) | ((sy - sy.floor() - 0.5).abs() < 1e-3)
        ok = valid & ~tie & far
        assert torch.equal(mx[ok], torch.round(sx[ok]))
        assert torch.equal(my[ok], torch.round(sy[ok]))
        inner = valid & far
        assert (ix[inner] - sx[inner].clamp(0, W - 1)).abs().max() < 1e-3
        assert (iy[inner] - sy[inner].clamp(0, H - 1)).abs().max() < 1e-3
    return valid


# --------------------------------------------------------------------------- strong: geometry

def test_strong_geometric_moves_mask_exactly_like_image():
    B, H, W = 16, 24, 32
    img, mask = position_batch(B, H, W)
    sa = StrongAugment(num_ops=3, magnitude=30, cutout_size=0, ignore_index=IGN, ops=GEOMETRIC_OPS)
    params = sa.sample(B, H, W, gen(1))
    assert params.geometric.all()
    out_img, out_mask = sa.apply_image(img, params), sa.apply_mask(mask, params)
    assert out_mask.dtype == torch.int64 and out_mask.shape == (B, H, W)
    assert out_img.shape == img.shape
    valid = check_alignment(out_img, out_mask, H, W, sa.fill, reference_source(params.theta(), H, W))
    frac_inside = valid.float().mean().item()
    assert 0.3 < frac_inside < 0.97, frac_inside
    # the warp really moves pixels
    own = torch.arange(H * W).view(1, H, W)
    assert (out_mask[valid] != own.expand(B, H, W)[valid]).float().mean() > 0.5
    # __call__ with the same seed gives the same result, masks in list order
    img2, masks2 = sa(img, [mask, mask.clone()], gen(1))
    assert torch.equal(img2, out_img) and torch.equal(masks2[0], out_mask) and torch.equal(masks2[1], out_mask)


def test_strong_mixed_batch_only_geometric_samples_warped():
    B, H, W = 32, 20, 28
    img, mask = position_batch(B, H, W)
    sa = StrongAugment(num_ops=1, magnitude=30, cutout_size=0, ignore_index=IGN, ops=("identity", "rotate"))
    params = sa.sample(B, H, W, gen(3))
    geo = params.geometric
    assert 0 < geo.sum() < B
    out_img, [out_mask] = sa(img, [mask], gen(3))
    assert torch.equal(out_img[~geo], img[~geo]) and torch.equal(out_mask[~geo], mask[~geo])
    assert not torch.equal(out_mask[geo], mask[geo])
    sx, sy = reference_source(params.theta(), H, W)
    check_alignment(out_img[geo], out_mask[geo], H, W, sa.fill, (sx[geo], sy[geo]))


@pytest.mark.parametrize("op", GEOMETRIC_OPS)
def test_geometric_op_matrices(op):
    """Each op is the transform it claims to be, in pixel units (W != H)."""
    B, H, W = 64, 24, 40
    sa = StrongAugment(num_ops=1, magnitude=30, random_magnitude=False, cutout_size=0, ops=(op,))
    p = sa.sample(B, H, W, gen(0))
    A, t = p.matrix[:, :, :2], p.matrix[:, :, 2]
    cx, cy = (W - 1) / 2, (H - 1) / 2  # image centre in pixel-index coordinates
    centre_src = A @ torch.tensor([cx, cy], dtype=torch.float64) + t
    if op == "rotate":
        assert torch.allclose(A @ A.transpose(1, 2), torch.eye(2, dtype=torch.float64).expand(B, 2, 2), atol=1e-9)
        ang = torch.atan2(A[:, 1, 0], A[:, 0, 0]).abs()
        assert torch.allclose(ang, torch.full_like(ang, math.radians(30)), atol=1e-9)
        assert torch.allclose(centre_src, torch.tensor([cx, cy], dtype=torch.float64).expand(B, 2), atol=1e-9)
    elif op.startswith("shear"):
        k = (0, 1) if op == "shear_x" else (1, 0)
        assert torch.allclose(A[:, k[0], k[1]].abs(), torch.full((B,), 0.3, dtype=torch.float64))
        assert torch.allclose(A[:, k[1], k[0]], torch.zeros(B, dtype=torch.float64))
        assert torch.allclose(centre_src, torch.tensor([cx, cy], dtype=torch.float64).expand(B, 2), atol=1e-9)
    else:
        assert torch.allclose(A, torch.eye(2, dtype=torch.float64).expand(B, 2, 2))
        ax, size = (0, W) if op == "translate_x" else (1, H)
        assert torch.allclose(t[:, ax].abs(), torch.full((B,), MAX_TRANSLATE * size, dtype=torch.float64))
        assert torch.allclose(t[:, 1 - ax], torch.zeros(B, dtype=torch.float64))
    # both directions occur
    signs = p.signs[:, 0]
    assert (signs > 0).any() and (signs < 0).any()


# --------------------------------------------------------------------------- strong: photometric, cutout

def test_photometric_and_cutout_leave_masks_unchanged():
    B, H, W = 16, 24, 32
    img = natural_batch(B, H, W)
    mask = torch.randint(0, 21, (B, H, W), generator=gen(5))
    mask[:, :3] = 255
    sa = StrongAugment(num_ops=3, magnitude=30, cutout_size=8, ops=PHOTOMETRIC_OPS)
    params = sa.sample(B, H, W, gen(2))
    out = sa.apply_image(img, params)
    assert torch.equal(sa.apply_mask(mask, params), mask)
    _, [m2] = sa(img, [mask], gen(2))
    assert torch.equal(m2, mask)
    assert out.min() >= 0 and out.max() <= 1
    assert params.cutout_boxes.shape == (B, 1, 4)  # one box by default
    boxes = params.cutout_boxes[:, 0]
    assert ((boxes[:, 2] - boxes[:, 0]) >= 4).all() and ((boxes[:, 3] - boxes[:, 1]) >= 4).all()
    inbox = torch.zeros(B, H, W, dtype=torch.bool)
    for b, (y0, x0, y1, x1) in enumerate(boxes.tolist()):  # test-side loop only
        inbox[b, y0:y1, x0:x1] = True
    assert (out.permute(0, 2, 3, 1)[inbox] == 0.5).all()
    assert (inbox.sum((1, 2)) <= 64).all()
    # outside the box the image differs from fill almost everywhere (box is the only fill)
    assert ((out == 0.5).all(1) & ~inbox).float().mean() < 0.01


def test_all_ops_keep_range_and_shapes():
    B, H, W = 32, 24, 32
    img = natural_batch(B, H, W)
    img[:, :, :2] = 1.0
    img[:, :, -2:] = 0.0
    mask = torch.randint(0, 21, (B, H, W), generator=gen(7))
    out, [m] = StrongAugment(num_ops=3, magnitude=30)(img, [mask], gen(4))
    assert out.shape == img.shape and out.dtype == img.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert m.shape == mask.shape and m.dtype == torch.int64
    assert set(m.unique().tolist()) <= set(mask.unique().tolist()) | {255}


@pytest.mark.parametrize("op", ALL_OPS)
def test_each_op_changes_image_or_is_identity(op):
    B, H, W = 6, 24, 32
    img = natural_batch(B, H, W)
    sa = StrongAugment(num_ops=1, magnitude=30, random_magnitude=False, cutout_size=0, ops=[op])
    params = sa.sample(B, H, W, gen(0))
    assert params.op_names() == [[op]] * B
    out = sa.apply_image(img, params)
    assert out.min() >= 0 and out.max() <= 1
    diff = (out - img).abs().flatten(1).amax(1)
    if op == "identity":
        assert torch.equal(out, img)
    else:
        assert (diff > 1e-2).all(), diff


@pytest.mark.parametrize("op", [o for o in PHOTOMETRIC_OPS if o != "identity"])
def test_photometric_ops_match_torchvision(op):
    """Batched ops equal torchvision's per-image functional ops (magnitude 15 of 30)."""
    B, H, W = 6, 16, 20
    img = natural_batch(B, H, W, seed=3)
    sa = StrongAugment(num_ops=1, magnitude=15, random_magnitude=False, cutout_size=0, ops=[op])
    params = sa.sample(B, H, W, gen(1))
    out = sa.apply_image(img, params)
    for b in range(B):  # reference is per image
        f = 1.0 + 0.45 * float(params.signs[b, 0])
        x = img[b]
        ref = {
            "autocontrast": lambda: TF.autocontrast(x),
            "equalize": lambda: TF.equalize(x),
            "solarize": lambda: TF.solarize(x, 0.5),
            "posterize": lambda: TF.posterize(x, 6),
            "color": lambda: TF.adjust_saturation(x, f),
            "contrast": lambda: TF.adjust_contrast(x, f),
            "brightness": lambda: TF.adjust_brightness(x, f),
            "sharpness": lambda: TF.adjust_sharpness(x, f),
        }[op]()
        torch.testing.assert_close(out[b], ref, atol=2e-6, rtol=0)


def test_photometric_ops_applied_in_drawn_order():
    """Several ops per sample are all applied, in each sample's own order (vs per-image torchvision)."""
    B, H, W = 16, 12, 14
    img = natural_batch(B, H, W, seed=4)
    sa = StrongAugment(num_ops=3, magnitude=15, random_magnitude=False, cutout_size=0,
                       ops=["solarize", "brightness", "posterize", "contrast"])
    params = sa.sample(B, H, W, gen(8))
    out = sa.apply_image(img, params)
    for b in range(B):
        x = img[b]
        for name, sign in zip(params.op_names()[b], params.signs[b].tolist()):
            f = 1.0 + 0.45 * sign
            x = {"solarize": lambda: TF.solarize(x, 0.5), "posterize": lambda: TF.posterize(x, 6),
                 "brightness": lambda: TF.adjust_brightness(x, f), "contrast": lambda: TF.adjust_contrast(x, f)}[name]()
        torch.testing.assert_close(out[b], x, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- strong: randomness

def test_strong_determinism_and_seed_dependence():
    B, H, W = 8, 24, 32
    img = natural_batch(B, H, W)
    mask = torch.randint(0, 21, (B, H, W), generator=gen(9))
    sa = StrongAugment(num_ops=2, magnitude=20)
    a_img, [a_mask] = sa(img, [mask], gen(11))
    b_img, [b_mask] = sa(img, [mask], gen(11))
    c_img, [c_mask] = sa(img, [mask], gen(12))
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    assert not torch.equal(a_img, c_img)
    # one generator, consecutive calls differ
    g = gen(11)
    first, _ = sa(img, [mask], g)
    second, _ = sa(img, [mask], g)
    assert torch.equal(first, a_img) and not torch.equal(first, second)


def test_strong_per_sample_randomness():
    B, H, W = 16, 24, 32
    img = natural_batch(1, H, W).expand(B, 3, H, W).contiguous()
    sa = StrongAugment(num_ops=2, magnitude=10)
    params = sa.sample(B, H, W, gen(0))
    assert len({tuple(r) for r in params.op_index.tolist()}) > 5
    assert len(set(params.magnitudes[:, 0].tolist())) == B
    out = sa.apply_image(img, params)
    distinct = {tuple(out[b].flatten()[::97].tolist()) for b in range(B)}
    assert len(distinct) == B
    # geometric warps differ per sample too
    gp = StrongAugment(num_ops=2, magnitude=10, ops=GEOMETRIC_OPS).sample(B, H, W, gen(0))
    assert len({tuple(m.flatten().tolist()) for m in gp.matrix}) == B


def test_strong_disabled_is_identity():
    B, H, W = 4, 16, 16
    img = natural_batch(B, H, W)
    mask = torch.randint(0, 5, (B, H, W))
    g = gen(0)
    state = g.get_state()
    sa = StrongAugment(enabled=False)
    out, masks = sa(img, [mask], g)
    assert out is img and masks[0] is mask and len(masks) == 1
    assert torch.equal(g.get_state(), state)
    p = StrongAugment().sample(B, H, W, gen(0))
    assert sa.apply_image(img, p) is img and sa.apply_mask(mask, p) is mask


def test_strong_zero_ops_and_no_masks():
    img = natural_batch(2, 16, 16)
    out, masks = StrongAugment(num_ops=0, cutout_size=0)(img, [], gen(0))
    assert torch.equal(out, img) and masks == []


# --------------------------------------------------------------------------- validation

def test_bad_op_name_raises_naming_it():
    with pytest.raises(ValueError, match="shear_z"):
        StrongAugment(ops=["rotate", "shear_z"])
    with pytest.raises(ValueError, match="magnitude"):
        StrongAugment(magnitude=31)
    with pytest.raises(TypeError):
        StrongAugment()(natural_batch(1, 8, 8), [], None)
    with pytest.raises(TypeError):
        StrongAugment()(natural_batch(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.int64), gen())
    sa = StrongAugment()
    p = sa.sample(2, 8, 8, gen())
    with pytest.raises(ValueError):
        sa.apply_image(natural_batch(2, 8, 10), p)


# --------------------------------------------------------------------------- weak augmentation

def test_weak_scale_one_equals_slicing():
    B, H, W, ch, cw = 16, 24, 32, 16, 20
    img = torch.rand(B, 3, H, W, generator=gen(1))
    mask = torch.randint(0, 256, (B, H, W), generator=gen(2))
    wa = WeakAugment((ch, cw), flip=True)
    p = wa.sample(B, H, W, gen(3))
    assert p.flip.any() and (~p.flip).any()
    out, [m] = wa(img, [mask], gen(3))
    assert out.shape == (B, 3, ch, cw) and m.shape == (B, ch, cw)
    offs = set()
    for b in range(B):  # reference slicing per image
        oy, ox = p.offset[b].tolist()
        assert 0 <= oy <= H - ch and 0 <= ox <= W - cw
        offs.add((oy, ox))
        ri, rm = img[b, :, oy:oy + ch, ox:ox + cw], mask[b, oy:oy + ch, ox:ox + cw]
        if p.flip[b]:
            ri, rm = ri.flip(-1), rm.flip(-1)
        assert torch.equal(out[b], ri), b
        assert torch.equal(m[b], rm), b
    assert len(offs) > 8


def test_weak_no_flip_and_full_crop_is_identity():
    img = torch.rand(4, 3, 13, 17, generator=gen(0))
    mask = torch.randint(0, 9, (4, 13, 17), generator=gen(1))
    out, [m] = WeakAugment((13, 17), flip=False)(img, [mask], gen(0))
    assert torch.equal(out, img) and torch.equal(m, mask)


def test_weak_scaled_alignment_and_mask_values():
    B, H, W = 16, 24, 32
    img, mask = position_batch(B, H, W)
    wa = WeakAugment((28, 36), scale_range=(0.6, 1.7), ignore_index=IGN)
    p = wa.sample(B, H, W, gen(5))
    assert len(set(p.scale.tolist())) == B
    out, [m] = wa(img, [mask], gen(5))
    assert out.shape == (B, 3, 28, 36)
    src = reference_source_weak(p)
    valid = check_alignment(out, m, H, W, wa.fill, src)
    assert 0.3 < valid.float().mean() < 1.0
    # label values only from the source mask or ignore (labels with 255 as ignore)
    lab = torch.randint(0, 19, (B, H, W), generator=gen(6))
    lab[:, ::5] = 255
    _, [lm] = WeakAugment((28, 36), scale_range=(0.6, 1.7))(img, [lab], gen(5))
    for b in range(B):
        assert set(lm[b].unique().tolist()) <= set(lab[b].unique().tolist()) | {255}


@pytest.mark.parametrize("s", [2.0, 0.5])
def test_weak_scale_matches_interpolate(s):
    """Pixel-centre convention of scaling: whole resized image == F.interpolate (align_corners=False)."""
    B, H, W = 4, 12, 16
    img = torch.rand(B, 3, H, W, generator=gen(0))
    mask = torch.randint(0, 1000, (B, H, W), generator=gen(1))
    size = (int(H * s), int(W * s))
    out, [m] = WeakAugment(size, scale_range=(s, s), flip=False)(img, [mask], gen(2))
    ref = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    ref_m = F.interpolate(mask[:, None].double(), size=size, mode="nearest-exact")[:, 0].long()
    assert torch.equal(m, ref_m)


def reference_source_weak(p):
    H, W = p.in_size
    grid = F.affine_grid(p.theta().float(), (p.batch_size, 1) + tuple(p.out_size), align_corners=False)
    return ((grid[..., 0] + 1) * W - 1) / 2, ((grid[..., 1] + 1) * H - 1) / 2


def test_weak_crop_larger_than_image_pads():
    B, H, W = 8, 12, 10
    img, mask = position_batch(B, H, W)
    wa = WeakAugment((20, 16), flip=False, ignore_index=IGN)
    p = wa.sample(B, H, W, gen(0))
    assert (p.offset[:, 0] <= 0).all() and (p.offset[:, 0] >= H - 20).all()
    assert len(set(p.offset[:, 1].tolist())) > 1
    out, [m] = wa(img, [mask], gen(0))
    for b in range(B):  # every source pixel appears exactly once, the rest is padding
        vals = m[b][m[b] != IGN]
        assert torch.equal(vals.sort().values, torch.arange(H * W))
    assert ((m == IGN) == (out[:, 2] == 0.5)).all()
    check_alignment(out, m, H, W, 0.5)


# --------------------------------------------------------------------------- batching / speed / device

def test_batched_speed():
    B, H, W = 64, 64, 64
    img = torch.rand(B, 3, H, W, generator=gen(0))
    mask = torch.randint(0, 21, (B, H, W), generator=gen(0))
    sa = StrongAugment(num_ops=2, magnitude=10)
    g = gen(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # with CPU time below: robust to other jobs sharing the machine
    try:
        sa(img, [mask], g)
        times = []
        for _ in range(5):
            t = time.process_time()
            sa(img, [mask], g)
            times.append(time.process_time() - t)
    finally:
        torch.set_num_threads(threads)
    assert min(times) < 0.2, times


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    B, H, W = 8, 24, 32
    img = natural_batch(B, H, W)
    mask = torch.randint(0, 21, (B, H, W))
    sa = StrongAugment(num_ops=3, magnitude=20)
    ci, [cm] = sa(img, [mask], gen(1))
    gi, [gm] = sa(img.cuda(), [mask.cuda()], gen(1))
    assert torch.equal(gm.cpu(), cm)
    assert (gi.cpu() - ci).abs().max() < 1e-4
    wa = WeakAugment((20, 20), scale_range=(0.5, 1.5))
    ci, [cm] = wa(img, [mask], gen(2))
    gi, [gm] = wa(img.cuda(), [mask.cuda()], gen(2))
    assert torch.equal(gm.cpu(), cm) and (gi.cpu() - ci).abs().max() < 1e-4


# --------------------------------------------------------------------------- strong: the authors' setting

AUTHORS = dict(num_ops=3, magnitude=30, prob=0.5, cutout_count=3, style="authors")  # apply_rand.rand_pascal_index


def test_defaults_draw_what_they_drew_before_the_new_options():
    """prob=1, one Cutout, torchvision's table: the same generator gives the same output as before
    randaug_prob / cutout_count / randaug_style existed (numbers recorded from that code)."""
    g = gen(123)
    img = torch.rand(6, 3, 20, 24, generator=g)
    mask = torch.randint(0, 21, (6, 20, 24), generator=g)
    sa = StrongAugment(2, 10.0, 8)
    p = sa.sample(6, 20, 24, gen(5))
    assert p.op_index.tolist() == [[1, 12], [9, 3], [6, 8], [8, 3], [12, 4], [7, 6]]
    assert p.cutout_boxes[:, 0].tolist() == [[12, 7, 20, 15], [0, 7, 4, 15], [8, 3, 16, 11], [0, 0, 6, 6],
                                             [12, 16, 20, 24], [5, 18, 13, 24]]
    out, [m] = sa(img, [mask], gen(5))
    assert float(out.double().sum()) == pytest.approx(4264.660607793834, abs=1e-3)
    assert int(m.sum()) == 42956
    explicit = StrongAugment(2, 10.0, 8, prob=1.0, cutout_count=1, style="torchvision")
    out2, [m2] = explicit(img, [mask], gen(5))
    assert torch.equal(out2, out) and torch.equal(m2, m)


def test_each_drawn_op_is_applied_with_probability_prob():
    B, H, W = 4000, 8, 8
    ops = [o for o in ALL_OPS if o != "identity"]  # a drawn op is never identity: identity <=> skipped
    for prob in (0.5, 0.2):
        p = StrongAugment(num_ops=3, prob=prob, ops=ops).sample(B, H, W, gen(1))
        applied = (p.op_index != ALL_OPS.index("identity")).double().mean().item()
        assert abs(applied - prob) < 0.02, (prob, applied)    # 12,000 draws: std 0.005
    # per sample, the number applied is Binomial(3, 0.5): all four counts occur at the right rates
    p = StrongAugment(num_ops=3, prob=0.5, ops=ops).sample(B, H, W, gen(2))
    counts = torch.bincount((p.op_index != 0).sum(1), minlength=4).double() / B
    assert torch.allclose(counts, torch.tensor([1, 3, 3, 1], dtype=torch.float64) / 8, atol=0.03)
    img = natural_batch(4, 16, 16)
    none, _ = StrongAugment(num_ops=3, prob=0.0, cutout_size=0)(img, [], gen(0))
    assert torch.equal(none, img)
    every = StrongAugment(num_ops=3, prob=1.0, ops=ops).sample(B, H, W, gen(1))
    assert (every.op_index != 0).all()


def test_cutout_count_boxes_and_only_they_are_filled():
    B, H, W, k = 32, 40, 48, 3
    img = natural_batch(B, H, W)
    mask = torch.randint(0, 21, (B, H, W), generator=gen(3))
    sa = StrongAugment(num_ops=2, magnitude=20, cutout_size=6, cutout_count=k, ops=PHOTOMETRIC_OPS)
    params = sa.sample(B, H, W, gen(4))
    boxes = params.cutout_boxes
    assert boxes.shape == (B, k, 4) and boxes.dtype == torch.int64
    assert len({tuple(b) for b in boxes.view(-1, 4).tolist()}) > B  # independent boxes per image
    out, [m] = sa(img, [mask], gen(4))
    plain = StrongAugment(num_ops=2, magnitude=20, cutout_size=6, cutout_count=0, ops=PHOTOMETRIC_OPS)
    ref = plain.apply_image(img, params)  # same ops, no Cutout
    inbox = torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):  # test-side loop only
        for y0, x0, y1, x1 in boxes[b].tolist():
            inbox[b, y0:y1, x0:x1] = True
    assert (out.permute(0, 2, 3, 1)[inbox] == 0.5).all()
    assert torch.equal(out.permute(0, 2, 3, 1)[~inbox], ref.permute(0, 2, 3, 1)[~inbox])
    assert torch.equal(m, mask)  # Cutout never touches masks
    assert (inbox.sum((1, 2)) > 36).float().mean() > 0.5  # most images have more than one box's area


def test_authors_setting_is_deterministic_given_the_generator():
    B, H, W = 8, 24, 32
    img = natural_batch(B, H, W)
    mask = torch.randint(0, 21, (B, H, W), generator=gen(9))
    sa = StrongAugment(cutout_size=8, **AUTHORS)
    a_img, [a_mask] = sa(img, [mask], gen(11))
    b_img, [b_mask] = sa(img, [mask], gen(11))
    c_img, _ = sa(img, [mask], gen(12))
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask) and not torch.equal(a_img, c_img)


def test_authors_levels_and_op_table():
    B, H, W = 3000, 24, 40
    p = StrongAugment(num_ops=1, magnitude=30, style="authors", cutout_size=0).sample(B, H, W, gen(0))
    levels = p.magnitudes[:, 0] / 3
    assert torch.equal(levels, levels.round()) and set(levels.long().tolist()) == set(range(1, 10))  # randint(1, 10)
    # translate: +-k pixels (not a fraction of the size)
    p = StrongAugment(num_ops=1, magnitude=30, style="authors", ops=["translate_x"]).sample(200, H, W, gen(1))
    assert torch.allclose(p.matrix[:, 0, 2].abs(), p.magnitudes[:, 0] / 3)
    # shear_x pivots on the top edge (y = -0.5 in pixel-index coordinates), shear_y on the left edge
    for op, ax in (("shear_x", 0), ("shear_y", 1)):
        p = StrongAugment(num_ops=1, magnitude=30, style="authors", ops=[op]).sample(200, H, W, gen(2))
        edge = torch.tensor([[7.0, -0.5], [-0.5, 5.0]], dtype=torch.float64)[ax]
        src = p.matrix[:, :, :2] @ edge + p.matrix[:, :, 2]
        assert torch.allclose(src, edge.expand(200, 2), atol=1e-9)
        assert torch.allclose(p.matrix[:, ax, 1 - ax].abs(), 0.3 * p.magnitudes[:, 0] / 30)  # as torchvision's
    # photometric: enhancers at 0.1 + 1.8 k/10 (no sign), posterize 4 - int(4 k/10) bits
    img = natural_batch(6, 16, 20, seed=3)
    for k in (1, 5, 9):
        for op, ref in (("brightness", lambda x: TF.adjust_brightness(x, 0.1 + 0.18 * k)),
                        ("contrast", lambda x: TF.adjust_contrast(x, 0.1 + 0.18 * k)),
                        ("posterize", lambda x: TF.posterize(x, 4 - int(4 * k / 10)))):
            sa = StrongAugment(num_ops=1, magnitude=3 * k, random_magnitude=False, cutout_size=0, ops=[op],
                               style="authors")
            out = sa.apply_image(img, sa.sample(6, 16, 20, gen(1)))
            torch.testing.assert_close(out, torch.stack([ref(x) for x in img]), atol=2e-6, rtol=0)


@pytest.mark.parametrize("options", [dict(prob=0.5), dict(style="authors"), dict(prob=0.5, style="authors"),
                                     dict(prob=0.5, style="authors", cutout_count=3)])
def test_new_options_keep_b_aligned_with_a(options):
    """Pixel-exact A/B alignment (as above) under every new option: the mask moves exactly as the
    image, skipped ops are skipped for both, and Cutout (drawn last) changes no mask."""
    B, H, W = 24, 24, 32
    img, mask = position_batch(B, H, W)
    sa = StrongAugment(num_ops=3, magnitude=30, cutout_size=0, ignore_index=IGN, ops=GEOMETRIC_OPS, **options)
    params = sa.sample(B, H, W, gen(1))
    geo = params.geometric
    if options.get("prob", 1.0) < 1:
        assert 0 < geo.sum() < B  # (1/2)^3 of the samples skip all three ops
    out_img, out_mask = sa.apply_image(img, params), sa.apply_mask(mask, params)
    assert torch.equal(out_img[~geo], img[~geo]) and torch.equal(out_mask[~geo], mask[~geo])
    check_alignment(out_img, out_mask, H, W, sa.fill, reference_source(params.theta(), H, W))
    own = torch.arange(H * W).view(1, H, W).expand(int(geo.sum()), H, W)
    assert (out_mask[geo] != own).float().mean() > 0.5
    if "cutout_count" in options:  # with Cutouts: the same masks, the image differs only in the boxes
        with_cutout = StrongAugment(num_ops=3, magnitude=30, cutout_size=6, ignore_index=IGN, ops=GEOMETRIC_OPS,
                                    **options)
        img2, [mask2] = with_cutout(img, [mask], gen(1))
        assert torch.equal(mask2, out_mask)
        assert ((img2 != out_img).any(1) <= (img2 == with_cutout.fill).all(1)).all()


def test_new_options_are_validated():
    with pytest.raises(ValueError, match="prob"):
        StrongAugment(prob=1.5)
    with pytest.raises(ValueError, match="cutout_count"):
        StrongAugment(cutout_count=-1)
    with pytest.raises(ValueError, match="style"):
        StrongAugment(style="fixmatch")
    with pytest.raises(ValueError, match="magnitude must be >= 6"):
        StrongAugment(magnitude=3, style="authors")
