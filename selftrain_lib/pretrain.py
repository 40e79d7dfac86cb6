"""Pre-trained backbones: what every stage (and so its EMA teacher) starts from.

- ``synthetic``: the small CPU backbone pre-trained by this library on a classification task of
  synthetic textures and shapes (as ImageNet is to Cityscapes: it does not give the segmentation
  labels away). The backbones of the shipped presets (``quick``, ``cpu``) come with the package
  (``selftrain_lib/weights/<key hash>.pt``, rebuilt by ``python -m selftrain_lib pretrain``); any
  other recipe is built once, deterministically, and cached under ``<cache>/pretrain/``.
- ``imagenet``: torchvision's ImageNet weights for ResNet-101 (downloads when online).
- a path: a checkpoint loaded with ``torch.load(weights_only=True)``: ``module.`` prefixes
  stripped, torchvision and DeepLab-v2 layouts mapped onto ours; missing, unexpected and
  mismatched keys are listed. DeepLab-v2 checkpoints converted from Caffe (Hung et al.'s MS-COCO
  initialisation) need ``model: deeplabv2-r101-caffe``; loading one into ``deeplabv2-r101`` is
  an error that says so.
- ``none``: random initialisation (training from scratch).
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import load_config
from .data.datasets import default_cache_dir
from .data.synthetic import PRETRAIN_NUM_CLASSES, generate_pretraining_images, generator_digest
from .evaluate import to_input
from .models import build_segmenter
from .optim import Adam
from .progress import tqdm
from .runs import atomic_torch_save, config_hash, file_lock, file_sha256, set_aside

PRETRAIN_FORMAT_VERSION = 1
# torch's reduction order follows its thread count, and 1,500 steps of Adam amplify the difference
# into other weights (up to 11 apart): the pre-training runs at one thread whoever builds it, so the
# same recipe gives the same bytes on any machine, and a build never oversubscribes shared cores
# (at 2 threads on 2 busy cores a step took 1.4-2.8 s, against 0.20-0.28 s at 1)
PRETRAIN_THREADS = 1
# backbones shipped with the package, named by the hash of their recipe (see weights/README.md)
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
# the presets whose synthetic backbones are shipped: a first run at these scales trains nothing hidden
SHIPPED_PRESETS = (("synth-street", "quick"), ("synth-street", "cpu"), ("synth-objects", "quick"),
                   ("synth-objects", "cpu"))


class _Classifier(nn.Module):
    """Backbone → global average pool → linear: the pre-training network."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x).mean((2, 3)))


def synthetic_backbone_state(widths=(16, 32, 64, 128), steps: int = 1500, cache_dir=None, seed: int = 0,
                             batch_size: int = 64, num_images: int = 8000, lr: float = 2e-3,
                             progress: bool = True, output_stride: int = 8) -> dict[str, torch.Tensor]:
    """State dict of the small backbone after ``steps`` of synthetic texture/shape classification.

    Read from the package when shipped (``weights/<hash>.pt``), else cached as
    ``<cache>/pretrain/<hash>.pt`` (written atomically) and reused; deterministic on the CPU for
    a given recipe (the pre-training runs at :data:`PRETRAIN_THREADS` threads).
    """
    key = backbone_key(widths, steps, seed=seed, batch_size=batch_size, num_images=num_images, lr=lr,
                       output_stride=output_stride)
    name = f"{config_hash(key)}.pt"
    shipped = _shipped_backbone(SHIPPED_DIR / name, key)
    if shipped is not None:
        return shipped
    path = default_cache_dir(cache_dir) / "pretrain" / name
    state = _cached_backbone(path)
    if state is not None:
        return state
    if progress:  # said before the lock: a wait for another process's build is then explained too
        print(f"pre-training the small backbone {name} (once, cached in {path.parent}; about "
              f"{steps * 0.25 / 60:.0f} min of one free core): recipe {key}", file=sys.stderr, flush=True)
    # one builder per backbone: processes sharing the cache (two CLI runs, cluster jobs) would
    # otherwise each build it, and at a fixed thread count apiece they can oversubscribe the cores
    # (two at 2 threads on 2 cores took 12 min here, against 80 s alone); the others wait, then read it
    with file_lock(path.with_name(path.name + ".lock"),
                   f"pre-trained backbone {path}: another process is building it; waiting for it to finish"):
        state = _cached_backbone(path)
        if state is None:
            state = _build_backbone(path, key, progress)
    return state


def backbone_key(widths=(16, 32, 64, 128), steps: int = 1500, *, seed: int = 0, batch_size: int = 64,
                 num_images: int = 8000, lr: float = 2e-3, output_stride: int = 8) -> dict:
    """The recipe of a synthetic pre-training; its hash names the backbone's file."""
    return {"model": "deeplabv2-small", "widths": list(widths), "output_stride": output_stride, "steps": steps,
            "seed": seed, "batch_size": batch_size, "num_images": num_images, "lr": lr,
            "data": generator_digest(), "format": PRETRAIN_FORMAT_VERSION}


def config_backbone_key(config) -> dict:
    """The recipe of the synthetic backbone a configuration starts from."""
    return backbone_key(config.widths, config.pretrain_steps, output_stride=config.output_stride)


def _shipped_backbone(path: Path, key: dict) -> dict[str, torch.Tensor] | None:
    """The backbone shipped at ``path``, or None when none is; a shipped file whose recipe is not
    ``key`` is an error (the package was edited by hand), not something to train around."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("key") != key:
        raise RuntimeError(f"{path}: shipped backbone's recipe {payload.get('key')} is not the one its name "
                           f"stands for ({key}); rebuild it: python -m selftrain_lib pretrain")
    return payload["backbone"]


def shipped_recipes() -> dict[str, dict]:
    """``{file name: recipe}`` of the backbones the shipped presets (:data:`SHIPPED_PRESETS`) need."""
    recipes = {}
    for dataset, scale in SHIPPED_PRESETS:
        config = load_config(dataset, scale)
        if config.pretrained == "synthetic" and config.model == "deeplabv2-small":
            key = config_backbone_key(config)
            recipes[f"{config_hash(key)}.pt"] = key
    return recipes


_RECIPE_FILE = re.compile(r"[0-9a-f]{16}\.pt")


def build_shipped(into: Path = SHIPPED_DIR, progress: bool = True, prune: bool | None = None) -> list[Path]:
    """Build the shipped backbones into ``into`` (skipping those present with the right recipe).
    ``prune`` (default: only in the package's own folder) removes the recipe-named files
    (``<16 hex digits>.pt``) that no shipped preset needs any more; nothing else is ever removed.
    Returns the files."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    recipes = shipped_recipes()
    if prune if prune is not None else into.resolve() == SHIPPED_DIR:
        for stale in sorted(into.glob("*.pt")):
            if _RECIPE_FILE.fullmatch(stale.name) and stale.name not in recipes and not stale.is_symlink():
                stale.unlink()
    paths = []
    for name, key in recipes.items():
        path = into / name
        if _cached_or_none(path, key) is None:
            _build_backbone(path, key, progress)
        paths.append(path)
    return paths


def check_shipped(into: Path = SHIPPED_DIR) -> list[str]:
    """Problems with the shipped backbones: each needed file present, holding its recipe."""
    problems = []
    for name, key in shipped_recipes().items():
        path = Path(into) / name
        if not path.is_file():
            problems.append(f"{path}: missing (recipe {key})")
        elif _cached_or_none(path, key) is None:
            problems.append(f"{path}: holds another recipe than {key}")
    return problems


def _cached_or_none(path: Path, key: dict) -> dict | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    return payload if isinstance(payload, dict) and payload.get("key") == key else None


def _cached_backbone(path: Path) -> dict[str, torch.Tensor] | None:
    """The backbone cached at ``path``, or None (absent, or damaged and set aside)."""
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)["backbone"]
        except Exception as err:  # truncated or damaged: rebuilt (it is deterministic)
            set_aside(path, "corrupt", f"unreadable cached pre-trained backbone ({type(err).__name__}: {err}); "
                                       "building it again")
    return None


def _build_backbone(path: Path, key: dict, progress: bool) -> dict[str, torch.Tensor]:
    """Pre-train the backbone ``key`` describes and write it to ``path`` atomically."""
    widths, steps, seed, lr = key["widths"], key["steps"], key["seed"], key["lr"]
    batch_size, num_images, output_stride = key["batch_size"], key["num_images"], key["output_stride"]
    t0 = time.perf_counter()
    images, labels = generate_pretraining_images(num_images, seed=seed)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _Classifier(build_segmenter("deeplabv2-small", 2, widths=tuple(widths),
                                                output_stride=output_stride).backbone, PRETRAIN_NUM_CLASSES)
    opt = Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    net.train()
    correct = seen = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        bar = tqdm(range(steps), desc="pre-training the small backbone (once)", disable=not progress)
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
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().clone() for k, v in net.backbone.state_dict().items()}
    atomic_torch_save(path, {"backbone": state, "key": key,
                             "train_accuracy_last_100_steps": correct / max(seen, 1),
                             "seconds": time.perf_counter() - t0})
    return state


IMAGENET_FILE = "resnet101-63fe2227.pth"  # torchvision's ResNet101_Weights.IMAGENET1K_V1

# Prefixes wrappers add: DataParallel / DistributedDataParallel ("module."), the MS-COCO
# initialisation of DeepLab-v2 ("Scale."), wrappers that hold the network as "model." / "net.".
_WRAPPER_PREFIXES = ("module.", "Scale.", "model.", "net.")
# Classifier heads of other tasks (ImageNet's fc, torchvision segmentation heads): dropped, reported.
_FOREIGN_HEADS = ("fc.", "classifier.", "aux_classifier.")
# torchvision ResNet's key prefixes -> ours under "backbone."
_TV_PREFIXES = {"conv1.": "conv1.conv.", "bn1.": "conv1.bn.", "layer1.": "conv2.", "layer2.": "conv3.",
                "layer3.": "conv4.", "layer4.": "conv5."}


@dataclass
class CheckpointReport:
    """What :func:`load_checkpoint_into` did: keys loaded, head kept random, keys dropped."""

    path: str
    loaded: list[str]
    dropped: list[str]          # foreign classifier heads (fc., classifier., aux_classifier.)
    head_initialised: bool      # False: the checkpoint had no usable ASPP (a backbone checkpoint)
    notes: list[str]


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):  # each prefix is one name and its dot
        key = key.partition(".")[2]
    return key


def map_checkpoint_key(key: str) -> str | None:
    """A checkpoint key in one of the common layouts -> this library's key (``None``: a foreign head).

    Layouts: this library's (``backbone.conv1.conv``, ``backbone.conv2..5``, ``aspp.convs.i``);
    torchvision ResNet (``conv1``, ``bn1``, ``layer1..4``, ``fc``); DeepLab-v2 ``Res_Deeplab``
    as in the authors' and AdvSemiSeg's code and its MS-COCO initialisation (the same plus
    ``layer5.conv2d_list.i``); torchvision segmentation models (``backbone.layer1``...).
    """
    key = _strip_wrappers(key)
    if key.startswith(("backbone.conv", "aspp.")):
        return key
    if key.startswith("backbone."):  # torchvision segmentation models: backbone.<resnet key>
        key = key[len("backbone."):]
    if key.startswith(_FOREIGN_HEADS):
        return None
    for old, new in _TV_PREFIXES.items():
        if key.startswith(old):
            return "backbone." + new + key[len(old):]
    if key.startswith("layer5.conv2d_list."):
        return "aspp.convs." + key[len("layer5.conv2d_list."):]
    return key  # unknown: reported as unexpected


CAFFE_MODEL = "deeplabv2-r101-caffe"
COCO_FILE = "MS_DeepLab_resnet_pretrained_COCO_init.pth"  # Hung et al.'s MS-COCO initialisation


def checkpoint_layout(state: dict) -> str:
    """Which network a checkpoint was written for, as far as its keys tell.

    ``"deeplab-caffe"``: DeepLab-v2's ``Res_Deeplab`` converted from Caffe (keys ``Scale.*``, as
    in ``MS_DeepLab_resnet_pretrained_COCO_init.pth``, or a ``layer5.conv2d_list`` head, as in
    AdvSemiSeg's ``resnet101COCO-*.pth``): strides on the 1x1 convolutions, Caffe input.
    ``"torchvision"``: a torchvision ResNet classifier (top-level ``layer1..4`` and ``fc``):
    strides on the 3x3 convolutions, ImageNet-normalised RGB. ``"unknown"``: anything else (this
    library's own checkpoints, whose keys do not say which ResNet-101 style wrote them).
    """
    if any(k.startswith("Scale.") or _strip_wrappers(k).startswith("layer5.conv2d_list.") for k in state):
        return "deeplab-caffe"
    plain = {_strip_wrappers(k) for k in state}
    if "fc.weight" in plain and any(k.startswith("layer4.") for k in plain):
        return "torchvision"
    return "unknown"


def check_layout(module: nn.Module, state: dict, path: str) -> None:
    """Raise when a ResNet-101 checkpoint's layout contradicts the model's style (the weights would
    load, every shape fits, and the network would silently compute something else)."""
    style = getattr(getattr(module, "backbone", None), "style", None)
    layout = checkpoint_layout(state)
    if layout == "deeplab-caffe" and style == "torchvision":
        raise ValueError(
            f"{path}: a DeepLab-v2 checkpoint converted from Caffe (keys 'Scale.*' or 'layer5.conv2d_list.*', e.g. "
            f"Hung et al.'s MS-COCO initialisation {COCO_FILE}): its ResNet strides on the 1x1 convolutions and "
            f"expects BGR input in 0-255 minus the Caffe mean. Set model: {CAFFE_MODEL} (not deeplabv2-r101).")
    if layout == "torchvision" and style == "caffe":
        raise ValueError(
            f"{path}: torchvision ResNet weights (keys 'layer1..4.*' and 'fc.*') stride on the 3x3 convolutions and "
            f"expect ImageNet-normalised RGB input. Set model: deeplabv2-r101 ({CAFFE_MODEL} is for checkpoints "
            f"converted from Caffe, such as {COCO_FILE}).")


def pretraining_of(config) -> str:
    """A run's pre-training as the paper's tables name it: ``"imagenet+mscoco"`` (a checkpoint
    loaded into ``deeplabv2-r101-caffe``: the MS-COCO initialisation, the one Caffe checkpoint the
    paper uses), ``"imagenet"``, or ``"synthetic"`` / ``"none"`` / ``"checkpoint"`` (another file)."""
    p = config.pretrained
    if p in ("imagenet", "synthetic", "none"):
        return p
    return "imagenet+mscoco" if config.model == CAFFE_MODEL else "checkpoint"


def _list(keys: list[str], n: int = 10) -> str:
    return f"{keys[:n]}{f' (and {len(keys) - n} more)' if len(keys) > n else ''}"


def load_state_into(module: nn.Module, state: dict, path: str = "checkpoint") -> CheckpointReport:
    """Load ``state`` (any layout :func:`map_checkpoint_key` knows) into a DeepLabV2 ``module``.

    The backbone must match exactly (every key present, same shapes; ``num_batches_tracked``
    may be absent, as in checkpoints converted from Caffe). The ASPP head is loaded when the
    checkpoint has all of it with our shapes, else it keeps its random initialisation (a backbone
    checkpoint, or another number of classes) and the report says so. Anything else is an error
    listing the missing, unexpected and mismatched keys; so is a checkpoint whose layout names the
    other ResNet-101 style (:func:`check_layout`: a Caffe DeepLab-v2 checkpoint into
    ``deeplabv2-r101``, torchvision weights into ``deeplabv2-r101-caffe``).
    """
    check_layout(module, state, path)
    own = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    dropped, unexpected, mismatched = [], [], []
    for key, value in state.items():
        new = map_checkpoint_key(key)
        if new is None:
            dropped.append(key)
        elif new not in own:
            unexpected.append(key)
        elif own[new].shape != value.shape and not new.startswith("aspp."):
            mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[new].shape)}")
        else:
            mapped[new] = value
    missing = [k for k in own if not k.startswith("aspp.") and k not in mapped
               and not k.endswith("num_batches_tracked")]
    if missing or unexpected or mismatched:
        raise ValueError(f"{path}: checkpoint does not match the model; unexpected keys: {_list(unexpected)}; "
                         f"missing keys: {_list(missing)}; shape mismatches: {_list(mismatched, 5)}")
    notes = []
    head = [k for k in own if k.startswith("aspp.")]
    head_ok = all(k in mapped and mapped[k].shape == own[k].shape for k in head)
    if not head_ok:
        present = [k for k in head if k in mapped]
        notes.append("the ASPP head keeps its random initialisation: "
                     + ("the checkpoint has none" if not present else
                        f"the checkpoint's head does not fit ({_list([f'{k}: {tuple(mapped[k].shape)}' for k in present], 2)})"))
        mapped = {k: v for k, v in mapped.items() if not k.startswith("aspp.")}
    if dropped:
        notes.append(f"dropped the checkpoint's classifier keys {_list(dropped, 4)}")
    module.load_state_dict(mapped, strict=False)
    return CheckpointReport(path=str(path), loaded=sorted(mapped), dropped=dropped, head_initialised=head_ok,
                            notes=notes)


def load_checkpoint_into(module: nn.Module, path: str | Path) -> CheckpointReport:
    """Load a local checkpoint (``torch.load(weights_only=True)``) into a DeepLabV2 ``module``.

    Accepts a state dict or a dict holding one under ``model`` / ``state_dict``; strips
    ``module.`` (DataParallel) and ``Scale.`` (DeepLab-v2 MS-COCO init) prefixes and maps the
    torchvision ResNet and DeepLab-v2 layouts onto ours (see :func:`map_checkpoint_key`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: no checkpoint file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a text file, a pickle of other objects, a truncated download...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"pretrained: {path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                         f"{first[:200]})") from err
    for key in ("model", "state_dict", "model_state_dict", "state"):  # the state dict a wrapper holds
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained: {path}: expected a state dict (or a dict holding one under 'model' or "
                         "'state_dict')")
    return load_state_into(module, state, str(path))


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-101 weights (downloaded once, then read from torch's cache)."""
    from torchvision.models import ResNet101_Weights  # torchvision's package imports torch._dynamo (~2 s)

    try:
        return ResNet101_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as err:  # offline, a proxy, a truncated file: say how to supply the file
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"pretrained: could not load torchvision's ImageNet ResNet-101 weights ({type(err).__name__}: {err}). "
            f"Without a network, download {ResNet101_Weights.IMAGENET1K_V1.url} elsewhere and put it at "
            f"{hub / IMAGENET_FILE} (the folder follows $TORCH_HOME), or pass pretrained=<path to a checkpoint> "
            f"(a torchvision or DeepLab-v2 ResNet-101 state dict).") from err


def synthetic_state(config, progress: bool = True) -> dict[str, torch.Tensor]:
    """The small backbone pre-trained as ``config`` asks (built once, then read from the cache;
    ``progress``: its message and bar while it is built)."""
    return synthetic_backbone_state(config.widths, config.pretrain_steps, config.cache_dir,
                                    output_stride=config.output_stride, progress=progress)


def pretrained_key(config) -> dict:
    """What the initialisation reads of ``config``, for its run hash (:func:`selftrain_lib.train.run_key.stage_key`):
    ``pretrained`` (a checkpoint file by the digest of its bytes, the synthetic backbone by the hash of
    its recipe: :func:`config_backbone_key`) and ``pretrain_steps`` where the synthetic pre-training reads it."""
    p = config.pretrained
    if p == "synthetic":
        return {"pretrained": f"synthetic:{config_hash(config_backbone_key(config))}",
                "pretrain_steps": config.pretrain_steps}
    return {"pretrained": p if p in ("imagenet", "none") else file_sha256(p)}


def load_pretrained(segmenter: nn.Module, config, progress: bool = True) -> None:
    """Initialise ``segmenter``'s backbone as ``config.pretrained`` says (in place; ``progress``: the
    synthetic pre-training's message and bar, should it be built now)."""
    p = config.pretrained
    if p == "none":
        return
    if p == "synthetic":
        segmenter.backbone.load_state_dict(synthetic_state(config, progress))
    elif p == "imagenet":
        if config.model != "deeplabv2-r101":
            raise ValueError(f"pretrained: 'imagenet' weights exist for deeplabv2-r101, not {config.model}"
                             + (f" (which takes a Caffe-converted checkpoint file such as {COCO_FILE})"
                                if config.model == CAFFE_MODEL else ""))
        load_state_into(segmenter, imagenet_state_dict(), "torchvision ImageNet ResNet-101")
    else:
        load_checkpoint_into(segmenter, p)
