"""The interface of a method's implementation (:class:`Method`); torch-free, like the tables."""
from __future__ import annotations

from typing import Any


class Method:
    """What a method decides in a step of ``stage`` (built by :func:`selftrain_lib.methods.build`).

    The batch it needs (:class:`selftrain_lib.train.BatchSource` reads these):

    - ``pool``: Sub-batch 1 is drawn from L∪U (else the whole batch comes from L),
    - ``pseudo``: the batch carries the previous stage's pseudo-masks,
    - ``strong``: the strong augmentation applied to Sub-batch 1 (a ``StrongAugment``); None: Sub-batch
      1 is weakly augmented only and the batch carries the map of its pixels inside their images,
    - ``boxes``: a box sampler (``sample(n, h, w, generator)``) whose boxes the batch carries, or None.

    Its teacher (:meth:`teacher`, :meth:`ema_decay`) and its losses (:meth:`losses`).
    """

    pool: bool = False
    pseudo: bool = False
    strong: Any = None
    boxes: Any = None
    steps: int = 0

    def teacher(self, segmenter):
        """The EMA teacher of ``segmenter`` (an ``EMATeacher``), or None."""
        return None

    def ema_decay(self, step: int) -> float:
        """The teacher's EMA decay at ``step``, a pure function of the step."""
        return 0.0

    def losses(self, model, teacher, batch, ignore_index: int) -> dict:
        """Forward pass and losses of one step: ``{"loss": total, "loss_seg": ..., ...}`` (scalars)."""
        raise NotImplementedError
