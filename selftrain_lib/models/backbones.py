"""ResNet trunks with output stride 8, as DeepLabv2 uses them.

A :class:`ResNetBackbone` exposes the five stages of the paper by name,
``conv1`` (stem: conv, bn, relu, maxpool), ``conv2`` .. ``conv5`` (``conv2_x`` .. ``conv5_x``),
and can build a fresh copy of ``conv5``'s structure at another width
(:meth:`ResNetBackbone.make_stage5`), which is how the Stage-2 branch ĝ gets its ``conv6``.

Two constructors:

* :func:`resnet101_os8` -- torchvision's ResNet-101 (optionally ImageNet weights), its modules
  wrapped, not copied. Every block of ``conv4`` has dilation 2 and every block of ``conv5``
  dilation 4, as in DeepLabv2 (and the authors' code). torchvision gives the *first* block of a
  dilated stage the previous stage's dilation (1 and 2); we set that block's 3x3 convolution to
  the stage's dilation in place. Weights are unchanged (a 3x3 kernel is a 3x3 kernel).
  ``style="caffe"`` gives the network of DeepLab-v2's Caffe release as AdvSemiSeg's
  ``model/deeplab.py`` ports it (Hung et al.'s MS-COCO initialisation expects it): the stride of
  ``conv3`` on the first block's 1x1 convolution instead of its 3x3, a ceil-mode max-pool,
  batch-norm affine parameters that are never trained, and Caffe-style input (below).
* :func:`small_resnet_os8` -- a CPU-scale trunk with the same layout (basic residual blocks,
  the same strides and dilations, batch norm everywhere).

Spatial sizes: for an input ``(B, 3, H, W)``, ``conv1`` gives ``ceil(H/4)`` (stride-2 conv and
stride-2 max-pool), ``conv2`` keeps it, ``conv3`` halves it, ``conv4`` and ``conv5`` keep it:
features at ``(B, out_channels, ceil(H/8), ceil(W/8))``. The Caffe style's ceil-mode max-pool gives
``h1 = ceil(H/2)``, ``h2 = floor(h1/2) + 1``, features ``ceil(h2/2)`` (``(H - 1)/8 + 1`` for
``H = 8k + 1``: 41 for 321, as DeepLab's; 65 for 512 where torchvision's gives 64).

Input: every trunk takes RGB images in [0, 1] and normalises them itself, as its weights expect
(:data:`INPUT_FORMATS`): ``"imagenet"`` (torchvision's weights): ``(x - mean) / std`` with
ImageNet's statistics; ``"caffe"`` (Caffe-trained DeepLab-v2 weights): BGR channel order,
0-255 range, minus the Caffe ImageNet mean ``(104.008, 116.669, 122.675)`` (BGR), no division.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["STAGES", "INPUT_FORMATS", "CAFFE_MEAN_BGR", "RESNET_STYLES", "DilatedBasicBlock", "ResNetStage", "ResNetBackbone", "make_resnet_stage",
           "init_resnet_weights", "resnet101_os8", "small_resnet", "small_resnet_os8"]

#: The backbone's stages, input to output.
STAGES: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5")


class DilatedBasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) that, unlike torchvision's, accepts ``dilation > 1``.

    ``(B, inplanes, H, W) -> (B, planes, H/stride, W/stride)``. Both 3x3 convolutions use
    ``dilation`` with ``padding = dilation``; the first carries the stride. The signature matches
    torchvision's blocks (``inplanes, planes, stride, downsample, ..., dilation``) so that
    :func:`make_resnet_stage` builds either kind.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, norm_layer: type[nn.Module] | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ImageNet mean of Caffe's ResNets, in BGR order and 0-255 units (DeepLab-v2 / AdvSemiSeg IMG_MEAN).
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)

#: How a trunk turns an RGB image in [0, 1] into its input: ``(x[:, channels] * scale - mean) / std``.
INPUT_FORMATS: dict[str, dict] = {
    "imagenet": dict(channels=(0, 1, 2), scale=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "caffe": dict(channels=(2, 1, 0), scale=255.0, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0)),
    # the authors' code: the same mean, subtracted from RGB (their BGR flip is commented out)
    "caffe-rgb": dict(channels=(0, 1, 2), scale=255.0, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0)),
}


class ResNetStage(nn.Sequential):
    """A stage (``conv2_x`` ...) built here: blocks in sequence, with ``out_channels`` (int)."""

    def __init__(self, *blocks: nn.Module, out_channels: int) -> None:
        super().__init__(*blocks)
        self.out_channels = out_channels


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out, relu) convs, BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_resnet_stage(block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int = 1,
                      dilation: int = 1, projection: bool | None = None) -> ResNetStage:
    """Build ``blocks`` residual blocks of type ``block``; every block uses ``dilation``.

    The first block carries ``stride`` and, when ``projection`` is true (default: when the
    shape changes, or the stage is dilated as in DeepLabv2's ``_make_layer``), a 1x1-conv + BN
    projection shortcut. Fresh Kaiming initialisation.
    ``(B, inplanes, H, W) -> (B, planes * block.expansion, H/stride, W/stride)``.
    """
    out_channels = planes * block.expansion
    if projection is None:
        projection = stride != 1 or inplanes != out_channels or dilation > 1
    downsample = None
    if projection:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out_channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
    layers = [block(inplanes, planes, stride=stride, downsample=downsample, dilation=dilation)]
    layers += [block(out_channels, planes, dilation=dilation) for _ in range(1, blocks)]
    stage = ResNetStage(*layers, out_channels=out_channels)
    init_resnet_weights(stage)
    return stage


class ResNetBackbone(nn.Module):
    """A ResNet trunk as five named stages: ``conv1`` (stem) and ``conv2`` .. ``conv5``.

    ``forward(x: (B, 3, H, W)) -> (B, out_channels, ceil(H/8), ceil(W/8))`` (``conv5``'s output).

    Attributes:
        conv1 .. conv5: the stages (``nn.Module`` each), in :data:`STAGES` order.
        stage_channels: ``{stage name: output channels}``.
        out_channels: channels of ``conv5``'s output.
        stage5_spec: what :meth:`make_stage5` needs to rebuild ``conv5``'s structure
            (block type, block count, width, dilation, input channels, projection shortcut, and
            ``train_bn_affine``: False when batch-norm affine parameters are never trained).
        input_format: a key of :data:`INPUT_FORMATS`, how images in [0, 1] are normalised.
        style: ``"torchvision"`` / ``"caffe"`` (ResNet-101 variants, see :func:`resnet101_os8`)
            or ``"small"``; checkpoint loading compares it with the checkpoint's layout.
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, conv3: nn.Module, conv4: nn.Module, conv5: nn.Module,
                 stage_channels: dict[str, int], stage5_spec: dict, output_stride: int = 8,
                 input_format: str = "imagenet", style: str = "small") -> None:
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {sorted(INPUT_FORMATS)}, got {input_format!r}")
        self.output_stride = output_stride
        self.input_format, self.style = input_format, style
        self.conv1, self.conv2, self.conv3, self.conv4, self.conv5 = conv1, conv2, conv3, conv4, conv5
        missing = set(STAGES) - set(stage_channels)
        if missing:
            raise ValueError(f"stage_channels lacks {sorted(missing)}")
        self.stage_channels = {name: int(stage_channels[name]) for name in STAGES}
        self.out_channels = self.stage_channels["conv5"]
        self.stage5_spec = dict(stage5_spec)
        # Inputs are images in [0, 1]; the backbone normalises them as its weights expect
        # (INPUT_FORMATS), so callers never have to. Not persistent: these are constants, not
        # weights, and checkpoints stay plain ResNet state dicts.
        fmt = INPUT_FORMATS[input_format]
        self._input_channels = None if tuple(fmt["channels"]) == (0, 1, 2) else list(fmt["channels"])
        self._input_scale = float(fmt["scale"])
        self.register_buffer("input_mean", torch.tensor(fmt["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(fmt["std"]).view(1, 3, 1, 1), persistent=False)

    def run(self, x: Tensor, start: str = "conv1", end: str = "conv5") -> Tensor:
        """Run the stages ``start`` .. ``end`` (both included) on ``x``.

        ``x`` is the input of ``start``: the image for ``conv1``, else the previous stage's output.
        """
        i, j = _stage_index(start), _stage_index(end)
        if i > j:
            raise ValueError(f"start stage {start!r} comes after end stage {end!r}")
        if i == 0:
            x = self.normalise(x)
        for name in STAGES[i:j + 1]:
            x = getattr(self, name)(x)
        return x

    def normalise(self, x: Tensor) -> Tensor:
        """RGB images in [0, 1] ``(B, 3, H, W)`` -> ``conv1``'s input, as :attr:`input_format` says."""
        if self._input_channels is not None:
            x = x[:, self._input_channels]
        if self._input_scale != 1.0:
            x = x * self._input_scale
        return (x - self.input_mean) / self.input_std

    def features(self, x: Tensor, upto: str = "conv5") -> Tensor:
        """Image ``(B, 3, H, W)`` -> output of stage ``upto`` (``conv1`` .. ``conv5``)."""
        return self.run(x, "conv1", upto)

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)

    def make_stage5(self, width_factor: float = 0.5) -> ResNetStage:
        """A fresh, randomly initialised module with ``conv5``'s structure at ``width_factor`` x its width.

        Same block type, block count and dilation; input channels = ``conv4``'s output; every
        channel count of the blocks scaled by ``width_factor`` (so the output has
        ``round(out_channels * width_factor)`` channels, e.g. 2048 -> 1024 for ResNet-101 at 0.5);
        a projection shortcut exactly when ``conv5`` has one. Returns a :class:`ResNetStage`
        whose ``out_channels`` gives its output channels. Nothing is shared with ``conv5``.
        """
        if width_factor <= 0:
            raise ValueError(f"width_factor must be > 0, got {width_factor}")
        s = self.stage5_spec
        planes = max(1, int(round(s["planes"] * width_factor)))
        stage = make_resnet_stage(s["block"], inplanes=self.stage_channels["conv4"], planes=planes,
                                  blocks=s["blocks"], stride=1, dilation=s["dilation"], projection=s["projection"])
        if not s.get("train_bn_affine", True):
            _freeze_bn_affine(stage)
        return stage

    def extra_repr(self) -> str:
        return (f"stage_channels={self.stage_channels}, output_stride={self.output_stride}, "
                f"input_format={self.input_format!r}, style={self.style!r}")


def _stage_index(name: str) -> int:
    try:
        return STAGES.index(name)
    except ValueError:
        raise ValueError(f"unknown stage {name!r} (known: {list(STAGES)})") from None


def _set_dilation(stage: nn.Sequential, dilation: int) -> None:
    """Give every block's 3x3 convolution (``conv2``) of a torchvision stage the dilation ``dilation``."""
    for block in stage:
        conv = block.conv2
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation, dilation)


def _freeze_bn_affine(module: nn.Module) -> None:
    """AdvSemiSeg's batch norm: affine parameters never trained (``requires_grad = False``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


#: ResNet-101 styles of :func:`resnet101_os8`.
RESNET_STYLES = ("torchvision", "caffe")


def resnet101_os8(weights=None, style: str = "torchvision", stride_on_1x1: bool = False, channel_order: str = "bgr",
                  **kwargs) -> ResNetBackbone:
    """DeepLabv2's ResNet-101 trunk, output stride 8 (2048 channels at ``ceil(H/8)``).

    ``weights`` goes to :func:`torchvision.models.resnet101` (``None``: random init, never a
    download; ``"IMAGENET1K_V1"`` / ``ResNet101_Weights.IMAGENET1K_V1``: ImageNet, downloaded
    or cached by torchvision). The torchvision modules are wrapped, not copied; ``fc`` and
    ``avgpool`` are dropped. ``conv4`` has dilation 2 and ``conv5`` dilation 4 in every block.

    ``style``:

    * ``"torchvision"``: torchvision's bottleneck (stride on the 3x3 convolution), input
      normalised with ImageNet's mean/std (``input_format="imagenet"``).
    * ``"caffe"``: the ResNet of DeepLab-v2's Caffe models as AdvSemiSeg's ``model/deeplab.py``
      (and the authors' ``architectures/deeplab2.py``) builds it, for checkpoints converted from
      Caffe such as Hung et al.'s MS-COCO initialisation: the stride of ``conv3`` on the 1x1
      ``conv1`` of its first bottleneck (the 3x3 has stride 1), max-pool with ``ceil_mode=True``,
      every batch-norm affine parameter frozen (``requires_grad = False``; running statistics
      follow the ``freeze_bn`` setting), input BGR in 0-255 minus :data:`CAFFE_MEAN_BGR`
      (``input_format="caffe"``). The parameter names and shapes are torchvision's, so the same
      key mapping loads both. ``weights`` must be ``None`` (load a checkpoint afterwards).

    ``stride_on_1x1`` (torchvision style): the authors' ImageNet network, torchvision's weights in
    the Caffe layout (stride on the 1x1 convolution, ceil-mode max-pool), ImageNet-normalised RGB.
    ``channel_order`` (caffe style): ``"bgr"`` as the checkpoint was trained, ``"rgb"`` as the
    authors' code feeds it.
    """
    if style not in RESNET_STYLES:
        raise ValueError(f"style must be one of {list(RESNET_STYLES)}, got {style!r}")
    if style == "caffe" and weights is not None:
        raise ValueError("style 'caffe' takes no torchvision weights (they stride on the 3x3 convolution and expect "
                         "ImageNet-normalised RGB); load a Caffe-converted checkpoint into it instead")
    # imported here: torchvision's package imports torch._dynamo (~2 s of CPU), and only the
    # ResNet-101 models need it (a smoke or CPU-scale run never does)
    from torchvision.models import resnet as tv_resnet

    net = tv_resnet.resnet101(weights=weights, replace_stride_with_dilation=[False, True, True], **kwargs)
    _set_dilation(net.layer3, 2)
    _set_dilation(net.layer4, 4)
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    if style == "caffe" or stride_on_1x1:
        first = net.layer2[0]
        first.conv1.stride, first.conv2.stride = (2, 2), (1, 1)
        net.maxpool.ceil_mode = True
    if style == "caffe":
        _freeze_bn_affine(net)
    stem = nn.Sequential(OrderedDict(conv=net.conv1, bn=net.bn1, relu=net.relu, maxpool=net.maxpool))
    channels = {"conv1": 64, "conv2": 256, "conv3": 512, "conv4": 1024, "conv5": 2048}
    spec = dict(block=tv_resnet.Bottleneck, blocks=len(net.layer4), planes=512, dilation=4,
                projection=net.layer4[0].downsample is not None, train_bn_affine=style != "caffe")
    return ResNetBackbone(stem, net.layer1, net.layer2, net.layer3, net.layer4, channels, spec,
                          input_format=("caffe" if channel_order == "bgr" else "caffe-rgb") if style == "caffe"
                          else "imagenet", style=style)


def small_resnet(widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1, 1),
                 stem_channels: int | None = None, output_stride: int = 8) -> ResNetBackbone:
    """A CPU-scale trunk with DeepLabv2's layout (``widths[3]`` channels at ``ceil(H/output_stride)``).

    ``conv1``: 7x7 conv stride 2 (``stem_channels``, default ``widths[0]``), BN, ReLU, and with
    ``output_stride=8`` a 3x3 max-pool stride 2; ``conv2``..``conv5``: ``blocks[i]``
    :class:`DilatedBasicBlock` s of width ``widths[i]`` with stride 1, 2, 1, 1 and dilation 1, 1,
    2, 4. Kaiming initialisation. ``widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)`` is a
    ResNet-18 with output stride 8.

    ``output_stride=4`` drops the max-pool (no weights change): the embedded benchmark's images
    are 8x smaller than Cityscapes' 512x1024, so at stride 8 a 2-pixel pole is a fraction of one
    feature cell; stride 4 keeps thin classes learnable at the CPU scale.
    """
    widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
    if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
        raise ValueError(f"need four positive widths and block counts (conv2..conv5), got {widths}, {blocks}")
    if output_stride not in (4, 8):
        raise ValueError(f"output_stride: must be 4 or 8, got {output_stride}")
    stem_channels = stem_channels or widths[0]
    layers = OrderedDict(
        conv=nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False),
        bn=nn.BatchNorm2d(stem_channels),
        relu=nn.ReLU(inplace=True),
    )
    if output_stride == 8:
        layers["maxpool"] = nn.MaxPool2d(3, stride=2, padding=1)
    stem = nn.Sequential(layers)
    init_resnet_weights(stem)
    stages, inplanes = [], stem_channels
    for width, n, stride, dilation in zip(widths, blocks, (1, 2, 1, 1), (1, 1, 2, 4)):
        stages.append(make_resnet_stage(DilatedBasicBlock, inplanes, width, n, stride=stride, dilation=dilation))
        inplanes = width
    channels = dict(zip(STAGES, (stem_channels, *widths)))
    spec = dict(block=DilatedBasicBlock, blocks=blocks[3], planes=widths[3], dilation=4,
                projection=stages[3][0].downsample is not None)
    return ResNetBackbone(stem, *stages, channels, spec, output_stride=output_stride)


def small_resnet_os8(widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1, 1),
                     stem_channels: int | None = None) -> ResNetBackbone:
    """:func:`small_resnet` with output stride 8, DeepLabv2's."""
    return small_resnet(widths, blocks, stem_channels, output_stride=8)
