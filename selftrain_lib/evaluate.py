"""Evaluation: confusion matrix, mIoU and per-class IoU; whole images at the working resolution.

The protocol is fixed and written into every result: each validation image is evaluated whole
at its stored resolution (no sliding window, no multi-scale, no flip), with the model of the
last training step. The best of the evaluations made during training (every ``eval_every``
steps) is recorded beside it with its step (:func:`best_and_last`), as the authors' code prints
both ``VAL_mIoU`` and ``Best_mIoU``; tables report the last unless asked for the best.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn
from .progress import tqdm

EVALUATION = "whole image at the working resolution, single scale, no flip"
PROTOCOL = f"{EVALUATION}; model of the last step"  # what ``val`` in metrics.json is
REPORTED = ("last", "best")  # which of a run's evaluations a table shows (the last step's by default)


def protocol(num_classes: int, ignore_index: int, image_size, eval_model: str) -> dict:
    """What a run's validation scores mean: :data:`PROTOCOL`, the network evaluated (``eval_model``:
    ``student`` or ``teacher``), the classes scored, the ignored mask value and the (H, W) images are
    evaluated at. In every run hash (:func:`selftrain_lib.train.run_key.stage_run_key`): a run evaluated
    otherwise is another run, never one reused under a new caption."""
    return {"evaluation": PROTOCOL, "eval_model": eval_model, "num_classes": num_classes, "ignore_index": ignore_index,
            "image_size": list(image_size)}


class ConfusionMatrix:
    """Counts (true class, predicted class) pairs with one ``bincount``; pixels whose target is
    ``ignore_index`` are skipped. Rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: integer tensors of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.to(self.mat.device).long().flatten()
        pred = pred.to(self.mat.device).long().flatten()
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            raise ValueError(f"target holds class {int(target.max())}, outside [0, {self.num_classes}) "
                             f"and not the ignore value {self.ignore_index}")
        n = self.num_classes
        self.mat += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def iou(self) -> Tensor:
        """Per-class IoU (float64, NaN for a class absent from both prediction and target)."""
        m = self.mat.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))

    def miou(self) -> float:
        """Mean IoU over the classes that occur (in ground truth or prediction)."""
        return float(torch.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        return float(self.mat.diag().sum() / self.mat.sum().clamp(min=1))


@dataclass(frozen=True)
class EvalResult:
    miou: float
    per_class_iou: list[float]
    pixel_accuracy: float

    def as_dict(self, class_names=None) -> dict:
        """JSON-ready: NaN (a class absent from prediction and target, or no pixels) becomes None."""
        d = {"miou": _none_if_nan(self.miou), "pixel_accuracy": _none_if_nan(self.pixel_accuracy),
             "per_class_iou": [_none_if_nan(v) for v in self.per_class_iou]}
        if class_names is not None:
            d["per_class_iou"] = dict(zip(class_names, d["per_class_iou"]))
        return d


def _none_if_nan(v: float) -> float | None:
    return None if v != v else v


def scores(cm: ConfusionMatrix) -> EvalResult:
    return EvalResult(miou=cm.miou(), per_class_iou=[float(v) for v in cm.iou()], pixel_accuracy=cm.pixel_accuracy())


def to_input(images: Tensor, device: torch.device | str) -> Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, H, W) in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255)


def class_map(logits: Tensor) -> Tensor:
    """The predicted class per pixel: logits (B, C, H, W) -> int64 (B, H, W). ``max(1).indices`` equals
    ``argmax(1)`` (the first maximum on ties) at a sixth of its time on the CPU: torch's strided argmax
    over C took a sixth of a Stage-2 run's time (teacher targets, evaluation, pseudo-masks)."""
    return logits.max(1).indices


def predictions(model: nn.Module, part, indices: Sequence[int], batch_size: int = 64,
                device: torch.device | str = "cpu", desc: str | None = None,
                progress: bool = False) -> Iterator[tuple[list[int], Tensor]]:
    """argmax of ``model`` on images ``indices`` of ``part`` (an in-memory ``ArrayDataset`` or a
    ``FileDataset``), in the chunks the part reads them in (batches, or one image of its own size):
    ``(indices, int64 (b, H, W) on device)``. The model is in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx, images in tqdm(part.chunks(indices, batch_size), desc=desc, disable=not progress, leave=False):
                yield idx, class_map(model(to_input(images, device)))
    finally:
        model.train(was_training)


def evaluate_part(model: nn.Module, part, num_classes: int, ignore_index: int = 255, batch_size: int = 64,
                  device: torch.device | str = "cpu", progress: bool = False) -> EvalResult:
    """Scores of ``model`` on every image of ``part`` (whole images, at their stored size)."""
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    for idx, pred in predictions(model, part, range(len(part)), batch_size, device, "evaluate", progress):
        cm.update(pred, torch.stack([part.mask(i) for i in idx]))
    return scores(cm)


def best_and_last(rows: Sequence[dict], column: str) -> dict | None:
    """The best and the last of the evaluations in curve ``rows`` (dicts with ``step`` and, on the
    rows where the stage evaluated, ``column``): ``{"best": {"miou", "step"}, "last": {"miou", "step"}}``.
    The best is the earliest step of the highest mIoU (a NaN never wins); None when no row holds
    ``column`` (e.g. no teacher)."""
    evaluated = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
    if not evaluated:
        return None
    scored = [(m, s) for s, m in evaluated if m == m]
    best_miou, best_step = max(scored, key=lambda ms: (ms[0], -ms[1])) if scored else (float("nan"), evaluated[0][0])
    last_step, last_miou = evaluated[-1]
    return {"best": {"miou": _none_if_nan(best_miou), "step": best_step},
            "last": {"miou": _none_if_nan(last_miou), "step": last_step}}
