"""The three-stage method of docs/method.md (and ``supervised``, which is its Stage 1).

Stage 1 trains f alone and minimises L_seg on L (the whole batch from L). Stage k >= 2 trains f
with an auxiliary branch (ĝ in Stage 2, g̃ from Stage 3 on), draws Sub-batch 1 from L∪U (strongly
augmented by A/B) and Sub-batch 2 from L, both with the previous stage's pseudo-masks, and
minimises ``L_seg + λ1 L_con + λ2 L_pl`` (eqs. 1-5); its EMA teacher gives L_con's targets.
The step around it (what the batch source draws, in what order) is in :mod:`.base`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..augment import StrongAugment
from ..ema import EMATeacher, ema_decay, scale_decays
from ..losses import LossWeights, pixel_cross_entropy, total_loss
from . import SWITCHES
from .base import BatchSpec, Crops, Method, StepBatch


class ThreeStage(Method):
    """Stage ``stage`` of the three-stage method, from a configuration's ``cr``, ``t2``, ``sa``,
    ``n2``, ``ema``, λ1, λ2, strong-augmentation and EMA keys."""

    name = "three-stage"
    # what stages >= 2 read (Stage 1 reads its step count only): the strong augmentation A/B, the
    # loss weights, the EMA teacher's decays; the switches per Switch.first_stage and Switch.in_key_when_on
    STAGE2_READS = ("steps", "randaug_ops", "randaug_magnitude", "cutout_size", "randaug_prob", "cutout_count",
                    "randaug_style", "strong_aug_input", "ignore_index", "lambda1", "lambda2", "ema_decays",
                    "ema_reference_steps", "ema_milestones")

    def __init__(self, config, stage: int):
        self.stage = stage
        # the switches this stage hashes: from their first stage on, at their default too where the
        # switch says so (the five first ones), else only when off (Switch.in_key_when_on). A switch's
        # value is read here only where the rule needs it (an unused read would be undeclared).
        self._switch_reads = tuple(s.key for s in SWITCHES if s.first_stage <= stage
                                   and (s.in_key_when_on or not getattr(config, s.key)))
        # Stage 1: f alone, the whole batch from L; stages >= 2: Sub-batch 1 from L∪U, Sub-batch 2
        # from L, both with the pseudo-masks of the stage before
        self.batch = BatchSpec.labelled_only(config) if stage == 1 else BatchSpec.labelled_and_pool(config, pseudo=True)
        # the branch for Task 2 (without T2: none): ĝ, two private blocks, in Stage 2; g̃, one, from
        # Stage 3 on (N2), else ĝ again
        self.branch = None if stage == 1 or not config.t2 else 2 if stage == 2 or not config.n2 else 1
        self.steps = config.stage1_steps if stage == 1 else config.steps
        self.strong = StrongAugment(config.randaug_ops, config.randaug_magnitude, config.cutout_size,
                                    ignore_index=config.ignore_index, enabled=config.sa, prob=config.randaug_prob,
                                    cutout_count=config.cutout_count, style=config.randaug_style,
                                    input_space=config.strong_aug_input)
        self.weights = LossWeights(config.lambda1, config.lambda2, config.cr, config.t2)
        # Stages >= 2 keep an EMA teacher even without L_con: a passive copy that changes nothing the
        # student computes, so the teacher's mIoU is recorded for every run (and eval_model can pick it).
        self._has_teacher = stage >= 2 and (config.cr or config.ema)
        self._use_ema = config.ema
        self.ema_teacher = self._has_teacher and self._use_ema
        self._decays = (scale_decays(config.ema_decays, config.ema_reference_steps, self.steps),
                        tuple(config.ema_milestones))

    def reads(self) -> tuple[str, ...]:
        if self.stage == 1:
            return ("stage1_steps",)
        # t2 and n2 (first read in stage 3) choose the model's branch (self.branch); a branch of two
        # private blocks (ĝ) has a conv6, initialised as branch_init says
        return self.STAGE2_READS + self._switch_reads + (("branch_init",) if self.branch == 2 else ())

    def make_batch(self, crops: Crops, generator: torch.Generator) -> StepBatch:
        """Stage 1: Sub-batch 2 as drawn. Stages >= 2: Sub-batch 1 strongly augmented (A on the
        images, B on their pseudo-masks, parameters drawn from ``generator``), then Sub-batch 2 weakly
        augmented only; ``clean`` keeps the images before A (the teacher's input), ``aug`` the
        parameters (to move the teacher's argmax as the pseudo-masks were moved)."""
        if self.stage == 1:
            return super().make_batch(crops, generator)
        x1, x2 = crops.pool_image, crops.lab_image
        params = self.strong.sample(x1.shape[0], x1.shape[2], x1.shape[3], generator)
        pseudo1 = self.strong.apply_mask(crops.pool_pseudo, params)
        return StepBatch(images=torch.cat([self.strong.apply_image(x1, params), x2]), labels=crops.lab_label,
                         pseudo=torch.cat([pseudo1, crops.lab_pseudo]), clean=torch.cat([x1, x2]), aug=params)

    def teacher(self, segmenter) -> EMATeacher | None:
        return EMATeacher(segmenter, use_ema=self._use_ema) if self._has_teacher else None

    def ema_decay(self, step: int) -> float:
        return ema_decay(step, self.steps, *self._decays)

    def losses(self, model, teacher: EMATeacher | None, batch: StepBatch, ignore_index: int) -> dict[str, Tensor]:
        """Forward pass and losses of one step (docs/method.md eqs. 1-5).

        L_seg is averaged over Sub-batch 2 only (the last ``labels.shape[0]`` images); L_con and
        L_pl over both sub-batches. The teacher sees the images before strong augmentation and its
        argmax is moved by B, exactly like the stored pseudo-masks.
        """
        weights = self.weights
        out = model(batch.images)
        n_lab = batch.labels.shape[0]   # Sub-batch 2 (labelled) is last
        losses = {"loss_seg": pixel_cross_entropy(out["f"][-n_lab:], batch.labels, ignore_index)}
        if batch.pseudo is not None:
            if weights.cr and teacher is not None:
                target = teacher.predict(batch.clean)
                n1 = target.shape[0] - n_lab
                target = torch.cat([self.strong.apply_mask(target[:n1], batch.aug), target[n1:]])
                losses["loss_con"] = pixel_cross_entropy(out["f"], target, ignore_index)
            if weights.t2 and "g" in out:
                losses["loss_pl"] = pixel_cross_entropy(out["g"], batch.pseudo, ignore_index)
        losses["loss"] = total_loss(losses["loss_seg"], losses.get("loss_con"), losses.get("loss_pl"), weights)
        return losses
