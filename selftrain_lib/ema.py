"""The teacher θ': an exponential moving average of the student's parameters and buffers.

The decay is a pure function of the step (nanoGPT's rule for the learning rate), so a resumed
run follows the same schedule. ``ema=False`` gives the Γ-model: the student is its own teacher
and its targets are detached.
"""
from __future__ import annotations

import bisect
import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from .evaluate import class_map

# The authors' schedule at 60,000 steps: 0.99 to 20k, 0.995 to 40k, 0.9975 to 50k, 0.999 after.
PAPER_DECAYS = (0.99, 0.995, 0.9975, 0.999)
PAPER_MILESTONES = (20_000 / 60_000, 40_000 / 60_000, 50_000 / 60_000)


def ema_decay(step: int, total_steps: int, decays: Sequence[float] = PAPER_DECAYS,
              milestones: Sequence[float] = PAPER_MILESTONES) -> float:
    """Decay in force at ``step`` (0-based); milestones are fractions of ``total_steps``."""
    i = bisect.bisect_right([m * total_steps for m in milestones], step)
    return float(decays[i])


def scale_decays(decays: Sequence[float], reference_steps: int | None, steps: int) -> tuple[float, ...]:
    """Decays for a stage of ``steps`` steps that make the teacher lag the same *fraction* of the
    stage as ``decays`` do in a stage of ``reference_steps`` (None: ``decays`` unchanged).

    An EMA with decay d averages over about 1 / (1 - d) steps. The authors' 0.99 ... 0.999 are 100 to
    1,000 steps, 0.2 % to 1.7 % of a 60,000-step stage; kept as they are in a 1,000-step stage the
    teacher would lag 10 % to 100 % of it. So 1 - d is multiplied by ``reference_steps / steps``
    (clipped at 0: a stage shorter than the window copies the student).
    """
    if reference_steps is None:
        return tuple(float(d) for d in decays)
    return tuple(max(0.0, 1.0 - (1.0 - d) * reference_steps / steps) for d in decays)


class EMATeacher(nn.Module):
    """Teacher network for L_con's targets.

    ``update`` blends every floating-point parameter and buffer (batch-norm running statistics
    included, as in timm's ModelEmaV3); integer buffers are copied. The teacher is always in
    eval mode and never receives gradients.
    """

    def __init__(self, student: nn.Module, use_ema: bool = True):
        super().__init__()
        self.use_ema = use_ema
        # Without EMA the teacher *is* the student; keep it out of this module's children so
        # its parameters are not registered twice.
        self._student = [student]
        self.module = copy.deepcopy(student).eval().requires_grad_(False) if use_ema else None

    @property
    def network(self) -> nn.Module:
        return self.module if self.use_ema else self._student[0]

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float) -> None:
        if not self.use_ema:
            return
        t_state = self.module.state_dict()
        s_state = student.state_dict()
        floats = [k for k, v in t_state.items() if v.is_floating_point()]
        t_f = [t_state[k] for k in floats]
        s_f = [s_state[k].detach() for k in floats]
        torch._foreach_lerp_(t_f, s_f, 1.0 - decay)  # t ← decay·t + (1−decay)·s, one fused call
        for k, v in t_state.items():
            if not v.is_floating_point():
                v.copy_(s_state[k])

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Hard targets ``argmax f_θ'(x)``: (B, 3, H, W) → int64 (B, H, W)."""
        return class_map(self.logits(images))

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """The teacher's logits ``f_θ'(x)``: (B, 3, H, W) → (B, C, H, W), no gradient (eval mode)."""
        net = self.network
        was_training = net.training
        net.eval()
        try:
            return net(images)
        finally:
            net.train(was_training)

    def train(self, mode: bool = True):  # the teacher stays in eval mode
        return self

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs) if self.use_ema else {}

    def load_state_dict(self, state, strict: bool = True):
        if self.use_ema:
            self.module.load_state_dict(state, strict=strict)
