"""Numeric precision of training: fp32, or mixed precision with bf16 / fp16 autocast.

``precision: auto`` (the default) picks bf16 on a GPU that supports it, fp16 (with a gradient
scaler) on an older GPU, and plain fp32 on the CPU, so CPU runs stay bit-reproducible.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision on one device type."""

    name: str           # "fp32", "bf16" or "fp16"
    device_type: str    # "cpu" or "cuda"

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    def autocast(self):
        """The forward pass's context: autocast to ``dtype``, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """The precision ``name`` (one of :data:`PRECISIONS`) means on ``device``."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type != "cuda":
            name = "fp32"
        else:
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision: fp16 autocast needs a CUDA device, got {device}; use bf16 or fp32")
    return Precision(name, device.type)
