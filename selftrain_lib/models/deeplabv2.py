"""DeepLabv2: a dilated ResNet trunk (output stride 8) and ASPP, the paper's segmentation network f.

``f(x) = upsample(ASPP(conv5(conv4(...conv1(x)))))``, where ASPP is the *sum* of four parallel
3x3 convolutions with dilations 6, 12, 18, 24, each mapping the trunk's channels to the class
scores, and the upsampling is bilinear (``align_corners=False``) to the input size.

Note: the authors' released code inherits a bug from AdvSemiSeg's ``Classifier_Module`` (a
``return`` inside the summing loop) that sums only the first two branches (dilations 6 and 12);
this module sums all four, as DeepLabv2 and the paper describe. ``dilations=(6, 12)`` computes
what their code computes (the two unused branches have no effect on the output).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import ResNetBackbone

__all__ = ["ASPP", "DeepLabV2", "upsample_logits"]


def upsample_logits(logits: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """``(B, C, h, w) -> (B, C, *size)``, bilinear; ``align_corners=True`` as the authors' code
    (``deeplab2.py`` L208, L215), ``False`` (torchvision's default) otherwise."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


class ASPP(nn.Module):
    """DeepLabv2's atrous spatial pyramid pooling head (ASPP-L): a sum of dilated 3x3 convs.

    ``(B, in_channels, h, w) -> (B, num_classes, h, w)``; branch ``i`` is a 3x3 convolution with
    dilation ``dilations[i]``, padding ``dilations[i]`` and a bias. Weights ~ N(0, 0.01),
    biases 0, as in DeepLabv2.
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        if num_classes < 1 or not dilations:
            raise ValueError(f"need num_classes >= 1 and at least one dilation, got {num_classes}, {dilations}")
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.dilations = tuple(int(d) for d in dilations)
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in self.dilations)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, dilations={self.dilations}"


class DeepLabV2(nn.Module):
    """The segmentation network f: a :class:`ResNetBackbone` (output stride 8) and an :class:`ASPP`.

    ``forward(x: (B, 3, H, W) float) -> logits (B, num_classes, H, W)``.

    Attributes:
        backbone: the trunk (``conv1`` .. ``conv5``), the pre-trainable layers.
        aspp: the classifier head (new layers).
        num_classes: number of output channels.
    """

    def __init__(self, backbone: ResNetBackbone, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24),
                 align_corners: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.align_corners = bool(align_corners)  # of the logits' upsampling (the branch's too)
        self.aspp = ASPP(backbone.out_channels, num_classes, dilations)
        self.num_classes = int(num_classes)

    def features(self, x: Tensor, upto: str = "conv5") -> Tensor:
        """Image ``(B, 3, H, W)`` -> output of stage ``upto`` (``"conv1"`` .. ``"conv5"``);
        ``(B, stage_channels[upto], ceil(H/8), ceil(W/8))`` for ``conv3`` .. ``conv5``."""
        return self.backbone.features(x, upto)

    def decode(self, features: Tensor, size: Sequence[int]) -> Tensor:
        """``conv5`` features ``(B, out_channels, h, w)`` -> logits ``(B, num_classes, *size)``."""
        return upsample_logits(self.aspp(features), size, self.align_corners)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.backbone(x), x.shape[-2:])
