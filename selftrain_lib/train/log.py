"""A run's readable training log: ``train.log`` (plain text) and TensorBoard events.

Researchers coming from mmsegmentation or UniMatch expect to ``tail -f`` a log per run and to
watch curves in TensorBoard. :class:`TrainingLog` writes both from what the stage's loop already
computes (the logged rows and the evaluations), so it adds no host sync to a step:

- ``<run>/train.log``: one line per logging interval (step, learning rates, each loss, the
  teacher's EMA decay, seconds a step, ETA, memory) and, at each evaluation, each network's mIoU
  and per-class IoU. A resumed run appends to it and says where it resumed.
- ``<run>/tensorboard/``: the same scalars as TensorBoard events, when ``tensorboard`` is
  installed (it is in the environment); ``tensorboard --logdir runs`` shows every run. A resumed
  run drops the events past its checkpoint (``purge_step``), so the curves have no doubled tail.

The log is for reading only: nothing in the cache reads it back, and it does not enter run hashes.
"""
from __future__ import annotations

import datetime
import resource
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
LOSS_NAMES = {"loss": "loss", "loss_seg": "seg", "loss_con": "con", "loss_pl": "pl"}


def _duration(seconds: float) -> str:
    """``3h04m``, ``12m05s`` or ``41s``."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MB: the CUDA allocator's peak on a GPU, else the peak
    resident set size (``ru_maxrss``: kilobytes on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _summary_writer(log_dir: Path, purge_step: int | None):
    """A TensorBoard ``SummaryWriter``, or None when tensorboard is not installed (imported here:
    it costs half a second, which a process that trains nothing should not pay)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)


class TrainingLog:
    """The log of one stage's run (module docstring). ``start``: the step the loop starts from
    (a checkpoint's step when resumed), ``steps``: the stage's last step. ``enabled`` False (the
    other ranks of a multi-process run) makes every method a no-op."""

    def __init__(self, run_dir: Path, stage: int, steps: int, start: int, *, device: torch.device,
                 enabled: bool = True, tensorboard: bool = True):
        self.steps, self.start, self.device = steps, start, device
        self.enabled = enabled
        self._file = None
        self._writer = None
        if not enabled:
            return
        self._file = open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8")
        if tensorboard:
            self._writer = _summary_writer(Path(run_dir) / TENSORBOARD_DIR, purge_step=start or None)
        what = f"resumed at step {start} of {steps}" if start else f"started, {steps} steps"
        self.line(f"stage {stage} run {Path(run_dir).name}: {what} on {device}")

    def line(self, text: str) -> None:
        """One timestamped line, flushed at once (``tail -f`` shows it)."""
        if self._file is None:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self._file.write(f"{stamp} {text}\n")
        self._file.flush()

    def interval(self, row: Mapping[str, Any], lrs: Sequence[float], seconds_since_start: float) -> None:
        """The line of a logged ``row`` (step, losses, ema_decay: a curve row of the stage) with the
        optimiser's learning rates ``lrs`` (one per parameter group) and the wall time since this
        process started the loop (for the time a step and the ETA)."""
        if not self.enabled:
            return
        step = int(row["step"])
        done = step - self.start
        per_step = seconds_since_start / done if done > 0 else float("nan")
        eta = per_step * (self.steps - step) if done > 0 else float("nan")
        losses = " ".join(f"{short} {row[k]:.4f}" for k, short in LOSS_NAMES.items() if k in row)
        lr = " / ".join(f"{v:.2e}" for v in dict.fromkeys(lrs))  # distinct rates: new layers, backbone
        parts = [f"step {step:>{len(str(self.steps))}}/{self.steps}", f"lr {lr}", losses]
        if row.get("ema_decay") not in (None, ""):
            parts.append(f"ema {float(row['ema_decay']):.4f}")
        if done > 0:
            parts.append(f"{per_step:.3f} s/step, eta {_duration(eta)}")
        mem = memory_mb(self.device)
        parts.append(f"mem {mem:.0f} MB")
        self.line(" | ".join(parts))
        if self._writer is not None:
            for k in LOSS_NAMES:
                if k in row:
                    self._writer.add_scalar(f"train/{k}", float(row[k]), step)
            for i, v in enumerate(lrs):
                self._writer.add_scalar(f"lr/group{i}", float(v), step)
            if row.get("ema_decay") not in (None, ""):
                self._writer.add_scalar("train/ema_decay", float(row["ema_decay"]), step)
            self._writer.add_scalar("system/memory_mb", mem, step)

    def evaluation(self, step: int, evals: Mapping[str, Any], class_names: Sequence[str]) -> None:
        """The mIoU and per-class IoU of each evaluated network (``evals``: name -> EvalResult)."""
        if not self.enabled:
            return
        self.line(f"eval at step {step}: " + " | ".join(f"{name} mIoU {100 * r.miou:.2f}" for name, r in evals.items()))
        for name, r in evals.items():
            ious = ", ".join(f"{c} {'-' if v != v else f'{100 * v:.1f}'}" for c, v in zip(class_names, r.per_class_iou))
            self.line(f"  {name} per-class IoU: {ious}")
            if self._writer is not None:
                self._writer.add_scalar(f"val/miou_{name}", 100 * r.miou, step)
                for c, v in zip(class_names, r.per_class_iou):
                    if v == v:  # NaN: the class occurs in neither prediction nor ground truth
                        self._writer.add_scalar(f"val_iou_{name}/{c}", 100 * v, step)

    def close(self, message: str | None = None) -> None:
        if message:
            self.line(message)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None
