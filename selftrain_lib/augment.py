"""Batched weak and strong augmentation for semi-supervised segmentation.

Why plain torch ops (not torchvision.transforms.v2 or kornia)
-------------------------------------------------------------
* torchvision 0.29 ``transforms.v2.functional`` ops take one parameter set per
  call (``affine``/``rotate`` reject a tensor angle with a TypeError), and the
  ``v2.RandAugment`` transform applied to a batch tensor draws ONE op/magnitude
  for the whole batch (checked: identical inputs give identical outputs).
  Per-sample randomness therefore needs a per-image Python loop.  (v2 *can*
  pad masks with an ignore value via ``fill={tv_tensors.Mask: 255, ...}``, so
  mask filling is not the problem there; per-sample parameters are.)  v2's
  ``RandAugment`` also uses a fixed magnitude, not one drawn per op and sample.
* kornia does batch per-sample parameters, but it is another dependency (not
  installed here, so these notes are not checked against a kornia install);
  its warps pad through ``grid_sample``-style modes (zeros/border/reflection),
  so the mask ignore value needs extra work, and we want control over
  pixel-centre maths (exact equality with slicing for integer crops).

Everything random is drawn on the CPU from an explicit ``torch.Generator``
and then moved to the images' device, so results are reproducible and identical
on CPU and GPU up to floating point.

Conventions
-----------
* images: float tensors in [0, 1], shape (B, 3, H, W);
* masks: integer (normally int64) tensors (B, H, W); ``ignore_index`` (255)
  marks pixels without a label.  Several masks (e.g. label and pseudo-label)
  can be passed; all get the same geometric transform as their image.
* Geometry is expressed by one affine matrix per sample, ``matrix`` (B, 2, 3),
  mapping OUTPUT pixel-index coordinates (x, y, 1) (pixel (i, j) has centre
  x = j, y = i) to SOURCE pixel-index coordinates.  A source point is inside
  the image iff -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5.  Outside points
  give ``fill`` in images and ``ignore_index`` in masks (a hard edge, the same
  test for both).  Images are sampled bilinearly (border-clamped inside the
  image), masks by nearest neighbour (round half up) with an index gather, so
  integer labels are exact for any int64 value.  For an exact integer shift the
  sampling is exact (equal to slicing).  ``F.affine_grid`` is not used for the
  sampling itself because its normalised grid cannot reproduce integer pixel
  positions exactly for arbitrary sizes; :func:`matrix_to_theta` converts our
  matrices to the equivalent ``F.affine_grid`` theta (align_corners=False).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ALL_OPS",
    "STYLES",
    "GEOMETRIC_OPS",
    "PHOTOMETRIC_OPS",
    "MAX_MAGNITUDE",
    "AugmentParams",
    "StrongAugment",
    "WeakParams",
    "WeakAugment",
    "matrix_to_theta",
]

#: RandAugment op names, in the order used by ``AugmentParams.op_index``.
ALL_OPS: tuple[str, ...] = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "contrast",
    "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "posterize",
)
GEOMETRIC_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
PHOTOMETRIC_OPS: tuple[str, ...] = tuple(o for o in ALL_OPS if o not in GEOMETRIC_OPS)
_OP_ID = {name: k for k, name in enumerate(ALL_OPS)}
_GEOMETRIC_IDS = torch.tensor([_OP_ID[name] for name in GEOMETRIC_OPS])

#: Magnitudes use RandAugment's 0-30 scale (torchvision ``num_magnitude_bins=31``).
MAX_MAGNITUDE = 30.0
# Op strengths at magnitude 30 (as torchvision's RandAugment at its top bin).
MAX_ROTATE_DEG = 30.0           # rotate: +-30 degrees
MAX_SHEAR = 0.3                 # shear_x/shear_y: shear factor +-0.3
MAX_TRANSLATE = 150.0 / 331.0   # translate: +-0.45 of the width / height
MAX_ENHANCE = 0.9               # color/contrast/brightness/sharpness factor 1 +- 0.9
# solarize: threshold 1 - m/30 (pixels >= threshold inverted)
# posterize: bits 8 - round(4 m/30) (8 .. 4 bits)

#: Op tables (``StrongAugment(style=...)``): "torchvision" (the ranges above, magnitude uniform in
#: [0, magnitude]) or "authors": the table of the authors' ``randaugment_seg.py`` (google-research
#: UDA's ``augmentation_transforms.py`` on a 0-10 level scale; level k <-> our magnitude 3k) with
#: integer levels as their ``apply_rand.rand_pascal_index`` draws them, ``randint(1, 10)``:
#: translate +-k px (absolute, not a fraction of the size), shear about the top-left corner (PIL's
#: affine transform), color/contrast/brightness/sharpness factor 0.1 + 1.8 k/10 (no sign: k < 5
#: weakens, k > 5 strengthens), posterize 4 - int(4 k/10) bits. Rotate, shear factor, solarize (up
#: to their integer rounding of the threshold), autocontrast and equalize are the same in both
#: tables. Kept from ours in both: bilinear resampling of images (PIL's default, which their code
#: uses, is nearest) and the order photometric ops, then one composed warp, then Cutout.
STYLES: tuple[str, ...] = ("torchvision", "authors")
_LEVELS = 10.0                  # the authors' level scale (PARAMETER_MAX of randaugment_seg.py)


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"an explicit torch.Generator is required, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError("pass a CPU torch.Generator; parameters are sampled on the CPU and moved")
    return generator


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor of shape (B, C, H, W)")


def _check_masks(masks) -> list[Tensor]:
    if isinstance(masks, Tensor):
        raise TypeError("masks must be a sequence of (B, H, W) tensors; wrap a single mask as [mask]")
    return list(masks)


def _check_mask(mask: Tensor) -> None:
    if not isinstance(mask, Tensor) or mask.dim() != 3 or mask.is_floating_point() or mask.dtype == torch.bool:
        raise ValueError("masks must be integer tensors of shape (B, H, W)")


def _check_sampled(params, batch: int, hw: tuple[int, int], sampled_hw: tuple[int, int]) -> None:
    """Parameters fit the batch size and image size they were sampled for, and no other."""
    if batch != params.batch_size or tuple(hw) != tuple(sampled_hw):
        raise ValueError(f"params were sampled for batch {params.batch_size} at {sampled_hw[0]}x{sampled_hw[1]}, "
                         f"got batch {batch} at {hw[0]}x{hw[1]}")


# --------------------------------------------------------------------------- geometry

def matrix_to_theta(matrix: Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Tensor:
    """Convert pixel-index matrices to ``F.affine_grid`` thetas (align_corners=False).

    Args:
        matrix: (B, 2, 3), output pixel-index coords -> source pixel-index coords.
        in_hw: source (H, W).  out_hw: output (h, w).
    Returns:
        theta (B, 2, 3) float64 such that ``F.affine_grid(theta, (B, C, h, w),
        align_corners=False)`` gives the same source points (normalised).
    """
    (H, W), (h, w) = in_hw, out_hw
    m = torch.cat([matrix.double().cpu(), torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(matrix.shape[0], 1, 3)], 1)
    # normalised u in [-1, 1] <-> pixel index x:  x = ((u + 1) * W - 1) / 2
    n_out_to_pix = torch.tensor([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    pix_to_n_in = torch.tensor([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]], dtype=torch.float64)
    return (pix_to_n_in @ m @ n_out_to_pix)[:, :2]


def _source_grid(matrix: Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int], device) -> tuple[Tensor, Tensor, Tensor]:
    """Source coords (x, y) (N, h, w) float32 for every output pixel, and the inside mask (N, h, w) bool."""
    H, W = in_hw
    h, w = out_hw
    m = matrix.to(device=device, dtype=torch.float32)[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32)[None, :]
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None]
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    inside = (sx >= -0.5) & (sx < W - 0.5) & (sy >= -0.5) & (sy < H - 0.5)
    return sx, sy, inside


def _warp_images(images: Tensor, grid: tuple[Tensor, Tensor, Tensor], fill: float) -> Tensor:
    """Bilinear sampling (border-clamped) at the grid; outside -> fill.  (N,C,H,W) -> (N,C,h,w)."""
    sx, sy, inside = grid
    N, C, H, W = images.shape
    h, w = sx.shape[-2:]
    x = sx.clamp(0, W - 1)
    y = sy.clamp(0, H - 1)
    x0 = x.floor()
    y0 = y.floor()
    wx = (x - x0).to(images.dtype).unsqueeze(1)
    wy = (y - y0).to(images.dtype).unsqueeze(1)
    x0 = x0.long()
    y0 = y0.long()
    x1 = (x0 + 1).clamp(max=W - 1)
    y1 = (y0 + 1).clamp(max=H - 1)
    flat = images.reshape(N, C, H * W)

    def take(yy: Tensor, xx: Tensor) -> Tensor:
        idx = (yy * W + xx).reshape(N, 1, h * w).expand(N, C, h * w)
        return flat.gather(2, idx).reshape(N, C, h, w)

    top = take(y0, x0) * (1 - wx) + take(y0, x1) * wx
    bottom = take(y1, x0) * (1 - wx) + take(y1, x1) * wx
    out = top * (1 - wy) + bottom * wy
    return torch.where(inside.unsqueeze(1), out, out.new_tensor(fill))


def _warp_mask(mask: Tensor, grid: tuple[Tensor, Tensor, Tensor], ignore_index: int) -> Tensor:
    """Nearest-neighbour sampling (index gather, exact for integers); outside -> ignore.  (N,H,W) -> (N,h,w)."""
    sx, sy, inside = grid
    N, H, W = mask.shape
    h, w = sx.shape[-2:]
    jx = torch.floor(sx + 0.5).long().clamp(0, W - 1)
    jy = torch.floor(sy + 0.5).long().clamp(0, H - 1)
    out = mask.reshape(N, H * W).gather(1, (jy * W + jx).reshape(N, h * w)).reshape(N, h, w)
    return torch.where(inside, out, out.new_tensor(ignore_index))


# --------------------------------------------------------------------------- photometric ops
# All take images (N, C, H, W) in [0, 1] and per-sample parameters (N,) on the same device.

def _gray(img: Tensor) -> Tensor:
    return (0.2989 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])


def _blend(img: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1).to(img.dtype)
    return (img * f + other * (1 - f)).clamp(0, 1)


def _autocontrast(img: Tensor) -> Tensor:
    lo = img.amin(dim=(-2, -1), keepdim=True)
    hi = img.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    scale = torch.where(flat, torch.ones_like(hi), hi - lo)
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((img - lo) / scale).clamp(0, 1)


def _equalize(img: Tensor) -> Tensor:
    """Per-channel histogram equalisation on 256 levels (PIL / torchvision algorithm), batched."""
    N, C, H, W = img.shape
    q = img.float().mul(256.0 - 1e-3).to(torch.uint8).reshape(N * C, H * W).long()  # as torchvision's float->uint8
    hist = torch.zeros(N * C, 256, dtype=torch.int64, device=img.device)
    hist.scatter_add_(1, q, torch.ones_like(q))
    cum = hist.cumsum(1)
    last = cum.argmax(1, keepdim=True)                       # last non-empty bin
    step = (H * W - hist.gather(1, last)).div(255, rounding_mode="floor")
    valid = step != 0
    lut = (cum[:, :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], 1)
    out = lut.gather(1, q).to(img.dtype).div(255.0)
    out = torch.where(valid, out, q.to(img.dtype) / 255.0)
    return out.reshape(N, C, H, W)


_SHARP_KERNEL = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def _sharpness(img: Tensor, factor: Tensor) -> Tensor:
    N, C, H, W = img.shape
    if H <= 2 or W <= 2:
        return img
    kernel = _SHARP_KERNEL.to(device=img.device, dtype=img.dtype).expand(C, 1, 3, 3)
    degenerate = img.clone()
    degenerate[..., 1:-1, 1:-1] = F.conv2d(img, kernel, groups=C)
    return _blend(img, degenerate, factor)


def _photometric(name: str, img: Tensor, mag: Tensor, sign: Tensor, style: str = "torchvision") -> Tensor:
    """Apply photometric op ``name`` with per-sample magnitudes (0-30) and signs (+-1), with the
    op table ``style`` (:data:`STYLES`)."""
    level = mag / MAX_MAGNITUDE
    authors = style == "authors"
    if name == "identity":
        return img
    if name == "autocontrast":
        return _autocontrast(img)
    if name == "equalize":
        return _equalize(img)
    if name == "solarize":
        t = (1.0 - level).view(-1, 1, 1, 1).to(img.dtype)
        return torch.where(img >= t, 1.0 - img, img)
    if name == "posterize":
        bits = 4.0 - torch.floor(level * 4.0 + 1e-9) if authors else 8.0 - torch.round(level * 4.0)
        levels = torch.pow(2.0, bits).view(-1, 1, 1, 1).to(img.dtype)
        return torch.minimum((img * levels).floor(), levels - 1) / levels
    factor = 0.1 + 1.8 * level if authors else 1.0 + sign * level * MAX_ENHANCE
    if name == "brightness":
        return (img * factor.view(-1, 1, 1, 1).to(img.dtype)).clamp(0, 1)
    if name == "color":
        return _blend(img, _gray(img), factor)
    if name == "contrast":
        return _blend(img, _gray(img).mean(dim=(1, 2, 3), keepdim=True), factor)
    if name == "sharpness":
        return _sharpness(img, factor)
    raise AssertionError(name)


# --------------------------------------------------------------------------- strong augmentation

@dataclass
class AugmentParams:
    """Everything random of one :class:`StrongAugment` call (all CPU tensors, B = batch size).

    Attributes:
        height, width: image size the parameters were drawn for.
        op_index: (B, num_ops) int64, index into :data:`ALL_OPS` of the op each sample drew, applied in order.
        magnitudes: (B, num_ops) float64, magnitude of each drawn op on the 0-30 scale.
        signs: (B, num_ops) float64, +-1 direction of each op (used by signed ops).
        matrix: (B, 2, 3) float64, composed geometric warp, output pixel-index coords -> source
            pixel-index coords (identity for samples without geometric ops).
        geometric: (B,) bool, sample drew at least one geometric op (only those are warped).
        cutout_boxes: (B, cutout_count, 4) int64, (y0, x0, y1, x1) of each Cutout box clipped to
            the image (half-open; empty when cutout is disabled).

    An op skipped by ``prob < 1`` is recorded as ``identity`` in ``op_index`` (so A and B read
    the same, already decided, list of ops).
    """

    height: int
    width: int
    op_index: Tensor
    magnitudes: Tensor
    signs: Tensor
    matrix: Tensor
    geometric: Tensor
    cutout_boxes: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.matrix.shape[0])

    def op_names(self) -> list[list[str]]:
        """Op names per sample (for logging/debugging)."""
        return [[ALL_OPS[k] for k in row] for row in self.op_index.tolist()]

    def theta(self) -> Tensor:
        """(B, 2, 3) ``F.affine_grid`` thetas (align_corners=False) of the geometric warp."""
        hw = (self.height, self.width)
        return matrix_to_theta(self.matrix, hw, hw)


def _warp_geometric(x: Tensor, params: AugmentParams, grid, warp, fill) -> Tensor:
    """``warp`` (:func:`_warp_images` or :func:`_warp_mask`, outside -> ``fill``) of the samples of
    ``x`` (B, ..., H, W) that drew a geometric op, the others unchanged; ``grid``: the whole batch's."""
    sel = params.geometric.nonzero().squeeze(1)
    if sel.numel() == 0:
        return x
    hw = tuple(x.shape[-2:])
    if sel.numel() == x.shape[0]:
        return warp(x, grid if grid is not None else _source_grid(params.matrix, hw, hw, x.device), fill)
    sel_d = sel.to(x.device)
    return x.index_copy(0, sel_d, warp(x.index_select(0, sel_d), _source_grid(params.matrix[sel], hw, hw, x.device),
                                       fill))


#: where A acts: on RGB in [0, 1], or as the authors' code on the normalised image rescaled to uint8
INPUT_SPACES = ("rgb", "normalised-uint8")
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def to_normalised_uint8(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """RGB in [0, 1] ``(B, 3, H, W)`` -> (the ImageNet-normalised image rescaled per image to
    0..255 and rounded, divided by 255 so A sees [0, 1]; each image's min and max, ``(B, 1, 1, 1)``).
    The authors' code augments its normalised tensor this way (min-max to uint8 per image)."""
    mean = images.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(_STD).view(1, 3, 1, 1)
    z = (images - mean) / std
    lo = z.amin(dim=(1, 2, 3), keepdim=True)
    hi = z.amax(dim=(1, 2, 3), keepdim=True)
    u = torch.round((z - lo) / (hi - lo).clamp_min(1e-12) * 255) / 255
    return u, lo, hi


def from_normalised_uint8(u: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """The inverse of :func:`to_normalised_uint8` (up to its rounding): back to RGB, clamped to [0, 1]."""
    mean = u.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = u.new_tensor(_STD).view(1, 3, 1, 1)
    return ((u * (hi - lo) + lo) * std + mean).clamp(0, 1)


class StrongAugment:
    """Strong augmentation: operators A (images) and B (masks) of the paper.

    A = RandAugment + Cutout.  Each sample draws ``num_ops`` ops uniformly (with
    replacement) from ``ops`` (default: all 14 of :data:`ALL_OPS`), each with its own
    magnitude uniform in [0, ``magnitude``] (RandAugment's 0-30 scale; with
    ``random_magnitude=False`` exactly ``magnitude``) and a random sign for signed ops.
    At magnitude 30: rotate +-30 deg, shear +-0.3, translate +-0.45 of the size,
    color/contrast/brightness/sharpness factor 1 +- 0.9, solarize threshold 0,
    posterize 4 bits.  Each drawn op is applied with probability ``prob`` (else skipped).
    Then ``cutout_count`` Cutout squares of side ``cutout_size`` px (centres uniform over
    the pixels, independent, may overlap or be partly outside; 0 disables) filled with ``fill``.

    ``style="authors"`` switches to the authors' op table and level sampling (see
    :data:`STYLES`): magnitudes ``3 k`` with integer levels ``k`` uniform in
    ``1 .. magnitude / 3 - 1``. Their setting (``apply_rand.rand_pascal_index``)::

        StrongAugment(num_ops=3, magnitude=30, cutout_size=32, prob=0.5, cutout_count=3, style="authors")

    The defaults (``prob=1``, ``cutout_count=1``, ``style="torchvision"``) draw exactly what
    this class drew before those options existed (same generator -> same output).

    B = the same geometric warp applied to masks (nearest), ``ignore_index`` where the
    source lies outside the image.  Photometric ops and Cutout leave masks unchanged.

    Order: the photometric ops of a sample are applied in their drawn order, then all its
    geometric ops as one composed affine warp (one matrix per sample), then Cutout.
    (Applying photometric ops before the warp keeps the padding exactly ``fill``; pointwise
    ops commute with the warp anyway, only equalize/autocontrast/contrast see slightly
    different image statistics than in strictly sequential RandAugment.)

    Shapes: images (B, 3, H, W) float in [0, 1] -> same shape, in [0, 1];
    masks (B, H, W) integer -> same shape and dtype.

    With ``enabled=False`` ("no SA" ablation) A and B are the identity: inputs are
    returned unchanged and the generator is not used.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 10.0, cutout_size: int = 16,
                 ignore_index: int = 255, fill: float = 0.5, enabled: bool = True,
                 ops: Sequence[str] | None = None, random_magnitude: bool = True, prob: float = 1.0,
                 cutout_count: int = 1, style: str = "torchvision", input_space: str = "rgb"):
        if input_space not in INPUT_SPACES:
            raise ValueError(f"input_space must be one of {list(INPUT_SPACES)}, got {input_space!r}")
        if style not in STYLES:
            raise ValueError(f"style must be one of {list(STYLES)}, got {style!r}")
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob (of applying each drawn op) must be in [0, 1], got {prob}")
        if style == "authors" and random_magnitude and round(float(magnitude) / MAX_MAGNITUDE * _LEVELS) < 2:
            raise ValueError(f"style 'authors' draws integer levels 1 .. magnitude/3 - 1: magnitude must be >= 6, "
                             f"got {magnitude}")
        for name, n in (("cutout_count", cutout_count), ("num_ops", num_ops), ("cutout_size", cutout_size)):
            if int(n) != n or n < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {n}")
        if not 0.0 <= float(magnitude) <= MAX_MAGNITUDE:
            raise ValueError(f"magnitude must be in [0, {MAX_MAGNITUDE:g}] (RandAugment scale), got {magnitude}")
        if ops is None:
            ops = ALL_OPS
        if isinstance(ops, str):
            ops = (ops,)
        ops = tuple(ops)
        for name in ops:
            if name not in _OP_ID:
                raise ValueError(f"unknown augmentation op {name!r}; valid ops: {', '.join(ALL_OPS)}")
        if num_ops > 0 and not ops:
            raise ValueError("ops must not be empty when num_ops > 0")
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.cutout_size = int(cutout_size)
        self.ignore_index = int(ignore_index)
        self.fill = float(fill)
        self.enabled = bool(enabled)
        self.ops = ops
        self.random_magnitude = bool(random_magnitude)
        self.prob = float(prob)
        self.cutout_count = int(cutout_count)
        self.style = style
        self.input_space = input_space
        self._op_ids = torch.tensor([_OP_ID[o] for o in ops], dtype=torch.int64)

    def __repr__(self) -> str:
        return (f"StrongAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, cutout_size={self.cutout_size}, "
                f"ignore_index={self.ignore_index}, fill={self.fill}, enabled={self.enabled}, ops={self.ops}, "
                f"random_magnitude={self.random_magnitude}, prob={self.prob}, cutout_count={self.cutout_count}, "
                f"style={self.style!r}, input_space={self.input_space!r})")

    # ---------------------------------------------------------------- sampling
    def sample(self, batch_size: int, height: int, width: int, generator: torch.Generator) -> AugmentParams:
        """Draw all random parameters for a batch (on the CPU, from ``generator`` only)."""
        g = _check_generator(generator)
        B, H, W, n = int(batch_size), int(height), int(width), self.num_ops
        if n > 0:
            choice = torch.randint(len(self.ops), (B, n), generator=g)
            op_index = self._op_ids[choice]
        else:
            op_index = torch.zeros(B, 0, dtype=torch.int64)
        u = torch.rand(B, n, generator=g, dtype=torch.float64)
        if not self.random_magnitude:
            magnitudes = torch.full((B, n), self.magnitude, dtype=torch.float64)
        elif self.style == "authors":
            # integer level k uniform in 1 .. K-1 (numpy's randint(1, K)), K = magnitude on the 0-10 scale
            top = round(self.magnitude / MAX_MAGNITUDE * _LEVELS)
            magnitudes = (1 + torch.floor(u * (top - 1))) * (MAX_MAGNITUDE / _LEVELS)
        else:
            magnitudes = u * self.magnitude
        signs = torch.randint(2, (B, n), generator=g).to(torch.float64) * 2 - 1
        if self.prob < 1.0:  # drawn only then: the default's random stream is what it always was
            skipped = torch.rand(B, n, generator=g, dtype=torch.float64) >= self.prob
            op_index = torch.where(skipped, _OP_ID["identity"], op_index)
        k = self.cutout_count
        cy = torch.randint(H, (B, k), generator=g)
        cx = torch.randint(W, (B, k), generator=g)

        # Compose the geometric ops (forward maps, centred pixel coordinates).
        fwd = torch.eye(3, dtype=torch.float64).repeat(B, 1, 1)
        level = magnitudes / MAX_MAGNITUDE
        for j in range(n):
            op, s = op_index[:, j], signs[:, j] * level[:, j]
            ang = torch.where(op == _OP_ID["rotate"], s * math.radians(MAX_ROTATE_DEG), 0.0)
            shx = torch.where(op == _OP_ID["shear_x"], s * MAX_SHEAR, 0.0)
            shy = torch.where(op == _OP_ID["shear_y"], s * MAX_SHEAR, 0.0)
            if self.style == "authors":  # +-k px; shear pivots on the top row / left column (PIL)
                px = signs[:, j] * torch.floor(magnitudes[:, j] / (MAX_MAGNITUDE / _LEVELS) + 1e-9)
                tx = torch.where(op == _OP_ID["translate_x"], px, shx * H / 2)
                ty = torch.where(op == _OP_ID["translate_y"], px, shy * W / 2)
            else:
                tx = torch.where(op == _OP_ID["translate_x"], s * MAX_TRANSLATE * W, 0.0)
                ty = torch.where(op == _OP_ID["translate_y"], s * MAX_TRANSLATE * H, 0.0)
            cos, sin = torch.cos(ang), torch.sin(ang)
            a = torch.stack([cos - sin * shy, cos * shx - sin], -1)   # R @ [[1, shx], [shy, 1]] (one is active)
            b = torch.stack([sin + cos * shy, sin * shx + cos], -1)
            step = torch.eye(3, dtype=torch.float64).repeat(B, 1, 1)
            step[:, 0, :2], step[:, 1, :2] = a, b
            step[:, 0, 2], step[:, 1, 2] = tx, ty
            fwd = step @ fwd
        inv = torch.linalg.inv(fwd)
        to_centred = torch.tensor([[1, 0, 0.5 - W / 2], [0, 1, 0.5 - H / 2], [0, 0, 1]], dtype=torch.float64)
        to_index = torch.tensor([[1, 0, W / 2 - 0.5], [0, 1, H / 2 - 0.5], [0, 0, 1]], dtype=torch.float64)
        matrix = (to_index @ inv @ to_centred)[:, :2].contiguous()
        geometric = torch.isin(op_index, _GEOMETRIC_IDS).any(1)  # (B,) False when n = 0

        s = self.cutout_size
        y0, x0 = cy - s // 2, cx - s // 2
        boxes = torch.stack([y0.clamp(0, H), x0.clamp(0, W), (y0 + s).clamp(0, H), (x0 + s).clamp(0, W)], -1)
        return AugmentParams(H, W, op_index, magnitudes, signs, matrix, geometric, boxes)

    # ---------------------------------------------------------------- operators
    def apply_image(self, images: Tensor, params: AugmentParams, _grid=None) -> Tensor:
        """Operator A: (B, 3, H, W) float in [0, 1] -> (B, 3, H, W) float in [0, 1].

        ``input_space="normalised-uint8"``: A acts where the authors' code applies it, on the
        ImageNet-normalised image rescaled per image to 0..255 integers, and the result is mapped
        back to RGB (:func:`to_normalised_uint8`)."""
        if not self.enabled:
            return images
        _check_images(images)
        if self.input_space == "normalised-uint8":
            u, lo, hi = to_normalised_uint8(images)
            return from_normalised_uint8(self._apply_image(u, params, _grid), lo, hi)
        return self._apply_image(images, params, _grid)

    def _apply_image(self, images: Tensor, params: AugmentParams, _grid=None) -> Tensor:
        B, C, H, W = images.shape
        _check_sampled(params, B, (H, W), (params.height, params.width))
        dev = images.device
        out = images
        # photometric ops, slot by slot so that each sample's ops keep their order
        for j in range(params.op_index.shape[1]):
            col = params.op_index[:, j]
            for name in self.ops:
                if name in GEOMETRIC_OPS or name == "identity":
                    continue
                sel = (col == _OP_ID[name]).nonzero().squeeze(1)
                if sel.numel() == 0:
                    continue
                mag = params.magnitudes[sel, j].to(dev, torch.float32)
                sign = params.signs[sel, j].to(dev, torch.float32)
                if sel.numel() == B:
                    out = _photometric(name, out, mag, sign, self.style)
                else:
                    sel_d = sel.to(dev)
                    out = out.index_copy(0, sel_d, _photometric(name, out.index_select(0, sel_d), mag, sign,
                                                                self.style))
        out = _warp_geometric(out, params, _grid, _warp_images, self.fill)
        # cutout
        if self.cutout_size > 0 and self.cutout_count > 0:
            box = params.cutout_boxes.to(dev)[..., None, None]           # (B, k, 4, 1, 1)
            ys = torch.arange(H, device=dev)[:, None]
            xs = torch.arange(W, device=dev)[None, :]
            inbox = ((ys >= box[:, :, 0]) & (ys < box[:, :, 2]) & (xs >= box[:, :, 1]) & (xs < box[:, :, 3])).any(1)
            out = torch.where(inbox.unsqueeze(1), out.new_tensor(self.fill), out)
        return out

    def apply_mask(self, masks: Tensor, params: AugmentParams, _grid=None) -> Tensor:
        """Operator B: (B, H, W) integer (int64) -> (B, H, W) same dtype; outside -> ignore_index."""
        if not self.enabled:
            return masks
        _check_mask(masks)
        B, H, W = masks.shape
        _check_sampled(params, B, (H, W), (params.height, params.width))
        return _warp_geometric(masks, params, _grid, _warp_mask, self.ignore_index)

    def __call__(self, images: Tensor, masks: Sequence[Tensor], generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        """Sample once, apply A to images (B,3,H,W) and B to each mask (B,H,W)."""
        masks = _check_masks(masks)
        if not self.enabled:
            return images, masks
        _check_images(images)
        B, _, H, W = images.shape
        params = self.sample(B, H, W, generator)
        grid = None
        if bool(params.geometric.all()) and B > 0:
            grid = _source_grid(params.matrix, (H, W), (H, W), images.device)
        return self.apply_image(images, params, grid), [self.apply_mask(m, params, grid) for m in masks]


# --------------------------------------------------------------------------- weak augmentation

@dataclass
class WeakParams:
    """Random parameters of one :class:`WeakAugment` call (CPU tensors, B = batch size).

    Attributes:
        in_size: (H, W) of the input.  out_size: (ch, cw) crop size.
        scale: (B,) float64 scale factor s (image conceptually resized to (s H, s W)).
        offset: (B, 2) int64 (oy, ox) of the crop's top-left corner in the resized image;
            negative or beyond the image when the crop is larger (padding).
        flip: (B,) bool horizontal flip.
        matrix: (B, 2, 3) float64, output (crop) pixel-index coords -> input pixel-index coords.
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    scale: Tensor
    offset: Tensor
    flip: Tensor
    matrix: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.matrix.shape[0])

    def theta(self) -> Tensor:
        """(B, 2, 3) ``F.affine_grid`` thetas (align_corners=False, output size ``out_size``)."""
        return matrix_to_theta(self.matrix, self.in_size, self.out_size)


class WeakAugment:
    """Random scale, crop to crop_size and horizontal flip, batched; image bilinear, masks nearest;
    padding: image `fill`, masks `ignore_index`.

    Per sample: scale s ~ U(scale_range); the image is (conceptually) resized to (s H, s W);
    a crop of ``crop_size`` (ch, cw) is taken at an integer offset uniform over
    [0, floor(s H) - ch] (or [floor(s H) - ch, 0] when the crop is larger: the image is
    placed at a random position in a padded canvas), likewise for x; then flipped
    horizontally with probability 0.5 (if ``flip``).  Implemented as one affine warp per
    sample.  With s = 1 (and the crop inside the image) the result equals slicing
    ``images[..., oy:oy+ch, ox:ox+cw]`` (flipped) exactly.

    Shapes: images (B, 3, H, W) float -> (B, 3, ch, cw); each mask (B, H, W) int -> (B, ch, cw).
    """

    def __init__(self, crop_size: tuple[int, int], scale_range: tuple[float, float] = (1.0, 1.0), flip: bool = True,
                 ignore_index: int = 255, fill: float = 0.5):
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        ch, cw = (int(v) for v in crop_size)
        if ch <= 0 or cw <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.crop_size = (ch, cw)
        self.scale_range = (lo, hi)
        self.flip = bool(flip)
        self.ignore_index = int(ignore_index)
        self.fill = float(fill)

    def __repr__(self) -> str:
        return (f"WeakAugment(crop_size={self.crop_size}, scale_range={self.scale_range}, flip={self.flip}, "
                f"ignore_index={self.ignore_index}, fill={self.fill})")

    def sample(self, batch_size: int, height: int, width: int, generator: torch.Generator) -> WeakParams:
        """Draw scale, crop offset and flip for a batch (CPU, from ``generator`` only)."""
        g = _check_generator(generator)
        B, H, W = int(batch_size), int(height), int(width)
        ch, cw = self.crop_size
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)
        u = torch.rand(B, 2, generator=g, dtype=torch.float64)
        flip_u = torch.rand(B, generator=g, dtype=torch.float64)
        flip = (flip_u < 0.5) if self.flip else torch.zeros(B, dtype=torch.bool)

        def offsets(extent: Tensor, crop: int, uu: Tensor) -> Tensor:
            span = torch.floor(extent + 1e-6).long() - crop
            a, b = span.clamp(max=0), span.clamp(min=0)
            return torch.minimum(a + torch.floor(uu * (b - a + 1)).long(), b)

        oy = offsets(H * scale, ch, u[:, 0])
        ox = offsets(W * scale, cw, u[:, 1])
        # x_src = (x' + 0.5 + ox) / s - 0.5 with x' = x or cw - 1 - x (flip)
        f = torch.where(flip, -1.0, 1.0).to(torch.float64)
        b = torch.where(flip, float(cw - 1), 0.0).to(torch.float64)
        matrix = torch.zeros(B, 2, 3, dtype=torch.float64)
        matrix[:, 0, 0] = f / scale
        matrix[:, 0, 2] = (b + 0.5 + ox) / scale - 0.5
        matrix[:, 1, 1] = 1.0 / scale
        matrix[:, 1, 2] = (0.5 + oy) / scale - 0.5
        return WeakParams((H, W), (ch, cw), scale, torch.stack([oy, ox], 1), flip, matrix)

    def apply_image(self, images: Tensor, params: WeakParams, _grid=None) -> Tensor:
        """(B, 3, H, W) float -> (B, 3, ch, cw) float (bilinear, outside -> fill)."""
        _check_images(images)
        B, _, H, W = images.shape
        _check_sampled(params, B, (H, W), params.in_size)
        grid = _grid if _grid is not None else _source_grid(params.matrix, (H, W), params.out_size, images.device)
        return _warp_images(images, grid, self.fill)

    def apply_mask(self, masks: Tensor, params: WeakParams, _grid=None) -> Tensor:
        """(B, H, W) integer -> (B, ch, cw) same dtype (nearest, outside -> ignore_index)."""
        _check_mask(masks)
        B, H, W = masks.shape
        _check_sampled(params, B, (H, W), params.in_size)
        grid = _grid if _grid is not None else _source_grid(params.matrix, (H, W), params.out_size, masks.device)
        return _warp_mask(masks, grid, self.ignore_index)

    def __call__(self, images: Tensor, masks: Sequence[Tensor], generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        """images (B,3,H,W) float -> (B,3,ch,cw); each mask (B,H,W) int64 -> (B,ch,cw).
        Same crop/flip/scale for image and all its masks."""
        masks = _check_masks(masks)
        _check_images(images)
        B, _, H, W = images.shape
        params = self.sample(B, H, W, generator)
        grid = _source_grid(params.matrix, (H, W), params.out_size, images.device)
        return self.apply_image(images, params, grid), [self.apply_mask(m, params, grid) for m in masks]
