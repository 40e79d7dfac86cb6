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

    What it reads of the configuration it declares, for the run hash: :attr:`name` (methods that
    share an implementation share runs: ``supervised`` *is* Stage 1) and :meth:`reads`.
    """

    name: str = ""  # the method's identity in the run hash
    pool: bool = False
    pseudo: bool = False
    strong: Any = None
    boxes: Any = None
    steps: int = 0
    ema_teacher: bool = False  # the stage keeps an EMA teacher that can be evaluated (``eval_model``)

    def reads(self) -> tuple[str, ...]:
        """The Config keys this method reads at its stage: each enters the stage's run hash
        (:func:`selftrain_lib.train.run_key.stage_key`). A key the method starts reading is added here,
        next to the code that reads it; a key it does not read at this stage stays out, so runs
        that differ in it share the stage."""
        return ()

    def evaluated(self, eval_model: str) -> str:
        """The network the stage reports and writes pseudo-masks with: ``eval_model`` where the
        stage has an EMA teacher, else ``"student"``."""
        return eval_model if self.ema_teacher else "student"

    def teacher(self, segmenter):
        """The EMA teacher of ``segmenter`` (an ``EMATeacher``), or None."""
        return None

    def ema_decay(self, step: int) -> float:
        """The teacher's EMA decay at ``step``, a pure function of the step."""
        return 0.0

    def losses(self, model, teacher, batch, ignore_index: int) -> dict:
        """Forward pass and losses of one step: ``{"loss": total, "loss_seg": ..., ...}`` (scalars)."""
        raise NotImplementedError
