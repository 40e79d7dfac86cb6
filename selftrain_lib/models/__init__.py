"""Networks: DeepLabv2 (f) and the multi-task wrapper with the auxiliary branch (ĝ / g̃).

Build f by name, wrap it with a branch for stages 2 and 3::

    f = build_segmenter("deeplabv2-small", num_classes=19)           # or "deeplabv2-r101", "deeplabv2-r101-caffe"
    model = MultiTaskDeepLab(f, private_blocks=2)                    # ĝ; 1 -> g̃; None -> f only
    out = model(x)                                                   # {"f": logits, "g": logits}
    opt = torch.optim.Adam(param_groups(model, lr=3e-5, backbone_lr_mult=1.0))

Registry: :data:`MODELS` maps a name to a factory ``(num_classes, **kwargs) -> DeepLabV2``;
add one with :func:`register_model`, naming the configuration keys the factory takes
(``reads=("widths", ...)``): a run builds the model with those keys' values
(:func:`config_kwargs`), and they enter its run hash (:func:`selftrain_lib.train.run_key.stage_key`).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .backbones import (STAGES, DilatedBasicBlock, ResNetBackbone, ResNetStage, make_resnet_stage,
                        resnet101_os8, small_resnet, small_resnet_os8)
from .deeplabv2 import ASPP, DeepLabV2, upsample_logits
from .multitask import BLOCKS, AuxiliaryBranch, MultiTaskDeepLab

__all__ = ["MODELS", "MODEL_READS", "register_model", "config_kwargs", "build_segmenter", "param_groups", "freeze_batchnorm",
           "set_batchnorm_eval",
           "ASPP", "DeepLabV2", "MultiTaskDeepLab", "AuxiliaryBranch", "ResNetBackbone", "ResNetStage",
           "DilatedBasicBlock", "make_resnet_stage", "resnet101_os8", "small_resnet", "small_resnet_os8", "upsample_logits",
           "STAGES", "BLOCKS"]

#: name -> factory ``(num_classes, **kwargs) -> DeepLabV2``.
MODELS: dict[str, Callable[..., DeepLabV2]] = {}
#: name -> the Config keys its factory takes as keyword arguments (``register_model(reads=...)``).
MODEL_READS: dict[str, tuple[str, ...]] = {}


def register_model(name: str, reads: tuple[str, ...] = ()):
    """Decorator: register a factory ``(num_classes, **kwargs) -> DeepLabV2`` under ``name``.

    ``reads``: the Config keys a run passes to the factory as keyword arguments, of the same name
    unless :data:`_ARGUMENTS` renames one (:func:`config_kwargs`); they are what the model reads of a configuration, so they (and
    ``model``) enter the hash of every stage run that builds it. A key the factory starts taking
    from the configuration is added here, in one line."""
    def decorator(factory: Callable[..., DeepLabV2]) -> Callable[..., DeepLabV2]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name], MODEL_READS[name] = factory, tuple(reads)
        return factory
    return decorator


# Config keys whose factory argument has another name or form (the authors' code's keys)
_ARGUMENTS = {"aspp_dilations": ("dilations", tuple), "resnet_stride": ("stride_on_1x1", lambda v: v == "1x1"),
              "caffe_channel_order": ("channel_order", str)}


def config_kwargs(config) -> dict:
    """The keyword arguments ``config`` gives the factory of ``config.model`` (its ``reads``)."""
    out = {}
    for key in MODEL_READS[config.model]:
        name, convert = _ARGUMENTS.get(key, (key, lambda v: v))
        out[name] = convert(getattr(config, key))
    return out


@register_model("deeplabv2-r101", reads=("aspp_dilations", "align_corners", "resnet_stride"))
def deeplabv2_r101(num_classes: int, weights=None, dilations=(6, 12, 18, 24), align_corners: bool = False,
                   stride_on_1x1: bool = False) -> DeepLabV2:
    """The paper's f: DeepLabv2, ResNet-101 (output stride 8), ASPP 2048 -> C.
    ``weights``: torchvision ResNet-101 weights (``None``: random init; ``"IMAGENET1K_V1"``).
    ``stride_on_1x1``: the authors' ImageNet network (stride on the 1x1 conv, ceil-mode max-pool)."""
    return DeepLabV2(resnet101_os8(weights=weights, stride_on_1x1=stride_on_1x1), num_classes, dilations,
                     align_corners)


@register_model("deeplabv2-r101-caffe",
                reads=("aspp_dilations", "align_corners", "caffe_channel_order"))
def deeplabv2_r101_caffe(num_classes: int, dilations=(6, 12, 18, 24), align_corners: bool = False,
                         channel_order: str = "bgr") -> DeepLabV2:
    """f for DeepLab-v2 checkpoints converted from Caffe (Hung et al.'s MS-COCO initialisation
    ``MS_DeepLab_resnet_pretrained_COCO_init.pth``, the paper's ImageNet+COCO pre-training):
    :func:`resnet101_os8` with ``style="caffe"`` (stride on the 1x1 convolution, ceil-mode
    max-pool, frozen batch-norm affine parameters, BGR 0-255 mean-subtracted input), ASPP 2048 -> C.
    Random initialisation; ``pretrained: <checkpoint file>`` loads the weights. ``channel_order="rgb"``
    feeds RGB as the authors' code does (their BGR flip is commented out)."""
    return DeepLabV2(resnet101_os8(style="caffe", channel_order=channel_order), num_classes, dilations, align_corners)


@register_model("deeplabv2-small", reads=("widths", "output_stride", "aspp_dilations", "align_corners"))
def deeplabv2_small(num_classes: int, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1),
                    dilations=(6, 12, 18, 24), output_stride: int = 8, align_corners: bool = False) -> DeepLabV2:
    """CPU-scale f: DeepLabv2 layout on :func:`small_resnet` (basic blocks), ASPP widths[3] -> C."""
    return DeepLabV2(small_resnet(widths=widths, blocks=blocks, output_stride=output_stride), num_classes, dilations,
                     align_corners)


def build_segmenter(name: str, num_classes: int, **kwargs) -> DeepLabV2:
    """Build the registered network ``name`` with ``num_classes`` outputs.

    ``kwargs`` go to the factory (``weights`` for ``deeplabv2-r101``; ``widths`` / ``blocks`` /
    ``output_stride`` for ``deeplabv2-small``; ``dilations`` for both). Unknown name -> ``ValueError``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (known: {sorted(MODELS)})")
    return MODELS[name](num_classes, **kwargs)


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Optimiser parameter groups: f's trunk (pre-trainable) and the new layers.

    Returns ``[{"name": "backbone", "params": conv1..conv5 of f, "lr": lr * backbone_lr_mult,
    "lr_mult": backbone_lr_mult}, {"name": "head", "params": everything else (f's ASPP, the
    branch's private blocks), "lr": lr, "lr_mult": 1.0}]``. Every parameter of ``model``
    appears exactly once (frozen ones included: optimisers skip parameters without gradients).
    ``model``: a :class:`DeepLabV2` or a :class:`MultiTaskDeepLab`.
    """
    segmenter = model if isinstance(model, DeepLabV2) else getattr(model, "segmenter", None)
    if not isinstance(segmenter, DeepLabV2):
        raise TypeError(f"expected a DeepLabV2 or a model with a .segmenter DeepLabV2, got {type(model).__name__}")
    backbone_ids = {id(p) for p in segmenter.backbone.parameters()}
    backbone = [p for p in model.parameters() if id(p) in backbone_ids]
    head = [p for p in model.parameters() if id(p) not in backbone_ids]
    return [
        {"name": "backbone", "params": backbone, "lr": lr * backbone_lr_mult, "lr_mult": float(backbone_lr_mult)},
        {"name": "head", "params": head, "lr": lr, "lr_mult": 1.0},
    ]


_BATCHNORM = nn.modules.batchnorm._BatchNorm


def _keep_eval(module: nn.Module, args) -> None:
    """Forward pre-hook of a frozen batch norm: use running statistics, never update them."""
    if getattr(module, "_selftrain_frozen", False):
        module.training = False


def freeze_batchnorm(model: nn.Module) -> None:
    """Freeze every batch-norm layer of ``model`` (paper scale, as the authors' ``freeze_bn``).

    Each layer is put in eval mode (running statistics used, never updated), its affine
    parameters get ``requires_grad = False``, and a forward pre-hook puts it back in eval mode
    before each call, so the freeze survives ``model.train()``. Copies (``copy.deepcopy``, an
    EMA teacher) stay frozen.
    """
    for m in model.modules():
        if isinstance(m, _BATCHNORM):
            m._selftrain_frozen = True
            if _keep_eval not in m._forward_pre_hooks.values():
                m.register_forward_pre_hook(_keep_eval)
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in eval mode now (e.g. after ``model.train()``)."""
    for m in model.modules():
        if isinstance(m, _BATCHNORM):
            m.eval()
