"""What one stage run is made of: where it trains and writes (:class:`StageRun`) and what it
trains (:class:`StageParts`: the method, f with the branch the method names, the EMA teacher, the
optimiser and the batches the method draws), built afresh each stage from plain configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..data import Split
from ..distributed import SINGLE, World
from ..ema import EMATeacher
from ..methods import Method, build as build_method
from ..models import MultiTaskDeepLab, build_segmenter, config_kwargs, freeze_batchnorm, param_groups
from ..optim import Adam
from ..precision import Precision, resolve_precision
from ..pretrain import load_pretrained
from .batches import BatchSource, derive_seed
from .run_folder import PseudoMasks


@dataclass
class StageRun:
    """One stage run once this process holds it: what it trains on, where it writes, on what device."""

    config: Config
    stage: int
    run_dir: Path  # out / <run hash>
    data: Any  # SegmentationData or FileSegmentationData: both have .train, .val and .info
    split: Split
    pseudo_masks: PseudoMasks | None  # the previous stage's (None in stage 1)
    device: torch.device
    world: World
    progress: bool  # show tqdm bars (rank 0 only)

    def build_parts(self) -> "StageParts":
        """The model, teacher, optimiser and batches of this run, built afresh."""
        pseudo = self.pseudo_masks.directory if self.stage >= 2 else None
        return build_stage_parts(self.config, self.stage, self.data.training_view(self.split), pseudo,
                                 self.data.info.num_classes, self.device, self.world, self.progress)


def build_stage_model(config: Config, stage: int, num_classes: int, branch: int | None,
                      progress: bool = True) -> MultiTaskDeepLab:
    """f initialised from pre-training (new layers from a (seed, stage) generator) plus the
    auxiliary branch the stage's method names (``Method.branch``: 2 private blocks, ĝ; 1, g̃; None,
    f alone). Called afresh each stage: θ is re-initialised, as Algorithm 1 says. ``progress``: the
    one-off synthetic pre-training's message and bar, should it be built now."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, stage, "init"))
        segmenter = build_segmenter(config.model, num_classes, **config_kwargs(config))
        load_pretrained(segmenter, config, progress)
        model = MultiTaskDeepLab(segmenter, branch, conv6_init=config.branch_init)
    if config.freeze_bn:
        freeze_batchnorm(model)
    return model


@dataclass
class StageParts:
    """Everything a stage's loop needs, built from plain configuration."""

    model: MultiTaskDeepLab
    teacher: EMATeacher | None
    optimizer: torch.optim.Optimizer
    batches: BatchSource
    method: Method  # the model's branch, the batch it draws, its teacher's decays, its losses (selftrain_lib.methods)
    steps: int
    precision: Precision | None = None  # autocast of the forward pass (None: fp32)
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling
    world: World = SINGLE  # the training processes (selftrain_lib.distributed)
    trained: nn.Module | None = None  # what the step calls: ``model``, wrapped in DDP and/or torch.compile

    def ema_decay(self, step: int) -> float:
        """The teacher's EMA decay at ``step``, a pure function of the step."""
        return self.method.ema_decay(step)


def build_stage_parts(config: Config, stage: int, view, pseudo, num_classes: int, device: torch.device,
                      world: World = SINGLE, progress: bool = True) -> StageParts:
    """The method of ``stage`` and the model, teacher, optimiser and batches it asks for. ``view``:
    what it trains on (``data.training_view(split)``); ``pseudo``: the previous stage's pseudo-mask
    folder (or, in memory, a uint8 (N, H, W) tensor), None in stage 1."""
    precision = resolve_precision(config.precision, device)
    method = build_method(config, stage)
    model = build_stage_model(config, stage, num_classes, method.branch, progress)
    if config.sync_bn and world.enabled:
        if device.type != "cuda":
            raise ValueError("sync_bn: synchronised batch-norm needs CUDA (NCCL); on the CPU it stays per rank")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if device.type == "cuda":  # NHWC convolutions are the fast path of cuDNN's tensor cores
        model = model.to(memory_format=torch.channels_last)
    optimizer = Adam(param_groups(model, config.lr, config.backbone_lr_mult), lr=config.lr,
                     weight_decay=config.weight_decay)
    batches = BatchSource(method, view, pseudo, config, stage, device, world)
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

