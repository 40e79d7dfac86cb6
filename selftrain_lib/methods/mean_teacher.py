"""The mean teacher baselines, trained by the same code: mean teacher + Cutout, mean teacher + CutMix.

French, Laine, Aila, Mackiewicz, Finlayson, "Semi-supervised semantic segmentation needs strong,
varied perturbations", BMVC 2020 (code: Britefury/cutmix-semisup-seg, ``train_seg_semisup_mask_mt.py``
with the settings of its ``run_cityscapes_experiments.sh`` / ``run_pascal_aug_experiments.sh``):

- **mt-cutout**: the student sees an unlabelled image with a box erased (set to 0); the
  consistency loss compares its prediction with the EMA teacher's prediction on the whole image,
  on the pixels that were not erased. Box area / image area ~ U(``cutout_area``), default (0, 1).
- **mt-cutmix**: two unlabelled images ``a`` and ``b`` are mixed with a box mask M (``b`` inside
  the box, ``a`` outside); the student's prediction on the mixed image is pushed towards the
  teacher's predictions on ``a`` and ``b`` mixed with the same M. Box area ~ U(``cutmix_area``),
  default exactly 1/2.

Both: consistency = squared distance between the student's and the teacher's class probabilities,
summed over classes and averaged over the pixels (French et al.'s ``cons_loss_fn=var``), times
``cons_weight`` (1); the teacher's confidence (max probability) must reach ``conf_threshold``
(0.97): by default the loss is scaled by the fraction of confident pixels (the original code's
``conf_per_pixel=False``), with ``conf_per_pixel`` only the confident pixels count; the teacher is
an EMA of the student with a constant decay ``teacher_decay`` (0.99, the code's ``teacher_alpha``).

Each is a :class:`~selftrain_lib.methods.base.Method` (the step around it: :mod:`.base`): the model
f alone; its batch, Sub-batch 1 from L∪U and labelled Sub-batch 2 from L, weakly augmented only,
with one box per image of Sub-batch 1 drawn from the step's generator (:meth:`MeanTeacher.make_batch`).
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ema import EMATeacher
from ..losses import pixel_cross_entropy
from .base import BatchSpec, Crops, Method, StepBatch


# ------------------------------------------------------------------------------------------
# boxes and box masks
# ------------------------------------------------------------------------------------------

def sample_boxes(n: int, height: int, width: int, area_range: tuple[float, float],
                 generator: torch.Generator) -> Tensor:
    """``n`` random boxes inside an ``height`` × ``width`` image, as French et al.'s
    ``BoxMaskGenerator`` draws them (one box, area proportion, random aspect ratio, within bounds).

    Per box: area proportion a ~ U(area_range); height proportion a**u with u ~ U(0, 1), width
    proportion a / (height proportion); sizes rounded to pixels; top-left corner uniform over the
    positions that keep the box inside the image.

    Returns:
        (n, 4) int64 ``(y0, x0, y1, x1)``, half-open; an empty box when a = 0.
    """
    lo, hi = (float(v) for v in area_range)
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    area = lo + (hi - lo) * u[:, 0]
    safe = area.clamp(min=1e-12)
    y_prop = torch.exp(u[:, 1] * torch.log(safe))
    x_prop = safe / y_prop
    zero = area <= 0
    y_prop[zero], x_prop[zero] = 0.0, 0.0
    h = torch.round(y_prop * height).clamp(0, height)
    w = torch.round(x_prop * width).clamp(0, width)
    y0 = torch.round((height - h) * u[:, 2])
    x0 = torch.round((width - w) * u[:, 3])
    return torch.stack([y0, x0, y0 + h, x0 + w], 1).long()


def box_mask(boxes: Tensor, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """(n, 4) boxes → float (n, H, W): 1 inside each box, 0 outside."""
    boxes = boxes.to(device)
    ys = torch.arange(height, device=device).view(1, height, 1)
    xs = torch.arange(width, device=device).view(1, 1, width)
    y0, x0, y1, x1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).float()


@dataclass(frozen=True)
class BoxMask:
    """One random box per image, area / image area ~ U(``area_range``)."""

    area_range: tuple[float, float]

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        return sample_boxes(n, height, width, self.area_range, generator)

    def perturb(self, x: Tensor, teacher_prob: Tensor, valid: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The student's input, the teacher's probabilities moved the same way and the pixels the
        loss counts, from images x (B, 3, H, W), teacher_prob (B, C, H, W), valid (B, H, W) float
        (pixels inside the source image) and boxes (B, 4): (B, 3, H, W), (B, C, H, W), (B, H, W)."""
        raise NotImplementedError


@dataclass(frozen=True)
class CutoutMask(BoxMask):
    """Cutout (French et al.'s ``mask_mode=zero``): erase one random box per image.

    The original code keeps a box and zeroes its complement (``invert=True``); with the area drawn
    uniformly over (0, 1) the erased *area* has the same distribution either way. Here the box is
    the erased region, as the method is usually described.
    """

    area_range: tuple[float, float] = (0.0, 1.0)

    def perturb(self, x: Tensor, teacher_prob: Tensor, valid: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        erased, kept = self.apply(x, boxes)  # the teacher sees the whole image
        return erased, teacher_prob, kept * valid

    def apply(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Erase the boxes.

        Args:
            images: (B, 3, H, W) float.
            boxes: (B, 4) int64 from :meth:`sample`.
        Returns:
            (erased images (B, 3, H, W): 0 inside the box, the image outside;
             kept (B, H, W) float: 1 where the student still sees the image, 0 in the box).
        """
        kept = 1.0 - box_mask(boxes, images.shape[2], images.shape[3], images.device)
        return images * kept[:, None], kept


@dataclass(frozen=True)
class CutMixMask(BoxMask):
    """CutMix for segmentation (French et al.'s ``mask_mode=mix``): image ``a`` outside one random
    box, image ``b`` inside it. Partners come from the same sub-batch: sample i is mixed with
    sample i−1 (``torch.roll`` by one), so the sub-batch needs at least two images."""

    area_range: tuple[float, float] = (0.5, 0.5)

    def perturb(self, x: Tensor, teacher_prob: Tensor, valid: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = box_mask(boxes, x.shape[2], x.shape[3], x.device)
        return tuple(self.mix(t, self.partners(t), m) for t in (x, teacher_prob, valid))

    @staticmethod
    def partners(x: Tensor) -> Tensor:
        """The image each sample is mixed with: (B, ...) → (B, ...), sample i gets sample i−1."""
        return torch.roll(x, 1, 0)

    @staticmethod
    def mix(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
        """``a`` where ``mask`` is 0, ``b`` where it is 1.

        Args:
            a, b: (B, C, H, W) or (B, H, W), same shape (images, probabilities or masks).
            mask: (B, H, W) float in {0, 1} (:func:`box_mask`).
        """
        m = mask[:, None] if a.dim() == 4 else mask
        return a * (1 - m) + b * m if a.is_floating_point() else torch.where(m.bool(), b, a)


# ------------------------------------------------------------------------------------------
# the consistency loss
# ------------------------------------------------------------------------------------------

def confidence_mask(teacher_prob: Tensor, threshold: float) -> Tensor:
    """(B, C, H, W) teacher probabilities → float (B, H, W): 1 where max_c p ≥ ``threshold``."""
    return (teacher_prob.max(1).values >= threshold).float()


def squared_prob_distance(student_logits: Tensor, teacher_prob: Tensor) -> Tensor:
    """Σ_c (softmax(student)_c − teacher_c)²: (B, C, H, W), (B, C, H, W) → (B, H, W)."""
    return (F.softmax(student_logits, 1) - teacher_prob).pow(2).sum(1)


def consistency_loss(student_logits: Tensor, teacher_prob: Tensor, region: Tensor, conf_threshold: float,
                     conf_per_pixel: bool = False) -> tuple[Tensor, Tensor]:
    """French et al.'s masked consistency loss.

    Args:
        student_logits: (B, C, H, W), the student on the perturbed images.
        teacher_prob: (B, C, H, W), the teacher's probabilities moved the same way (no gradient).
        region: (B, H, W) float, 1 on the pixels that count (not erased, inside the crop).
        conf_threshold: teacher confidence threshold; 0 switches thresholding off.
        conf_per_pixel: True: only confident pixels count; False: the loss is scaled by the
            fraction of confident pixels in the batch (the original code's default).
    Returns:
        (loss: scalar, mean over all B·H·W pixels of distance × region × confidence weight;
         confident fraction: scalar in [0, 1], 1 without thresholding).
    """
    dist = squared_prob_distance(student_logits, teacher_prob)
    weight = region
    if conf_threshold > 0:
        conf = confidence_mask(teacher_prob, conf_threshold)
        rate = conf.mean()
        weight = weight * (conf if conf_per_pixel else rate)
    else:
        rate = torch.ones((), device=dist.device)
    return (dist * weight).mean(), rate


# ------------------------------------------------------------------------------------------
# the step's losses
# ------------------------------------------------------------------------------------------

class MeanTeacher(Method):
    """A mean teacher baseline (a single stage): its box mask and its loss settings from the
    configuration's ``cons_weight``, ``conf_threshold``, ``conf_per_pixel`` and ``teacher_decay``."""

    ema_teacher = True
    READS = ("stage1_steps", "cons_weight", "conf_threshold", "conf_per_pixel", "teacher_decay")
    AREA_KEY = ""  # the key of the box's area range

    def __init__(self, config, stage: int, mask: BoxMask):
        self.boxes = mask
        self.batch = BatchSpec.labelled_and_pool(config, pseudo=False)  # no pseudo-masks: a single stage
        self.steps = config.stage1_steps
        self.cons_weight, self.conf_threshold = config.cons_weight, config.conf_threshold
        self.conf_per_pixel, self.decay = config.conf_per_pixel, config.teacher_decay

    def reads(self) -> tuple[str, ...]:
        return self.READS + (self.AREA_KEY,)

    def make_batch(self, crops: Crops, generator: torch.Generator) -> StepBatch:
        """Sub-batch 1 then Sub-batch 2, both weakly augmented only; ``valid``: the pixels of Sub-batch 1
        inside its images; ``boxes``: one box per image of Sub-batch 1, drawn from ``generator``."""
        x1 = crops.pool_image
        boxes = self.boxes.sample(x1.shape[0], x1.shape[2], x1.shape[3], generator)
        return StepBatch(images=torch.cat([x1, crops.lab_image]), labels=crops.lab_label, valid=crops.pool_inside,
                         boxes=boxes.to(x1.device))

    def teacher(self, segmenter) -> EMATeacher:
        return EMATeacher(segmenter, use_ema=True)

    def ema_decay(self, step: int) -> float:
        return self.decay  # constant (French et al.'s teacher_alpha)

    def losses(self, model, teacher, batch: StepBatch, ignore_index: int) -> dict[str, Tensor]:
        """Forward pass and losses of one step.

        ``batch`` (a :class:`~selftrain_lib.methods.base.StepBatch`, from :meth:`make_batch`): images
        (B, 3, h, w), Sub-batch 1 (n1 images from L∪U, weak augmentation only) first, then Sub-batch 2
        (labels (n_lab, h, w)); ``valid`` (n1, h, w) bool, the pixels of Sub-batch 1 inside the source
        image; ``boxes`` (n1, 4) from this baseline's mask. L_seg is averaged over Sub-batch 2; the consistency
        loss over Sub-batch 1. Returns ``loss_seg``, ``loss_con``, ``conf_rate`` and ``loss``.
        """
        n_lab = batch.labels.shape[0]
        x1, x2 = batch.images[:-n_lab], batch.images[-n_lab:]
        teacher_prob = F.softmax(teacher.logits(x1), 1)
        student_in, teacher_prob, region = self.boxes.perturb(x1, teacher_prob, batch.valid.float(), batch.boxes)
        logits = model(torch.cat([student_in, x2]))["f"]
        seg = pixel_cross_entropy(logits[-n_lab:], batch.labels, ignore_index)
        con, rate = consistency_loss(logits[:-n_lab], teacher_prob, region, self.conf_threshold, self.conf_per_pixel)
        return {"loss_seg": seg, "loss_con": con, "conf_rate": rate, "loss": seg + self.cons_weight * con}


class Cutout(MeanTeacher):
    """``mt-cutout``: one erased box per unlabelled image, area ~ U(``cutout_area``)."""

    name, AREA_KEY = "mt-cutout", "cutout_area"

    def __init__(self, config, stage: int):
        super().__init__(config, stage, CutoutMask(tuple(config.cutout_area)))


class CutMix(MeanTeacher):
    """``mt-cutmix``: pairs of unlabelled images mixed by a box, area ~ U(``cutmix_area``)."""

    name, AREA_KEY = "mt-cutmix", "cutmix_area"

    def __init__(self, config, stage: int):
        super().__init__(config, stage, CutMixMask(tuple(config.cutmix_area)))


__all__ = ["sample_boxes", "box_mask", "BoxMask", "CutoutMask", "CutMixMask", "confidence_mask", "squared_prob_distance",
           "consistency_loss", "MeanTeacher", "Cutout", "CutMix"]
