"""One stage of the method: ``run_stage(config, stage, pseudo_masks)``.

Stage 1 minimises L_seg on L. Stage k >= 2 minimises ``L_seg + λ1 L_con + λ2 L_pl`` with the
pseudo-masks of stage k-1, the network f re-initialised from pre-training and, with T2, an
auxiliary branch (ĝ in stage 2, g~ from stage 3 on). Each stage ends by writing the argmax of
f on every image of L∪U as the next stage's pseudo-masks.

The batches come from :class:`selftrain_lib.train.BatchSource`, the losses from the method
(:mod:`selftrain_lib.methods`); the loop and the end-of-stage pass below are the same for data in
memory and data read from files. Everything random in a step is drawn from generators seeded by
(seed, stage, step), so a run resumed from a checkpoint computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import Config, execution_keys, make_config, resolved_dict
from .data import (SegmentationData, Split, config_dataset, labelled_list, load_data, make_split, read_split,
                   split_source, write_split)
from .data.authors import split_key
from .data.datasets import data_identity, data_reads
from .distributed import SINGLE, World, average_buffers, current, unwrap
from .ema import EMATeacher
from .evaluate import (PROTOCOL, REPORTED, ConfusionMatrix, EvalResult, best_and_last, evaluate_part, predictions,
                       protocol, scores)
from .methods import METHODS, Method, build as build_method
from .models import (MODEL_READS, MultiTaskDeepLab, build_segmenter, config_kwargs, freeze_batchnorm, param_groups,
                     set_batchnorm_eval)
from .precision import Precision, resolve_precision
from .preflight import preflight
from .pretrain import load_pretrained, pretrained_key
from .progress import tqdm
from .runs import (LOCK_NAME, MANIFEST, MANIFEST_FILES, atomic_directory, atomic_savez, atomic_torch_save,
                   atomic_write_json, atomic_write_text, clean_interrupted_writes, config_hash, finished_run_problem,
                   is_interrupted_write, json_text, manifest_problem, raise_if_disk_full, read_json, read_mask_pngs,
                   run_lock, set_aside, write_csv, write_labelled_ids, write_manifest, write_mask_png)
from .train import BatchSource, StepBatch, derive_seed
from .train.batches import StepDraws
from .train.log import LOG_FILE, TENSORBOARD_DIR, TrainingLog

# Bump when a change to the training code changes what a run computes: old cached runs are then
# not reused. 2 (issue 27): the hash declared by the code that reads each key, the evaluation
# protocol in it.
RUN_FORMAT_VERSION = 2
CURVE_COLUMNS = ("step", "loss", "loss_seg", "loss_con", "loss_pl", "ema_decay", "val_miou", "val_miou_student",
                 "val_miou_teacher", "conf_rate")


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
    def val_miou_best(self) -> float:
        """The best validation mIoU of the evaluated network over the evaluations during training
        (NaN for runs written before it was recorded); :attr:`best_step` is where it was reached."""
        best = self.metrics.get("best") or {}
        return float("nan") if best.get("miou") is None else float(best["miou"])

    @property
    def best_step(self) -> int | None:
        return (self.metrics.get("best") or {}).get("step")

    def miou(self, which: str = "last") -> float:
        """Validation mIoU of the evaluated network: the ``last`` step's (reported) or the ``best`` evaluation's."""
        if which not in REPORTED:
            raise ValueError(f"which: must be one of {list(REPORTED)}, got {which!r}")
        return self.val_miou if which == "last" else self.val_miou_best

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
        net = build_segmenter(cfg.model, self.metrics["num_classes"], **config_kwargs(cfg))
        net.load_state_dict(torch.load(self.run_dir / "model.pt", map_location=device, weights_only=True))
        return net.to(device).eval()

    def summary(self) -> dict[str, Any]:
        return {"stage": self.stage, "scale": self.metrics.get("scale"), "val_miou": self.val_miou, "val_miou_best": self.val_miou_best,
                "best_step": self.best_step, "eval_model": self.eval_model,
                "val_miou_student": self.val_miou_student, "val_miou_teacher": self.val_miou_teacher,
                "pseudo_miou": self.pseudo_miou, "run_dir": str(self.run_dir), "reused": self.reused}

    @classmethod
    def load(cls, run_dir: Path, reused: bool = True) -> "StageResult":
        metrics = read_json(run_dir / "metrics.json")
        return cls(stage=metrics["stage"], run_dir=run_dir, run_hash=run_dir.name, metrics=metrics, reused=reused)


# ------------------------------------------------------------------------------------------
# models of each stage
# ------------------------------------------------------------------------------------------

def private_blocks(config: Config, stage: int) -> int | None:
    """How many of f's last blocks the auxiliary branch owns: None in stage 1 and without T2,
    2 (ĝ) in stage 2, 1 (g~) from stage 3 on, or 2 again without N2."""
    if stage == 1 or not config.t2:
        return None
    return 2 if stage == 2 or not config.n2 else 1


def build_stage_model(config: Config, stage: int, num_classes: int) -> MultiTaskDeepLab:
    """f initialised from pre-training (new layers from a (seed, stage) generator) plus the
    stage's branch. Called afresh each stage: θ is re-initialised, as Algorithm 1 says."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, stage, "init"))
        segmenter = build_segmenter(config.model, num_classes, **config_kwargs(config))
        load_pretrained(segmenter, config)
        model = MultiTaskDeepLab(segmenter, private_blocks(config, stage), conv6_init=config.branch_init)
    if config.freeze_bn:
        freeze_batchnorm(model)
    return model


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


def build_stage_parts(config: Config, stage: int, view, pseudo, num_classes: int, device: torch.device,
                      world: World = SINGLE) -> StageParts:
    """The model, teacher, optimiser and batches of ``stage``. ``view``: what it trains on
    (``data.training_view(split)``); ``pseudo``: the previous stage's pseudo-mask folder (or, in
    memory, a uint8 (N, H, W) tensor), None in stage 1."""
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
    batches = BatchSource(view, pseudo, config, stage, device, world)
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


# The Config keys the loop and the end-of-stage pass below read: the initialisation seed, the
# optimiser, batch-norm freezing, when to log and evaluate, the validation sample kept. In every
# stage's run hash (:func:`stage_key`); a key the loop starts reading is added here, in one line.
LOOP_READS = ("seed", "lr", "backbone_lr_mult", "weight_decay", "freeze_bn", "log_every", "eval_every",
              "num_val_samples", "pseudo_ignore_ego")


def loop_reads(config: Config, world_size: int = 1) -> tuple[str, ...]:
    """:data:`LOOP_READS`, ``precision`` when explicit (``auto`` resolves by the device, which like
    ``device`` is no part of a hash) and ``sync_bn`` when several processes train."""
    return LOOP_READS + (("precision",) if config.precision != "auto" else ()) + (("sync_bn",) if world_size > 1 else ())


def stage_key(config: Config, stage: int, world_size: int = 1, method: Method | None = None) -> dict[str, Any]:
    """The configuration part of a stage's run key: the keys that the code the stage runs reads,
    each declared next to the code that reads it (docs/run_cache.md, "How a key enters the hash"):

    - the method: its name and :meth:`~selftrain_lib.methods.Method.reads` at this stage,
    - the model factory: ``model`` and its ``register_model(reads=...)`` (:mod:`selftrain_lib.models`),
    - the initialisation: :func:`selftrain_lib.pretrain.pretrained_key`,
    - the batches and weak augmentation: :meth:`selftrain_lib.train.batches.StepDraws.reads`,
    - the loop: :func:`loop_reads`,
    - the data: :func:`selftrain_lib.data.datasets.data_reads`; the labelled set: :func:`~selftrain_lib.data.authors.split_key`.

    A key no part reads at this stage is left out: ablations share Stage 1, a baseline's keys stay
    out of the three-stage runs. Keys marked ``EXECUTION`` in :class:`~selftrain_lib.config.Config`
    never enter."""
    method = method or build_method(config, stage)
    # a method without a name of its own is named by its class: never confused with another
    key: dict[str, Any] = {"method": method.name or f"{type(method).__module__}.{type(method).__qualname__}"}
    for part in (method.reads(), ("model", *MODEL_READS[config.model]), StepDraws.reads(method),
                 loop_reads(config, world_size), data_reads(config)):
        key.update((k, getattr(config, k)) for k in part)
    key.update(pretrained_key(config))
    key.update(split_key(config))
    leaked = sorted(key.keys() & execution_keys())
    if leaked:  # a reader declares a key its field says changes nothing computed: one of them is wrong
        raise RuntimeError(f"{leaked} are marked EXECUTION in Config but declared as read for the run hash")
    return dict(sorted(key.items()))


def stage_run_key(config: Config, stage: int, pseudo_masks: PseudoMasks | None,
                  world_size: int = 1) -> dict[str, Any]:
    """What identifies a stage run: the keys its code reads (:func:`stage_key`), the data's identity
    (:func:`selftrain_lib.data.datasets.data_identity`: the generator's digest, or the fingerprint of
    the files), the evaluation protocol (:func:`selftrain_lib.evaluate.protocol`), the run its
    pseudo-masks came from, and the number of data-parallel processes when more than one (they
    multiply the batch)."""
    method = build_method(config, stage)
    info = config_dataset(config)
    key = {"format": RUN_FORMAT_VERSION, "stage": stage, "config": stage_key(config, stage, world_size, method),
           "data": data_identity(config),
           "protocol": protocol(info.num_classes, info.ignore_index, config.resize or info.image_size,
                                method.evaluated(config.eval_model)),
           "pseudo_masks_from": pseudo_masks.source_hash if pseudo_masks is not None else None}
    if world_size > 1:
        key["world_size"] = world_size
    return key


def stage_hashes(config: Config, stages: int, world_size: int = 1) -> list[str]:
    """The run hashes of stages 1..``stages`` of ``config`` (trained by ``world_size`` processes),
    computed without training: stage k's hash includes stage k-1's, as its pseudo-masks come from there."""
    hashes: list[str] = []
    for k in range(1, stages + 1):
        previous = PseudoMasks(Path(), hashes[-1], k - 1) if hashes else None
        hashes.append(config_hash(stage_run_key(config, k, previous, world_size)))
    return hashes


def select_split(config: Config, data: SegmentationData, out: Path):
    """The labelled set: from ``split_file`` when given, the authors' list when ``split`` chooses it
    (:func:`selftrain_lib.data.split_source`), else drawn from ``seed`` and written out as
    ``<out>/splits/<dataset>_<labels>_seed<seed>.txt``."""
    listed = labelled_list(config)
    if listed is not None:
        return read_split(listed, data.train_ids)
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
    preflight(config)  # the files it names, before the run key reads them
    out = Path(out)
    world = current()  # one process, or this rank of a torchrun job (selftrain_lib.distributed)
    key = stage_run_key(config, stage, pseudo_masks if stage >= 2 else None, world.size)
    run_hash = config_hash(key)
    run_dir = out / run_hash
    if reusable_run(run_dir):
        return StageResult.load(run_dir, reused=True)
    # rank 0 alone takes the lock: the other ranks of a torchrun job train the same run with it
    with run_lock(run_dir, f"stage {stage} run") if world.is_main else contextlib.nullcontext():
        if reusable_run(run_dir):  # another process finished it while this one waited
            return StageResult.load(run_dir, reused=True)
        fresh = world.is_main and _holds_nothing(run_dir)
        try:
            return _train_stage(config, stage, pseudo_masks, out, progress, data, world, key, run_hash, run_dir)
        except Exception as err:  # an error, not an interruption (KeyboardInterrupt, a kill): resumable runs stay
            if world.is_main:
                _after_error(run_dir, err, fresh)
            raise_if_disk_full(err, getattr(err, "filename", None) or run_dir)
            raise


def _holds_nothing(run_dir: Path) -> bool:
    """``run_dir`` holds nothing but its lock (and leftovers of interrupted writes): this attempt
    makes everything that will be in it."""
    return not run_dir.is_symlink() and all(p.name == LOCK_NAME or is_interrupted_write(p.name)
                                            for p in run_dir.iterdir())


def _after_error(run_dir: Path, err: Exception, fresh: bool) -> None:
    """A failed run leaves no folder that looks like an interrupted run. A folder this attempt
    started empty (``fresh``) and left without a checkpoint (nothing to resume) goes; any other
    keeps everything in it (a finished run's model and pseudo-masks, files set aside, what a user
    put there) and gets ``error.txt``, which says why it stopped."""
    if fresh and not (run_dir / "checkpoint.pt").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    try:
        atomic_write_text(run_dir / ERROR_FILE, f"{type(err).__name__}: {err}\n")
    except OSError:  # a full disk: the error itself says so
        pass


def reusable_run(run_dir: Path) -> bool:
    """The run in ``run_dir`` is finished and complete, with the files it finished with. A finished
    run whose folder is incomplete (e.g. pseudo-masks missing) has its ``metrics.json`` set aside,
    so that it trains again; one whose files changed since (``manifest.json``) has the changed
    files and ``metrics.json`` set aside, never deleted."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    problem = finished_run_problem(run_dir)
    if problem is not None:
        set_aside(metrics, "incomplete", f"the run is not complete ({problem}); training it again")
        return False
    changed = manifest_problem(run_dir)
    if changed is None:
        return True
    why, paths = changed
    # a changed pseudo-mask sets its whole folder aside: the run writes the folder anew
    aside = {run_dir / "pseudo_masks" if p.relative_to(run_dir).parts[0] == "pseudo_masks" else p for p in paths}
    for p in sorted(aside - {metrics}):
        if os.path.lexists(p):
            set_aside(p, "changed", f"not what the finished run wrote ({why})")
    set_aside(metrics, "changed",
              f"the run's files are not those it finished with ({why}); not reused, training it again")
    return False


def _set_aside_non_files(run_dir: Path) -> None:
    """Set aside a folder or link where the run writes a file (``model.pt/``...): writing it would
    fail, and every rerun with it."""
    for name in (*MANIFEST_FILES, MANIFEST, "checkpoint.pt", ERROR_FILE, LOG_FILE):
        path = run_dir / name
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
            set_aside(path, "not-a-file", "the run writes a file here; starting the stage with it set aside")
    # the log appends and TensorBoard writes into its folder: a link would send both elsewhere
    path = run_dir / TENSORBOARD_DIR
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        set_aside(path, "not-a-folder", "the run writes its TensorBoard events here; starting the stage with it set aside")


def _keep_files_of_a_linked_folder(run_dir: Path) -> None:
    """A run folder that is a link points at a folder the project did not make: when the stage
    starts afresh there (no checkpoint), what it holds under the names the run writes is set
    aside, not overwritten (in a folder the cache made, those files are the run's own)."""
    if not run_dir.is_symlink() or (run_dir / "checkpoint.pt").is_file():
        return
    for name in (*MANIFEST_FILES, MANIFEST, ERROR_FILE, LOG_FILE, TENSORBOARD_DIR, "pseudo_masks"):
        path = run_dir / name
        if os.path.lexists(path):
            set_aside(path, "kept", "a linked run folder starting afresh holds this; set aside, not overwritten")


ERROR_FILE = "error.txt"
CHECKPOINT_KEYS = ("step", "model", "optimizer", "teacher", "rows", "sums", "elapsed")


def _read_checkpoint(path: Path, device: torch.device, steps: int) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run of ``steps`` steps, or None: none there, or unusable,
    which is then set aside and the stage starts again. Loaded with ``weights_only=True``: tensors,
    numbers, strings and containers only, so a planted file never runs code (it is unreadable)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch.load raises EOFError, RuntimeError, UnpicklingError... on a bad file
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights only load failed" in text.lower():  # the refusal itself is 30 lines of advice
            text = "it holds Python objects other than tensors, numbers and strings, which are never unpickled"
        set_aside(path, "corrupt",
                  f"unreadable checkpoint ({type(err).__name__}: {text[:300]}); starting the stage again")
        return None
    problem = _checkpoint_problem(ckpt, steps)
    if problem is not None:
        set_aside(path, "corrupt", f"unusable checkpoint ({problem}); starting the stage again")
        return None
    return ckpt


def _checkpoint_problem(ckpt: Any, steps: int) -> str | None:
    """What makes ``ckpt`` (read by :func:`_read_checkpoint`) no checkpoint of a run of ``steps`` steps, or None."""
    if not isinstance(ckpt, dict):
        return f"expected a mapping, got {type(ckpt).__name__}"
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        return f"no {missing}"
    step = ckpt["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
        return f"step {step!r} is not a step of this run (0..{steps})"
    if not isinstance(ckpt["rows"], list) or not all(isinstance(r, dict) for r in ckpt["rows"]):
        return "rows: expected a list of curve rows"
    if not isinstance(ckpt["sums"], dict) or not all(isinstance(v, Tensor) and v.numel() == 1
                                                     for v in ckpt["sums"].values()):
        return "sums: expected a mapping of loss names to one-value tensors"
    if isinstance(ckpt["elapsed"], bool) or not isinstance(ckpt["elapsed"], (int, float)):
        return f"elapsed: expected a number of seconds, got {type(ckpt['elapsed']).__name__}"
    return None


def _resume(parts: "StageParts", ckpt: dict[str, Any]) -> None:
    """Load the weights, teacher, optimiser and loss scaler of ``ckpt`` into ``parts`` (an error
    when they do not fit: other shapes, keys or parameter groups)."""
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    for group in parts.optimizer.param_groups:  # load_state_dict does not compare Adam's moments
        for param in group["params"]:
            for name, value in parts.optimizer.state.get(param, {}).items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(f"optimizer state {name!r} of shape {tuple(value.shape)} for a parameter "
                                     f"of shape {tuple(param.shape)}")
    if parts.teacher is not None:
        parts.teacher.load_state_dict(ckpt["teacher"])
    if parts.scaler is not None and ckpt.get("scaler"):
        parts.scaler.load_state_dict(ckpt["scaler"])


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


def cpu_threads(config: Config, device: torch.device) -> int:
    """torch's intra-op threads for a run: ``num_threads`` when set, else 1 on the CPU.

    One, whatever the machine: torch's reduction order follows the thread count, so a run's last
    digits would otherwise depend on the core count and on whether a sweep or a single command
    trained it; several 1-thread processes (``jobs``) also use the cores better than one process
    with several threads (sweep.py), and never oversubscribe cores that other work shares."""
    if config.num_threads:
        return config.num_threads
    return 1 if device.type == "cpu" else torch.get_num_threads()


def _train_stage(config: Config, stage: int, pseudo_masks: PseudoMasks | None, out: Path, progress: bool,
                 data: SegmentationData | None, world: World, key: dict[str, Any], run_hash: str,
                 run_dir: Path) -> StageResult:
    """The body of :func:`run_stage` once this process holds the run (resumes from its checkpoint)."""
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        clean_interrupted_writes(run_dir)  # this process holds the run: no write of another is under way
        _set_aside_non_files(run_dir)
        _keep_files_of_a_linked_folder(run_dir)
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        atomic_write_json(run_dir / "config.json", {"stage": stage, "run_hash": run_hash, "key": key,
                                                    "config": resolved_dict(config)})
    world.barrier()
    progress = progress and world.is_main
    device = resolve_device(config.device)
    torch.set_num_threads(cpu_threads(config, device))
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
    data = data if data is not None else load_data(config)
    data.check_once(config, progress)  # files: a bad one is found now, not after a stage
    split = select_split(config, data, out)
    if world.is_main:  # the labelled set as it was when this run trained (the split file may change later)
        write_labelled_ids(run_dir, data.train_ids, split.labelled.tolist())
    pseudo = pseudo_masks.directory if stage >= 2 else None
    parts = build_stage_parts(config, stage, data.training_view(split), pseudo, data.info.num_classes, device, world)
    model, teacher, optimizer, batches = parts.model, parts.teacher, parts.optimizer, parts.batches
    steps, info = parts.steps, data.info

    start, rows, elapsed = 0, [], 0.0
    sums: dict[str, Tensor] = {}  # loss sums since the last logged row
    ckpt_path = run_dir / "checkpoint.pt"
    ckpt = _read_checkpoint(ckpt_path, device, parts.steps)
    if ckpt is not None:
        try:
            _resume(parts, ckpt)
        except Exception as err:  # readable, but not this run's (other shapes...): a rerun would fail forever
            first = (str(err).strip().splitlines() or [""])[0][:300]
            set_aside(ckpt_path, "incompatible", f"checkpoint does not fit this run ({type(err).__name__}: {first}); "
                                                 "starting the stage again")
            ckpt = None  # built afresh: the failed load may have changed some weights already
            parts = build_stage_parts(config, stage, data.training_view(split), pseudo, data.info.num_classes,
                                      device, world)
            model, teacher, optimizer, batches = parts.model, parts.teacher, parts.optimizer, parts.batches
    if ckpt is not None:
        start, rows, elapsed = ckpt["step"], ckpt["rows"], ckpt["elapsed"]
        sums = {k: v.to(device) for k, v in ckpt["sums"].items()}

    def validate(net: nn.Module) -> EvalResult:
        """Scores of ``net`` (a segmenter) on the validation set."""
        return evaluate_part(net, data.val, info.num_classes, info.ignore_index, config.eval_batch_size, device)

    # the networks the stage can report; no teacher where the stage has no EMA teacher of its own
    # (Stage 1, the Γ-model without EMA)
    nets = {"student": model.segmenter}
    if teacher is not None and teacher.use_ema:
        nets["teacher"] = teacher.module
    evaluated = parts.method.evaluated(config.eval_model)  # as the run key's protocol says

    model.train()
    if config.freeze_bn:
        set_batchnorm_eval(model)
    log = TrainingLog(run_dir, stage, steps, start, device=device, enabled=world.is_main)
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
            log.interval(row, [g["lr"] for g in optimizer.param_groups], time.perf_counter() - t0)
            if (done % config.eval_every == 0 or done == steps) and world.is_main:  # rank 0 writes the curves
                evals = {name: validate(net) for name, net in nets.items()}
                row.update({f"val_miou_{name}": v.miou for name, v in evals.items()})
                row["val_miou"] = row[f"val_miou_{evaluated}"]
                log.evaluation(done, evals, info.class_names)
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
    log.close(f"training done in {train_time:.0f} s; writing pseudo-masks, weights and metrics.json")
    # Both networks are scored (rank 0), so every metrics.json has both: the scores of the last
    # step's curve row when this process trained it, else (resumed after the last step) now.
    if world.is_main and start == steps:
        evals = {name: validate(net) for name, net in nets.items()}
    final = _FinalPass(config, stage, run_dir, data, split, rows, train_time, device, progress,
                       pseudo_masks, world)
    result = _finish_stage(final, nets[evaluated], evaluated, evals if world.is_main else {})
    world.barrier()  # rank 0 has written the run: the others read it back
    return result if world.is_main else StageResult.load(run_dir, reused=False)


def _best_and_last(rows: list[dict], evaluated: str) -> dict[str, Any]:
    """``best`` and ``last`` (``{"miou", "step"}``) of the ``evaluated`` network over the evaluations in
    the curve ``rows``, and ``best_student`` / ``best_teacher`` (None for a network the stage has not)."""
    per = {name: best_and_last(rows, f"val_miou_{name}") for name in ("student", "teacher")}
    ours = per[evaluated] or {"best": None, "last": None}
    return {"best": ours["best"], "last": ours["last"],
            **{f"best_{name}": v["best"] if v else None for name, v in per.items()}}


@dataclass
class _FinalPass:
    """What the end of a stage writes its files from (see :func:`_finish_stage`)."""

    config: Config
    stage: int
    run_dir: Path  # out / <run hash>
    data: Any  # SegmentationData or FileSegmentationData: both have .train, .val and .info
    split: Split
    rows: list
    train_time: float
    device: torch.device
    progress: bool
    parent: PseudoMasks | None
    world: World


def _finish_stage(p: _FinalPass, f: nn.Module, evaluated: str, evals: dict[str, EvalResult]) -> StageResult | None:
    """The end of a stage, for data in memory and read from files alike: the pseudo-masks of L∪U
    by ``f`` (the ``evaluated`` network: one PNG per pool image at its size, written into a temporary
    folder renamed at the end), their quality on U, the predictions on the fixed validation sample,
    the weights and ``metrics.json`` with the validation ``evals`` of each network. With several
    ranks, each writes its share of the pseudo-masks and rank 0 does the rest (others: None)."""
    data, info, world, run_dir = p.data, p.data.info, p.world, p.run_dir
    t0 = time.perf_counter()
    unlabelled = set(p.split.unlabelled.tolist())
    cm_u = ConfusionMatrix(info.num_classes, info.ignore_index)  # U's ground truth: read here, to score only
    with atomic_directory(run_dir / "pseudo_masks") if world.is_main else contextlib.nullcontext() as tmp:
        tmp = world.broadcast_from_main(tmp)
        for idx, pred in predictions(f, data.train, world.shard(len(data.train)), p.config.eval_batch_size, p.device,
                                     "pseudo-masks", p.progress):
            for i, mask in zip(idx, pred.to(torch.uint8).cpu()):
                if p.config.pseudo_ignore_ego and getattr(data.train, "fixed_void_ids", ()):
                    # the authors' code: Cityscapes' ego vehicle and borders never carry a pseudo-label
                    mask = mask.masked_fill(data.train.fixed_void(i), info.ignore_index)
                write_mask_png(tmp / f"{data.train.ids[i]}.png", mask)
                if i in unlabelled:
                    cm_u.update(mask, data.train.mask(i))
        matrices = world.gather_to_main(cm_u.mat)  # also: every shard is written before the rename
    if not world.is_main:
        return None
    cm_u.mat = torch.stack(matrices).sum(0)
    pseudo_time = time.perf_counter() - t0
    n_val = len(data.val)
    sample = np.unique(np.linspace(0, n_val - 1, p.config.num_val_samples).round().astype(int)) \
        if p.config.num_val_samples else np.zeros(0, dtype=int)
    preds = [pred.to(torch.uint8).cpu().numpy() for _, chunk in predictions(f, data.val, sample, p.config.eval_batch_size,
                                                                              p.device) for pred in chunk]
    # one array per image (images read from files differ in size)
    atomic_savez(run_dir / "val_samples.npz", indices=sample, **{f"prediction_{k}": a for k, a in enumerate(preds)})
    atomic_torch_save(run_dir / "model.pt", {k: v.cpu() for k, v in f.state_dict().items()})
    # the curves, then metrics.json (written last: its presence marks the run finished); the
    # ``evaluated`` network's scores are the reported ``val``, both networks' are recorded
    write_csv(run_dir / "curves.csv", p.rows, CURVE_COLUMNS)
    config, names = p.config, info.class_names
    metrics = {
        "scale": config.scale,  # the preset (paper, paper-code...) that made the run
        "stage": p.stage, "run_hash": run_dir.name, "pseudo_masks_from": p.parent.source_hash if p.parent else None,
        "dataset": config.dataset, "labels": int(p.split.labelled.numel()), "seed": config.seed,
        "split": split_source(config),  # "authors", "random" or "file": where the labelled set came from
        "num_classes": info.num_classes, "class_names": list(names),
        "steps": config.stage1_steps if p.stage == 1 else config.steps,
        "val": evals[evaluated].as_dict(names), "eval_model": evaluated,
        **{f"val_{name}": evals[name].as_dict(names) if name in evals else None for name in ("student", "teacher")},
        # the reported ``val`` is the last step's; the best evaluation during training is kept beside it
        "reported": "last", **_best_and_last(p.rows, evaluated),
        "pseudo_masks_unlabelled": scores(cm_u).as_dict(names),
        "train_time_s": p.train_time, "eval_and_pseudo_time_s": pseudo_time, "protocol": PROTOCOL,
        "device": str(p.device), "precision": resolve_precision(config.precision, p.device).name,
    }
    # the manifest (digests of every file, metrics.json's included) before metrics.json, which marks
    # the run finished: a finished run always has one
    text = json_text(metrics)
    write_manifest(run_dir, text)
    atomic_write_text(run_dir / "metrics.json", text)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return StageResult(stage=p.stage, run_dir=run_dir, run_hash=run_dir.name, metrics=metrics, reused=False)
