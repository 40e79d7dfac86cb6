"""One stage of the method: ``run_stage(config, stage, pseudo_masks)``.

Stage 1 minimises L_seg on L. Stage k >= 2 minimises ``L_seg + λ1 L_con + λ2 L_pl`` with the
pseudo-masks of stage k-1, the network f re-initialised from pre-training and, with T2, an
auxiliary branch (ĝ in stage 2, g~ from stage 3 on). Each stage ends by writing the argmax of
f on every image of L∪U as the next stage's pseudo-masks.

Everything random in a step is drawn from generators seeded by (seed, stage, step), so a run
resumed from a checkpoint computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from .progress import tqdm

from .augment import WeakAugment
from .config import Config, make_config, resolved_dict, stage_key
from .data import SegmentationData, TrainingView, hidden_truth, load_data, make_split, read_split, training_view, write_split
from .distributed import SINGLE, World, average_buffers, current, unwrap
from .ema import EMATeacher
from .evaluate import PROTOCOL, evaluate, evaluate_masks, predict, to_input
from .methods import METHODS, Method, build as build_method
from .precision import Precision, resolve_precision
from .models import MultiTaskDeepLab, build_segmenter, freeze_batchnorm, param_groups, set_batchnorm_eval
from .runs import (atomic_savez, atomic_torch_save, atomic_write_json, atomic_write_text, clean_interrupted_writes,
                   config_hash, finished_run_problem, read_json, read_mask_pngs, run_lock, set_aside, write_csv,
                   write_labelled_ids, write_mask_pngs)

# Bump when a change to the training code changes what a run computes: old cached runs are then
# not reused.
RUN_FORMAT_VERSION = 1
CURVE_COLUMNS = ("step", "loss", "loss_seg", "loss_con", "loss_pl", "ema_decay", "val_miou", "val_miou_student",
                 "val_miou_teacher", "conf_rate")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, e.g. ``derive_seed(seed, stage, "aug", step)``."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (``config.device``) asks for; a GPU that is not there is an error
    naming the key, before anything trains."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: {name!r} is not a torch device ({err})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device: {name!r} asks for a GPU, but torch finds no CUDA device here (use 'cpu' or 'auto')")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device: {name!r} does not exist; this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    return device


# ------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PseudoMasks:
    """The pseudo-masks a stage wrote (uint8 PNG per pool image) and the run that made them."""

    directory: Path
    source_hash: str
    stage: int

    def load(self, ids: list[str]) -> Tensor:
        """uint8 (N, H, W) in the order of ``ids``."""
        return read_mask_pngs(self.directory, ids)


@dataclass
class StageResult:
    """What a finished stage run left in ``run_dir`` (see :mod:`selftrain_lib.runs`)."""

    stage: int
    run_dir: Path
    run_hash: str
    metrics: dict[str, Any]
    reused: bool = False

    @property
    def val_miou(self) -> float:
        return self.metrics["val"]["miou"]

    @property
    def eval_model(self) -> str:
        """The network behind :attr:`val_miou` and the pseudo-masks: ``"student"`` or ``"teacher"``."""
        return self.metrics.get("eval_model", "student")

    @property
    def val_miou_student(self) -> float:
        """Validation mIoU of the student f_θ (runs cached before it was recorded: :attr:`val_miou`)."""
        return (self.metrics.get("val_student") or self.metrics["val"])["miou"]

    @property
    def val_miou_teacher(self) -> float | None:
        """Validation mIoU of the EMA teacher f_θ' (None where the stage has none: Stage 1, no EMA)."""
        teacher = self.metrics.get("val_teacher")
        return None if teacher is None else teacher["miou"]

    @property
    def pseudo_miou(self) -> float:
        """mIoU of this stage's pseudo-masks on U against U's hidden ground truth (NaN when U is empty)."""
        miou = self.metrics["pseudo_masks_unlabelled"]["miou"]
        return float("nan") if miou is None else miou

    @property
    def pseudo_masks(self) -> PseudoMasks:
        return PseudoMasks(self.run_dir / "pseudo_masks", self.run_hash, self.stage)

    @property
    def config(self) -> Config:
        return make_config(read_json(self.run_dir / "config.json")["config"])

    def curves(self):
        """The training curves as a pandas DataFrame (one row per logging interval)."""
        import pandas as pd

        return pd.read_csv(self.run_dir / "curves.csv")

    def load_model(self, device: str = "cpu") -> nn.Module:
        """The trained f (a DeepLabV2) in eval mode."""
        cfg = self.config
        net = build_segmenter(cfg.model, self.metrics["num_classes"], **_model_kwargs(cfg))
        net.load_state_dict(torch.load(self.run_dir / "model.pt", map_location=device, weights_only=True))
        return net.to(device).eval()

    def summary(self) -> dict[str, Any]:
        return {"stage": self.stage, "val_miou": self.val_miou, "eval_model": self.eval_model,
                "val_miou_student": self.val_miou_student, "val_miou_teacher": self.val_miou_teacher,
                "pseudo_miou": self.pseudo_miou, "run_dir": str(self.run_dir), "reused": self.reused}

    @classmethod
    def load(cls, run_dir: Path, reused: bool = True) -> "StageResult":
        metrics = read_json(run_dir / "metrics.json")
        return cls(stage=metrics["stage"], run_dir=run_dir, run_hash=run_dir.name, metrics=metrics, reused=reused)


# ------------------------------------------------------------------------------------------
# models of each stage
# ------------------------------------------------------------------------------------------

def _model_kwargs(config: Config) -> dict[str, Any]:
    if config.model == "deeplabv2-small":
        return {"widths": tuple(config.widths), "output_stride": config.output_stride}
    return {}


def private_blocks(config: Config, stage: int) -> int | None:
    """How many of f's last blocks the auxiliary branch owns: None in stage 1 and without T2,
    2 (ĝ) in stage 2, 1 (g~) from stage 3 on, or 2 again without N2."""
    if stage == 1 or not config.t2:
        return None
    return 2 if stage == 2 or not config.n2 else 1


def build_stage_model(config: Config, stage: int, num_classes: int) -> MultiTaskDeepLab:
    """f initialised from pre-training (new layers from a (seed, stage) generator) plus the
    stage's branch. Called afresh each stage: θ is re-initialised, as Algorithm 1 says."""
    from .pretrain import load_pretrained

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, stage, "init"))
        segmenter = build_segmenter(config.model, num_classes, **_model_kwargs(config))
        load_pretrained(segmenter, config)
        model = MultiTaskDeepLab(segmenter, private_blocks(config, stage))
    if config.freeze_bn:
        freeze_batchnorm(model)
    return model


# ------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------

class EpochSampler:
    """Indices ``0..size-1`` in a fresh permutation each epoch, ``per_step`` at a time.

    ``indices(step)`` is a pure function of ``(parts, step)``: no state to save for resume.
    """

    def __init__(self, size: int, per_step: int, *parts: Any):
        self.size, self.per_step, self.parts = size, per_step, parts
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.size, generator=generator(*self.parts, epoch))
        return self._cache[epoch]

    def indices(self, step: int) -> Tensor:
        pos = torch.arange(step * self.per_step, (step + 1) * self.per_step)
        return torch.stack([self._perm(int(p) // self.size)[int(p) % self.size] for p in pos])


@dataclass
class StepBatch:
    """One step's data on the device. Sub-batch 1 (from L∪U) first, then Sub-batch 2 (from L).

    images: (B, 3, h, w) float in [0, 1], strong augmentation already applied to Sub-batch 1.
    labels: (B2, h, w) int64, ground truth of Sub-batch 2.
    pseudo: (B, h, w) int64 pseudo-masks moved by B, or None in stage 1.
    clean: (B, 3, h, w) images before strong augmentation (the teacher's input), or None.
    valid, boxes: only for the mean teacher baselines (see ``BatchSource._baseline_batch``).
    """

    images: Tensor
    labels: Tensor
    pseudo: Tensor | None = None
    clean: Tensor | None = None
    aug: Any = None  # StrongAugment params of Sub-batch 1, to move the teacher's targets
    valid: Tensor | None = None  # (B1, h, w) bool: pixels of Sub-batch 1 inside the source image
    boxes: Tensor | None = None  # (B1, 4) int64: the baseline's Cutout / CutMix boxes


class SubBatchDraws:
    """What every batch source shares: the sub-batch sizes of a stage, the samplers of L and of
    L∪U, weak and strong augmentation, and the rank's place among the training processes."""

    def __init__(self, config: Config, stage: int, device: torch.device, world: World, pool_size: int,
                 num_labelled: int, ignore_index: int):
        self.config, self.stage, self.device = config, stage, device
        self.world = world  # rank r of N draws what one process would draw at global step step * N + r
        self.method = build_method(config, stage)
        self.box_masks = self.method.boxes  # the mean teacher baselines' hook (None otherwise)
        self.strong = self.method.strong
        n_lab = config.labelled_per_batch if self.method.pool else config.batch_size
        self.n_pool = config.batch_size - config.labelled_per_batch if self.method.pool else 0
        self.labelled = EpochSampler(num_labelled, n_lab, config.seed, stage, "L")
        self.pool = EpochSampler(pool_size, max(self.n_pool, 1), config.seed, stage, "LuU")
        self.weak = WeakAugment(tuple(config.crop_size), tuple(config.scale_range), config.flip,
                                ignore_index=ignore_index)

    def global_step(self, step: int) -> int:
        return step * self.world.size + self.world.rank


class BatchSource(SubBatchDraws):
    """Draws the sub-batches of each step from a :class:`TrainingView` (never U's ground truth)."""

    def __init__(self, view: TrainingView, pseudo: Tensor | None, config: Config, stage: int, device: torch.device,
                 world: World = SINGLE):
        super().__init__(config, stage, device, world, view.images.shape[0], len(view.labelled), view.ignore_index)
        self.view, self.pseudo = view, pseudo

    def _masks(self, m: Tensor) -> Tensor:
        return m.to(self.device).long()

    def __call__(self, step: int) -> StepBatch:
        step = self.global_step(step)
        g = generator(self.config.seed, self.stage, "aug", step)
        pos = self.labelled.indices(step)
        x2 = to_input(self.view.images[self.view.labelled[pos]], self.device)
        masks2 = [self._masks(self.view.labelled_masks[pos])]
        if self.pseudo is not None:
            masks2.append(self._masks(self.pseudo[self.view.labelled[pos]]))
        x2, masks2 = self.weak(x2, masks2, g)
        if self.stage == 1:
            if self.box_masks is not None:
                return self._baseline_batch(step, g, x2, masks2[0])
            return StepBatch(images=x2, labels=masks2[0])
        idx = self.pool.indices(step)[: self.n_pool]
        x1 = to_input(self.view.images[idx], self.device)
        x1, (p1,) = self.weak(x1, [self._masks(self.pseudo[idx])], g)
        params = self.strong.sample(x1.shape[0], x1.shape[2], x1.shape[3], g)
        x1_aug = self.strong.apply_image(x1, params)
        p1 = self.strong.apply_mask(p1, params)
        return StepBatch(images=torch.cat([x1_aug, x2]), labels=masks2[0], pseudo=torch.cat([p1, masks2[1]]),
                         clean=torch.cat([x1, x2]), aug=params)

    # --- the hook of the mean teacher baselines (selftrain_lib/methods/mean_teacher.py) -----
    def _baseline_batch(self, step: int, g: torch.Generator, x2: Tensor, y2: Tensor) -> StepBatch:
        """Sub-batch 1 from L∪U with weak augmentation only (no A/B, no pseudo-masks), the mask of
        its pixels that come from inside the image, and the baseline's boxes, drawn from ``g``."""
        idx = self.pool.indices(step)[: self.n_pool]
        x1 = to_input(self.view.images[idx], self.device)
        inside = torch.zeros(x1.shape[0], x1.shape[2], x1.shape[3], dtype=torch.long, device=self.device)
        x1, (inside,) = self.weak(x1, [inside], g)  # padding becomes the ignore value
        boxes = self.box_masks.sample(x1.shape[0], x1.shape[2], x1.shape[3], g)
        return StepBatch(images=torch.cat([x1, x2]), labels=y2, valid=inside != self.view.ignore_index,
                         boxes=boxes.to(self.device))


# ------------------------------------------------------------------------------------------
# the step
# ------------------------------------------------------------------------------------------

def compute_losses(method: Method, model: MultiTaskDeepLab, teacher: EMATeacher | None, batch: StepBatch,
                   ignore_index: int) -> dict[str, Tensor]:
    """Forward pass and losses of one step: ``method``'s (:meth:`selftrain_lib.methods.Method.losses`)."""
    return method.losses(model, teacher, batch, ignore_index)


def train_step(model: MultiTaskDeepLab, teacher: EMATeacher | None, optimizer: torch.optim.Optimizer,
               batch: StepBatch, method: Method, ignore_index: int, ema_decay_now: float,
               precision: Precision | None = None, scaler: torch.amp.GradScaler | None = None) -> dict[str, Tensor]:
    """One optimiser step and the teacher's EMA update; returns the (undetached) losses.
    ``model`` may be wrapped in ``DistributedDataParallel`` (the gradients are then averaged over ranks).

    ``precision``: the forward pass runs under its autocast (None: fp32); ``scaler`` scales the
    loss for fp16 (see :mod:`selftrain_lib.precision`).
    """
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        losses = compute_losses(method, model, teacher, batch, ignore_index)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        losses["loss"].backward()
        optimizer.step()
    average_buffers(model)  # several ranks: the same batch-norm statistics everywhere (else a no-op)
    if teacher is not None:
        teacher.update(unwrap(model).segmenter, ema_decay_now)
    return losses


# ------------------------------------------------------------------------------------------
# run_stage
# ------------------------------------------------------------------------------------------

@dataclass
class StageParts:
    """Everything a stage's loop needs, built from plain configuration."""

    model: MultiTaskDeepLab
    teacher: EMATeacher | None
    optimizer: torch.optim.Optimizer
    batches: BatchSource
    method: Method  # the batch it needs, its teacher's decays, its losses (selftrain_lib.methods)
    steps: int
    precision: Precision | None = None  # autocast of the forward pass (None: fp32)
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling
    world: World = SINGLE  # the training processes (selftrain_lib.distributed)
    trained: nn.Module | None = None  # what the step calls: ``model``, wrapped in DDP and/or torch.compile

    def ema_decay(self, step: int) -> float:
        """The teacher's EMA decay at ``step``, a pure function of the step."""
        return self.method.ema_decay(step)


def build_stage_parts(config: Config, stage: int, view: TrainingView, pseudo: Tensor | None, num_classes: int,
                      device: torch.device, world: World = SINGLE) -> StageParts:
    precision = resolve_precision(config.precision, device)
    model = build_stage_model(config, stage, num_classes)
    if config.sync_bn and world.enabled:
        if device.type != "cuda":
            raise ValueError("sync_bn: synchronised batch-norm needs CUDA (NCCL); on the CPU it stays per rank")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if device.type == "cuda":  # NHWC convolutions are the fast path of cuDNN's tensor cores
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(param_groups(model, config.lr, config.backbone_lr_mult), lr=config.lr,
                                 weight_decay=config.weight_decay)
    if isinstance(view, TrainingView):
        batches = BatchSource(view, pseudo, config, stage, device, world)
    else:  # a dataset read from files: per-sample crops (stage_files.py); ``pseudo`` is the PNG folder
        from .stage_files import FileBatchSource

        batches = FileBatchSource(view, pseudo, config, stage, device, world)
    method = batches.method
    teacher = method.teacher(model.segmenter)
    teacher = teacher.to(device) if teacher is not None else None
    trained = model
    if world.enabled:  # same initial weights on every rank (seeded by (seed, stage)): DDP checks it
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                      broadcast_buffers=False)  # train_step averages them instead
    if config.compile:
        trained = torch.compile(trained)
    return StageParts(model=model, teacher=teacher, optimizer=optimizer, batches=batches, method=method,
                      steps=method.steps, precision=precision, scaler=precision.grad_scaler(), world=world,
                      trained=trained)


def stage_run_key(config: Config, stage: int, pseudo_masks: PseudoMasks | None,
                  world_size: int = 1) -> dict[str, Any]:
    """What identifies a stage run: its configuration, the run its pseudo-masks came from, and the
    number of data-parallel processes when more than one (they multiply the batch).

    Inputs named by a path enter by content: ``split_file`` as the digest of its ids, a
    ``pretrained`` checkpoint file as the digest of its bytes, a dataset read from files as the
    fingerprint of its files (:func:`selftrain_lib.data.data_fingerprint`). The source digest of
    the generator (data/synthetic.py) enters the runs that use its output only: the generated
    datasets, and runs starting from the synthetic pre-training."""
    from .data import dataset_info
    from .data.synthetic import generator_digest
    from .runs import file_sha256, id_list_digest, split_file_ids

    config_key = stage_key(config, stage)
    if config.split_file is not None:
        config_key["split_file"] = id_list_digest(split_file_ids(config.split_file))
    if config.pretrained not in ("synthetic", "imagenet", "none"):
        config_key["pretrained"] = file_sha256(config.pretrained)
    if dataset_info(config.dataset).format == "synthetic":
        data: Any = generator_digest()  # as before: the generated datasets' run hashes are pinned
    else:
        from .data import data_fingerprint

        data = {"files": data_fingerprint(config)}
        if config.pretrained == "synthetic":
            data["generator"] = generator_digest()
    key = {"stage": stage, "config": config_key, "format": RUN_FORMAT_VERSION,
           "data": data, "pseudo_masks_from": pseudo_masks.source_hash if pseudo_masks is not None else None}
    if world_size > 1:
        key["world_size"] = world_size
    return key


def select_split(config: Config, data: SegmentationData, out: Path):
    """The labelled set: from ``split_file`` when given, else drawn from ``seed``; written out
    as ``<out>/splits/<dataset>_<labels>_seed<seed>.txt``."""
    if config.split_file:
        return read_split(config.split_file, data.train_ids)
    split = make_split(data.pool_size, config.labels, config.seed)
    write_split(out / "splits" / f"{config.dataset}_{config.labels}_seed{config.seed}.txt", split, data.train_ids)
    return split


def run_stage(config: Config, stage: int, pseudo_masks: PseudoMasks | None = None, *,
              out: str | Path = "runs", progress: bool = True, data: SegmentationData | None = None) -> StageResult:
    """Train one stage, or reuse the finished run with the same hash, or resume an interrupted one.

    Args:
        config: the resolved configuration.
        stage: 1, 2, 3, ... (stage k >= 3 repeats stage 3 with stage k-1's pseudo-masks).
        pseudo_masks: the previous stage's :class:`PseudoMasks` (required for stage >= 2).
        out: the run cache folder; this run lives in ``out/<hash>/``.
        progress: show a tqdm bar.
        data: an already loaded dataset (else loaded from ``config``).
    """
    if stage < 1:
        raise ValueError(f"stage: must be >= 1, got {stage}")
    if stage >= 2 and METHODS[config.method].single_stage:
        raise ValueError(f"method {config.method!r} is a single-stage run: stage must be 1, got {stage}")
    if stage >= 2 and pseudo_masks is None:
        raise ValueError(f"stage {stage} needs the pseudo-masks of stage {stage - 1}")
    out = Path(out)
    world = current()  # one process, or this rank of a torchrun job (selftrain_lib.distributed)
    key = stage_run_key(config, stage, pseudo_masks if stage >= 2 else None, world.size)
    run_hash = config_hash(key)
    run_dir = out / run_hash
    if _reusable(run_dir):
        return StageResult.load(run_dir, reused=True)
    # rank 0 alone takes the lock: the other ranks of a torchrun job train the same run with it
    with run_lock(run_dir, f"stage {stage} run") if world.is_main else contextlib.nullcontext():
        if _reusable(run_dir):  # another process finished it while this one waited
            return StageResult.load(run_dir, reused=True)
        try:
            return _train_stage(config, stage, pseudo_masks, out, progress, data, world, key, run_hash, run_dir)
        except Exception as err:  # an error, not an interruption (KeyboardInterrupt, a kill): resumable runs stay
            if world.is_main:
                _after_failure(run_dir, err)
            raise


def _after_failure(run_dir: Path, err: Exception) -> None:
    """A run that failed leaves no folder that looks like an interrupted run: without a checkpoint
    (nothing to resume) the folder goes; with one, ``error.txt`` says why it stopped."""
    if (run_dir / "checkpoint.pt").is_file():
        atomic_write_text(run_dir / ERROR_FILE, f"{type(err).__name__}: {err}\n")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


def _reusable(run_dir: Path) -> bool:
    """The run in ``run_dir`` is finished and complete. A finished run whose folder is incomplete
    (e.g. pseudo-masks missing) has its ``metrics.json`` set aside, so that it trains again."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    problem = finished_run_problem(run_dir)
    if problem is None:
        return True
    set_aside(metrics, "incomplete", f"the run is not complete ({problem}); training it again")
    return False


ERROR_FILE = "error.txt"
CHECKPOINT_KEYS = ("step", "model", "optimizer", "teacher", "rows", "sums", "elapsed")


def _read_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run, or None: none there, or unreadable (a truncated file,
    a disk that filled up), which is then set aside and the stage starts again."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
        if missing:
            raise KeyError(f"no {missing}")
        return ckpt
    except Exception as err:  # torch.load raises EOFError, RuntimeError, UnpicklingError... on a bad file
        set_aside(path, "corrupt", f"unreadable checkpoint ({type(err).__name__}: {err}); starting the stage again")
        return None


class NonFiniteLossError(FloatingPointError):
    """The loss of a run became inf or NaN: the run stops, is not cached, feeds no later stage."""


def _check_finite(losses: dict[str, Any], stage: int, first: int, last: int, run_dir: Path) -> None:
    """Raise :class:`NonFiniteLossError` when a loss (mean or sum over steps ``first+1..last``) is not
    finite. Called on the sums accumulated on the device, at each logging interval and checkpoint
    only: one host sync per interval (which the curves need anyway), none per step."""
    bad = {k: v for k, v in losses.items() if k.startswith("loss") and not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"stage {stage} run {run_dir}: the loss became non-finite "
            f"{f'at step {last}' if first + 1 == last else f'between steps {first + 1} and {last}'} "
            f"({', '.join(f'{k}={v}' for k, v in sorted(bad.items()))}); the run is stopped and not cached. "
            "Lower lr, the loss weights (lambda1, lambda2, cons_weight) or use precision=fp32")


def _train_stage(config: Config, stage: int, pseudo_masks: PseudoMasks | None, out: Path, progress: bool,
                 data: SegmentationData | None, world: World, key: dict[str, Any], run_hash: str,
                 run_dir: Path) -> StageResult:
    """The body of :func:`run_stage` once this process holds the run (resumes from its checkpoint)."""
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        clean_interrupted_writes(run_dir)  # this process holds the run: no write of another is under way
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        atomic_write_json(run_dir / "config.json", {"stage": stage, "run_hash": run_hash, "key": key,
                                                    "config": resolved_dict(config)})
    world.barrier()
    progress = progress and world.is_main
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
    data = data if data is not None else load_data(config)
    if not isinstance(data, SegmentationData):  # files: a bad one is found now, not after a stage
        from .data import check_files_once

        check_files_once(config, data, progress)
    split = select_split(config, data, out)
    if world.is_main:  # the labelled set as it was when this run trained (the split file may change later)
        write_labelled_ids(run_dir, data.train_ids, split.labelled.tolist())
    view = training_view(data, split)
    in_memory = isinstance(data, SegmentationData)  # else read from files, image by image (stage_files.py)
    if stage < 2:
        pseudo = None
    else:
        pseudo = pseudo_masks.load(data.train_ids) if in_memory else pseudo_masks.directory

    parts = build_stage_parts(config, stage, view, pseudo, data.info.num_classes, device, world)
    model, teacher, optimizer, batches = parts.model, parts.teacher, parts.optimizer, parts.batches
    steps, info = parts.steps, data.info

    start, rows, elapsed = 0, [], 0.0
    sums: dict[str, Tensor] = {}  # loss sums since the last logged row
    ckpt_path = run_dir / "checkpoint.pt"
    ckpt = _read_checkpoint(ckpt_path, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if teacher is not None:
            teacher.load_state_dict(ckpt["teacher"])
        if parts.scaler is not None and ckpt.get("scaler"):
            parts.scaler.load_state_dict(ckpt["scaler"])
        start, rows, elapsed = ckpt["step"], ckpt["rows"], ckpt["elapsed"]
        sums = {k: v.to(device) for k, v in ckpt["sums"].items()}

    def validate(net: nn.Module, progress: bool = False):
        """Scores of ``net`` (a segmenter) on the validation set."""
        if not in_memory:
            from .stage_files import evaluate_files

            return evaluate_files(net, data.val, info.num_classes, info.ignore_index, device, progress)
        return evaluate(net, data.val_images, data.val_masks, info.num_classes, info.ignore_index,
                        config.eval_batch_size, device, progress=progress)

    nets = evaluated_networks(model, teacher)
    evaluated = config.eval_model if config.eval_model in nets else "student"

    model.train()
    if config.freeze_bn:
        set_batchnorm_eval(model)
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=f"stage {stage}", disable=not progress, dynamic_ncols=True)
    for step in range(start, steps):
        decay = parts.ema_decay(step)
        losses = train_step(parts.trained, teacher, optimizer, batches(step), parts.method, info.ignore_index, decay,
                            parts.precision, parts.scaler)
        for k, v in losses.items():  # stays on the device: no host sync inside the step
            sums[k] = sums.get(k, 0) + v.detach()
        done = step + 1
        if done % config.log_every == 0 or done == steps:
            n = (done - 1) % config.log_every + 1
            row = {"step": done, "ema_decay": decay if teacher is not None else ""}
            row.update({k: float(v) / n for k, v in world.mean(sums).items()})  # mean over ranks
            _check_finite(row, stage, done - n, done, run_dir)
            if (done % config.eval_every == 0 or done == steps) and world.is_main:  # rank 0 writes the curves
                for name, net in nets.items():
                    row[f"val_miou_{name}"] = validate(net).miou
                row["val_miou"] = row[f"val_miou_{evaluated}"]
            rows.append(row)
            sums = {}
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "val_miou") if k in row})
        bar.update(1)
        if done % config.checkpoint_every == 0 and done < steps and sums:  # same test on every rank
            # a checkpoint never holds weights trained past a non-finite loss (one sync per checkpoint)
            _check_finite({k: float(v) for k, v in world.mean(sums).items()}, stage,
                          done - (done - 1) % config.log_every - 1, done, run_dir)
        # and at the last step: a kill during the final pseudo-mask pass then resumes there
        if (done % config.checkpoint_every == 0 or done == steps) and world.is_main:
            atomic_torch_save(ckpt_path, {"step": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          "teacher": teacher.state_dict() if teacher is not None else None,
                                          "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
                                          "rows": rows, "sums": sums, "elapsed": elapsed + time.perf_counter() - t0})
    bar.close()
    train_time = elapsed + time.perf_counter() - t0
    # the network not evaluated is scored too (rank 0), so every metrics.json has both
    other_vals = {name: validate(net) for name, net in nets.items() if name != evaluated} if world.is_main else {}
    if not in_memory:
        from .stage_files import finish_file_stage

        result = finish_file_stage(nets[evaluated], config, stage, run_dir, run_hash, data, split, rows, train_time,
                                   device, progress, pseudo_masks, world, evaluated, other_vals)
    else:
        result = _finish_stage(nets[evaluated], config, stage, run_dir, run_hash, data, split, rows, train_time, device,
                               progress, pseudo_masks, world, evaluated, other_vals)
    world.barrier()  # rank 0 has written the run: the others read it back
    return result if world.is_main else StageResult.load(run_dir, reused=False)


def evaluated_networks(model: MultiTaskDeepLab, teacher: EMATeacher | None) -> dict[str, nn.Module]:
    """The networks a stage can report: ``{"student": f_θ, "teacher": f_θ'}``; no ``"teacher"`` where
    the stage has no EMA teacher of its own (Stage 1, the Γ-model without EMA)."""
    nets = {"student": model.segmenter}
    if teacher is not None and teacher.use_ema:
        nets["teacher"] = teacher.module
    return nets


def _finish_stage(f, config, stage, run_dir, run_hash, data, split, rows, train_time, device, progress,
                  parent: PseudoMasks | None, world: World = SINGLE, evaluated: str = "student",
                  other_vals: dict | None = None) -> StageResult | None:
    """Final evaluation of ``f`` (the ``evaluated`` network), its pseudo-masks of L∪U, and the files
    of a finished run (metrics.json last). With several ranks, each predicts its share of the pool
    and rank 0 does the rest (others: None)."""
    info = data.info
    t0 = time.perf_counter()
    shard = torch.tensor(list(world.shard(data.train_images.shape[0])), dtype=torch.long)
    part = predict(f, data.train_images[shard], config.eval_batch_size, device, desc="pseudo-masks", progress=progress)
    parts = world.gather_to_main((shard, part))
    if not world.is_main:
        return None
    pool_pred = torch.empty((data.train_images.shape[0],) + tuple(part.shape[1:]), dtype=torch.uint8)
    for idx, pred in parts:
        pool_pred[idx] = pred
    val = evaluate(f, data.val_images, data.val_masks, info.num_classes, info.ignore_index, config.eval_batch_size,
                   device, progress=progress)
    pseudo_time = time.perf_counter() - t0
    u_idx, u_truth = hidden_truth(data, split)
    pseudo_u = evaluate_masks(pool_pred[u_idx], u_truth, info.num_classes, info.ignore_index)
    write_mask_pngs(run_dir / "pseudo_masks", data.train_ids, pool_pred)

    sample = np.unique(np.linspace(0, data.val_images.shape[0] - 1, config.num_val_samples).round().astype(int)) \
        if config.num_val_samples else np.zeros(0, dtype=int)
    sample_t = torch.from_numpy(sample)
    val_pred = predict(f, data.val_images[sample_t], config.eval_batch_size, device)
    atomic_savez(run_dir / "val_samples.npz", indices=sample, predictions=val_pred.numpy())
    atomic_torch_save(run_dir / "model.pt", {k: v.cpu() for k, v in f.state_dict().items()})
    return write_stage_results(config, stage, run_dir, run_hash, parent, split, info, rows, val, pseudo_u,
                               train_time, pseudo_time, device, evaluated, other_vals)


def write_stage_results(config, stage, run_dir, run_hash, parent: PseudoMasks | None, split, info, rows, val,
                        pseudo_u, train_time, pseudo_time, device, evaluated: str = "student",
                        other_vals: dict | None = None) -> StageResult:
    """The curves and ``metrics.json`` of a finished run (written last: its presence marks the run
    finished), then the checkpoint goes. Shared by in-memory and file datasets.

    ``val`` scores the ``evaluated`` network (``"student"`` or ``"teacher"``); ``other_vals`` the
    other one, when the stage has it. ``val`` is the reported mIoU; ``val_student`` and
    ``val_teacher`` (None without a teacher) are both recorded."""
    run_dir = Path(run_dir)
    by_model = {**(other_vals or {}), evaluated: val}
    write_csv(run_dir / "curves.csv", rows, CURVE_COLUMNS)
    metrics = {
        "stage": stage, "run_hash": run_hash, "pseudo_masks_from": parent.source_hash if parent else None,
        "dataset": config.dataset, "labels": int(split.labelled.numel()), "seed": config.seed,
        "num_classes": info.num_classes, "class_names": list(info.class_names),
        "steps": config.stage1_steps if stage == 1 else config.steps,
        "val": val.as_dict(info.class_names), "eval_model": evaluated,
        **{f"val_{name}": by_model[name].as_dict(info.class_names) if name in by_model else None
           for name in ("student", "teacher")},
        "pseudo_masks_unlabelled": pseudo_u.as_dict(info.class_names),
        "train_time_s": train_time, "eval_and_pseudo_time_s": pseudo_time,
        "protocol": PROTOCOL, "device": str(device), "precision": resolve_precision(config.precision, device).name,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return StageResult(stage=stage, run_dir=run_dir, run_hash=run_hash, metrics=metrics, reused=False)
