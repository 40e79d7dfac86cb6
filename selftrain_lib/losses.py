"""The losses of docs/method.md: d_s and d_c are pixel-wise cross-entropy with the ignore value excluded.

- ``L_seg = mean_{i in Sub-batch 2} d_s(f(x_i), y_i)``                  (eq. 2)
- ``L_con = mean_{i in both sub-batches} d_c(f(A x_i), B argmax f_θ'(x_i))``  (eq. 1)
- ``L_pl  = mean_{i in both sub-batches} d_c(g(A x_i), B ŷ_i)``               (eq. 3)
- ``L = L_seg + λ1 L_con + λ2 L_pl``                                      (eq. 4, 5)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


def pixel_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean cross-entropy over the pixels whose target is not ``ignore_index``.

    Args:
        logits: (B, C, H, W) float.
        target: (B, H, W) int64.
    Returns:
        A scalar; 0 (still attached to the graph) when every pixel is ignored, where
        ``F.cross_entropy`` would return NaN.
    """
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    count = (target != ignore_index).sum()
    return total / count.clamp(min=1)


@dataclass(frozen=True)
class LossWeights:
    """λ1, λ2 and the CR/T2 switches; a switched-off term is neither computed nor weighted."""

    lambda1: float = 0.5
    lambda2: float = 0.5
    cr: bool = True
    t2: bool = True


def total_loss(seg: Tensor, con: Tensor | None, pl: Tensor | None, weights: LossWeights) -> Tensor:
    """``L_seg + λ1 L_con + λ2 L_pl`` with the switched-off terms left out."""
    loss = seg
    if weights.cr and con is not None:
        loss = loss + weights.lambda1 * con
    if weights.t2 and pl is not None:
        loss = loss + weights.lambda2 * pl
    return loss
