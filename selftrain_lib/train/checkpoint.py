"""A stage's checkpoint (``<run>/checkpoint.pt``): written at every ``checkpoint_every`` steps and at
the last one, read back when the stage starts again, set aside when unusable.

It holds the weights, the teacher, the optimiser, the loss scaler, the step, the curve rows, the
loss sums since the last row and the training time: everything random in a step is drawn from
(seed, stage, step), so a resumed run computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..runs import atomic_torch_save, set_aside
from .parts import StageParts

CHECKPOINT_KEYS = ("step", "model", "optimizer", "teacher", "rows", "sums", "elapsed")


def read_checkpoint(path: Path, device: torch.device, steps: int) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run of ``steps`` steps, or None: none there, or unusable,
    which is then set aside and the stage starts again. Loaded with ``weights_only=True``: tensors,
    numbers, strings and containers only, so a planted file never runs code (it is unreadable)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch.load raises EOFError, RuntimeError, UnpicklingError... on a bad file
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights only load failed" in text.lower():  # the refusal itself is 30 lines of advice
            text = "it holds Python objects other than tensors, numbers and strings, which are never unpickled"
        set_aside(path, "corrupt",
                  f"unreadable checkpoint ({type(err).__name__}: {text[:300]}); starting the stage again")
        return None
    problem = checkpoint_problem(ckpt, steps)
    if problem is not None:
        set_aside(path, "corrupt", f"unusable checkpoint ({problem}); starting the stage again")
        return None
    return ckpt


def checkpoint_problem(ckpt: Any, steps: int) -> str | None:
    """What makes ``ckpt`` (read by :func:`read_checkpoint`) no checkpoint of a run of ``steps`` steps, or None."""
    if not isinstance(ckpt, dict):
        return f"expected a mapping, got {type(ckpt).__name__}"
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        return f"no {missing}"
    step = ckpt["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
        return f"step {step!r} is not a step of this run (0..{steps})"
    if not isinstance(ckpt["rows"], list) or not all(isinstance(r, dict) for r in ckpt["rows"]):
        return "rows: expected a list of curve rows"
    if not isinstance(ckpt["sums"], dict) or not all(isinstance(v, Tensor) and v.numel() == 1
                                                     for v in ckpt["sums"].values()):
        return "sums: expected a mapping of loss names to one-value tensors"
    if isinstance(ckpt["elapsed"], bool) or not isinstance(ckpt["elapsed"], (int, float)):
        return f"elapsed: expected a number of seconds, got {type(ckpt['elapsed']).__name__}"
    return None


def resume(parts: StageParts, ckpt: dict[str, Any]) -> None:
    """Load the weights, teacher, optimiser and loss scaler of ``ckpt`` into ``parts`` (an error
    when they do not fit: other shapes, keys or parameter groups)."""
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    for group in parts.optimizer.param_groups:  # load_state_dict does not compare Adam's moments
        for param in group["params"]:
            for name, value in parts.optimizer.state.get(param, {}).items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(f"optimizer state {name!r} of shape {tuple(value.shape)} for a parameter "
                                     f"of shape {tuple(param.shape)}")
    if parts.teacher is not None:
        parts.teacher.load_state_dict(ckpt["teacher"])
    if parts.scaler is not None and ckpt.get("scaler"):
        parts.scaler.load_state_dict(ckpt["scaler"])




def save_checkpoint(path: Path, parts: StageParts, step: int, rows: list[dict], sums: dict[str, Tensor],
                    elapsed: float) -> None:
    """Write the checkpoint of ``parts`` after ``step`` steps (a temporary file renamed: a kill
    leaves the previous checkpoint)."""
    teacher, scaler = parts.teacher, parts.scaler
    atomic_torch_save(path, {"step": step, "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
                             "teacher": teacher.state_dict() if teacher is not None else None,
                             "scaler": scaler.state_dict() if scaler is not None else None,
                             "rows": rows, "sums": sums, "elapsed": elapsed})


def resume_or_restart(path: Path, parts: StageParts, device: torch.device,
                      rebuild: Callable[[], StageParts]) -> tuple[StageParts, dict[str, Any] | None]:
    """``parts`` with the checkpoint at ``path`` loaded into them, and the checkpoint; or, when there
    is none or it is unusable or does not fit this run (then set aside), parts to start the stage
    again with and None."""
    ckpt = read_checkpoint(path, device, parts.steps)
    if ckpt is None:
        return parts, None
    try:
        resume(parts, ckpt)
    except Exception as err:  # readable, but not this run's (other shapes...): a rerun would fail forever
        first = (str(err).strip().splitlines() or [""])[0][:300]
        set_aside(path, "incompatible", f"checkpoint does not fit this run ({type(err).__name__}: {first}); "
                                        "starting the stage again")
        return rebuild(), None  # built afresh: the failed load may have changed some weights already
    return parts, ckpt
