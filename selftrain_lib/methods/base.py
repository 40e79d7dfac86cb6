"""What every method shares: the batch it declares (:class:`BatchSpec`), the crops it is given
(:class:`Crops`), the batch its losses read (:class:`StepBatch`) and its interface (:class:`Method`).

A stage (:mod:`selftrain_lib.stage`, :mod:`selftrain_lib.train.parts`) builds the method
(:func:`selftrain_lib.methods.build`), builds the model with the branch the method names
(:attr:`Method.branch`), and hands the method to the batch source
(:class:`selftrain_lib.train.BatchSource`). Each step then runs, in this order:

1. the batch source draws ``method.batch.labelled`` images from L (Sub-batch 2) and
   ``method.batch.pool`` from L∪U (Sub-batch 1), weakly augments them (random scale, crop, flip)
   and gives them as :class:`Crops`, with the previous stage's pseudo-masks where
   ``method.batch.pseudo``;
2. :meth:`Method.make_batch` turns the crops into the :class:`StepBatch` its losses read (strong
   augmentation, boxes: whatever the method adds), drawing from the step's generator;
3. :meth:`Method.losses` runs the forward pass and returns the losses; the loop steps the
   optimiser and moves the teacher (:meth:`Method.teacher`) by :meth:`Method.ema_decay`.

Torch-free, like the tables of :mod:`selftrain_lib.methods` (``config`` imports them): tensors
appear in annotations only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Generator, Tensor


# ------------------------------------------------------------------------------------------
# the batch a method draws
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchSpec:
    """The sub-batches a method draws at each step (:class:`selftrain_lib.train.BatchSource` draws them).

    labelled: B2, the size of Sub-batch 2: images from L with their ground truth.
    pool: B1, the size of Sub-batch 1: images from L∪U (never U's ground truth); 0: the whole
        batch is Sub-batch 2.
    pseudo: the crops carry the previous stage's pseudo-masks (stage >= 2 of the three-stage method).
    reads: the Config keys the sizes come from (they enter the run hash,
        :meth:`selftrain_lib.train.batches.StepDraws.reads`).
    """

    labelled: int
    pool: int = 0
    pseudo: bool = False
    reads: tuple[str, ...] = ()

    @classmethod
    def labelled_only(cls, config) -> "BatchSpec":
        """The whole batch from L: ``stage1_batch_size`` images where the configuration sets it
        (the authors' code has a Stage-1 batch of its own), else ``batch_size``."""
        return cls(labelled=config.stage1_batch_size or config.batch_size,
                   reads=("batch_size", "stage1_batch_size"))

    @classmethod
    def labelled_and_pool(cls, config, pseudo: bool) -> "BatchSpec":
        """``labelled_per_batch`` images from L (Sub-batch 2) and the rest of ``batch_size`` from
        L∪U (Sub-batch 1); with the previous stage's pseudo-masks where ``pseudo``."""
        return cls(labelled=config.labelled_per_batch, pool=config.batch_size - config.labelled_per_batch,
                   pseudo=pseudo, reads=("batch_size", "labelled_per_batch"))


@dataclass
class Crops:
    """What the batch source gives the method for one step, on the device: weakly augmented crops
    of Sub-batch 2 (``lab_*``, from L) and of Sub-batch 1 (``pool_*``, from L∪U; None when the
    method draws no pool images).

    lab_image (B2, 3, h, w) float in [0, 1]; lab_label (B2, h, w) int64; lab_pseudo (B2, h, w)
    int64 or None; pool_image (B1, 3, h, w); pool_pseudo (B1, h, w) or None; pool_inside (B1, h, w)
    bool, the crop's pixels that come from inside the image (a crop larger than its image is padded).
    """

    lab_image: Tensor
    lab_label: Tensor
    lab_pseudo: Tensor | None = None
    pool_image: Tensor | None = None
    pool_pseudo: Tensor | None = None
    pool_inside: Tensor | None = None


@dataclass
class StepBatch:
    """One step's batch, as a method's losses read it (made by :meth:`Method.make_batch`), on the
    device. Sub-batch 1 (from L∪U) first, then Sub-batch 2 (from L).

    images: (B, 3, h, w) float in [0, 1], B = B1 + B2, the student's input (the three-stage
        method: Sub-batch 1 strongly augmented).
    labels: (B2, h, w) int64, ground truth of Sub-batch 2.
    pseudo: (B, h, w) int64 pseudo-masks moved by the strong augmentation, or None (stage 1, baselines).
    clean: (B, 3, h, w) images before strong augmentation (the teacher's input), or None.
    aug: the strong augmentation's parameters of Sub-batch 1, to move the teacher's targets, or None.
    valid, boxes: the mean teacher baselines': (B1, h, w) bool, the pixels of Sub-batch 1 inside
        the source image; (B1, 4) int64, the Cutout / CutMix boxes.
    """

    images: Tensor
    labels: Tensor
    pseudo: Tensor | None = None
    clean: Tensor | None = None
    aug: Any = None
    valid: Tensor | None = None
    boxes: Tensor | None = None


# ------------------------------------------------------------------------------------------
# the interface
# ------------------------------------------------------------------------------------------

class Method:
    """What a method decides at one stage (built by :func:`selftrain_lib.methods.build` from a
    configuration and a stage): the model's shape (:attr:`branch`), the batch it draws
    (:attr:`batch`, :meth:`make_batch`), its teacher (:meth:`teacher`, :meth:`ema_decay`), its
    losses (:meth:`losses`) and its step count (:attr:`steps`).

    What it reads of the configuration it declares, for the run hash: :attr:`name` (methods that
    share an implementation share runs: ``supervised`` *is* Stage 1), :meth:`reads` and
    ``batch.reads``.
    """

    name: str = ""  # the method's identity in the run hash
    batch: BatchSpec  # the sub-batches each step draws (set by __init__)
    # the auxiliary branch g of the model (selftrain_lib.models.MultiTaskDeepLab): how many of
    # f's last blocks it owns: 2 (ĝ: conv6 and ASPP), 1 (g̃: ASPP), None (f alone)
    branch: int | None = None
    steps: int = 0
    ema_teacher: bool = False  # the stage keeps an EMA teacher that can be evaluated (``eval_model``)

    def reads(self) -> tuple[str, ...]:
        """The Config keys this method reads at its stage: each enters the stage's run hash
        (:func:`selftrain_lib.train.run_key.stage_key`). A key the method starts reading is added here,
        next to the code that reads it; a key it does not read at this stage stays out, so runs
        that differ in it share the stage. The keys of its batch sizes are ``batch.reads``."""
        return ()

    def evaluated(self, eval_model: str) -> str:
        """The network the stage reports and writes pseudo-masks with: ``eval_model`` where the
        stage has an EMA teacher, else ``"student"``."""
        return eval_model if self.ema_teacher else "student"

    def make_batch(self, crops: Crops, generator: Generator) -> StepBatch:
        """The step's batch from the weakly augmented ``crops`` (anything random drawn from
        ``generator``, the step's). Here: Sub-batch 2 alone, as drawn (``batch.pool == 0``)."""
        if crops.pool_image is not None:
            raise NotImplementedError(f"{type(self).__name__} draws pool images: it makes its batch itself")
        return StepBatch(images=crops.lab_image, labels=crops.lab_label)

    def teacher(self, segmenter):
        """The EMA teacher of ``segmenter`` (an ``EMATeacher``), or None."""
        return None

    def ema_decay(self, step: int) -> float:
        """The teacher's EMA decay at ``step``, a pure function of the step."""
        return 0.0

    def losses(self, model, teacher, batch: StepBatch, ignore_index: int) -> dict:
        """Forward pass and losses of one step: ``{"loss": total, "loss_seg": ..., ...}`` (scalars).
        ``model``: a :class:`~selftrain_lib.models.MultiTaskDeepLab` (its output ``{"f": (B, C, h, w),
        "g": (B, C, h, w) where it has a branch}``); ``teacher``: :meth:`teacher`'s, or None."""
        raise NotImplementedError
