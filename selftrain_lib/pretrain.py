"""Pre-trained backbones: what every stage (and so its EMA teacher) starts from.

- ``synthetic``: the small CPU backbone pre-trained by this library on a classification task of
  synthetic textures and shapes (as ImageNet is to Cityscapes: it does not give the segmentation
  labels away). Built once, deterministically, and cached under ``<cache>/pretrain/``.
- ``imagenet``: torchvision's ImageNet weights for ResNet-101 (downloads when online).
- a path: a checkpoint loaded with ``torch.load(weights_only=True)``; missing and unexpected
  keys are listed.
- ``none``: random initialisation (training from scratch).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data.datasets import default_cache_dir
from .runs import atomic_torch_save, config_hash

PRETRAIN_FORMAT_VERSION = 1


class _Classifier(nn.Module):
    """Backbone → global average pool → linear: the pre-training network."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x).mean((2, 3)))


def synthetic_pretrain_key(widths, steps: int, seed: int, batch_size: int, num_images: int, lr: float,
                           output_stride: int = 8) -> dict:
    from .data import synthetic

    return {"model": "deeplabv2-small", "widths": list(widths), "output_stride": output_stride, "steps": steps,
            "seed": seed,
            "batch_size": batch_size, "num_images": num_images, "lr": lr,
            "data": synthetic.generator_digest(), "format": PRETRAIN_FORMAT_VERSION}


def synthetic_backbone_state(widths=(16, 32, 64, 128), steps: int = 1500, cache_dir=None, seed: int = 0,
                             batch_size: int = 64, num_images: int = 8000, lr: float = 2e-3,
                             progress: bool = True, output_stride: int = 8) -> dict[str, torch.Tensor]:
    """State dict of the small backbone after ``steps`` of synthetic texture/shape classification.

    Cached as ``<cache>/pretrain/<hash>.pt`` (written atomically) and reused; deterministic on
    the CPU for a given (widths, steps, seed).
    """
    from .data.synthetic import PRETRAIN_NUM_CLASSES, generate_pretraining_images
    from .evaluate import to_input
    from .models import build_segmenter

    key = synthetic_pretrain_key(widths, steps, seed, batch_size, num_images, lr, output_stride)
    path = default_cache_dir(cache_dir) / "pretrain" / f"{config_hash(key)}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)["backbone"]
    t0 = time.perf_counter()
    images, labels = generate_pretraining_images(num_images, seed=seed)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _Classifier(build_segmenter("deeplabv2-small", 2, widths=tuple(widths),
                                                output_stride=output_stride).backbone, PRETRAIN_NUM_CLASSES)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    net.train()
    correct = seen = 0
    bar = tqdm(range(steps), desc="pre-training the small backbone (once, cached)", disable=not progress)
    for step in bar:
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x = to_input(images[idx], "cpu")
        flip = torch.rand(batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        logits = net(x)
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - 100:  # training accuracy over the last 100 steps, for the record
            correct += int((logits.argmax(1) == labels[idx]).sum())
            seen += batch_size
    state = {k: v.detach().clone() for k, v in net.backbone.state_dict().items()}
    atomic_torch_save(path, {"backbone": state, "key": key,
                             "train_accuracy_last_100_steps": correct / max(seen, 1),
                             "seconds": time.perf_counter() - t0})
    return state


def load_checkpoint_into(module: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint (a state dict, or a dict holding one under 'model'/'state_dict')."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: checkpoint does not match the model; missing keys: {result.missing_keys[:10]}"
                         f"{' ...' if len(result.missing_keys) > 10 else ''}; unexpected keys: "
                         f"{result.unexpected_keys[:10]}{' ...' if len(result.unexpected_keys) > 10 else ''}")


def load_pretrained(segmenter: nn.Module, config) -> None:
    """Initialise ``segmenter``'s backbone as ``config.pretrained`` says (in place)."""
    p = config.pretrained
    if p == "none":
        return
    if p == "synthetic":
        state = synthetic_backbone_state(config.widths, config.pretrain_steps, config.cache_dir,
                                         output_stride=config.output_stride)
        segmenter.backbone.load_state_dict(state)
    elif p == "imagenet":
        from torchvision.models import ResNet101_Weights

        if config.model != "deeplabv2-r101":
            raise ValueError(f"pretrained: 'imagenet' weights exist for deeplabv2-r101, not {config.model}")
        from .models.backbones import resnet101_os8

        try:
            source = resnet101_os8(weights=ResNet101_Weights.IMAGENET1K_V1)
        except Exception as err:  # offline: say how to supply the file
            raise RuntimeError("pretrained: could not load torchvision's ImageNet ResNet-101 weights "
                               f"({err}). Put resnet101-63fe2227.pth in $TORCH_HOME/hub/checkpoints/ "
                               "or pass pretrained=<path to a checkpoint>.") from err
        segmenter.backbone.load_state_dict(source.state_dict())
    else:
        load_checkpoint_into(segmenter, p)
