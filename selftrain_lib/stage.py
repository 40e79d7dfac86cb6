"""One stage of the method: ``run_stage(config, stage, pseudo_masks)``, and its training loop.

Stage 1 minimises L_seg on L. Stage k >= 2 minimises ``L_seg + λ1 L_con + λ2 L_pl`` with the
pseudo-masks of stage k-1, the network f re-initialised from pre-training and, with T2, an
auxiliary branch (ĝ in stage 2, g~ from stage 3 on). Each stage ends by writing the argmax of
f on every image of L∪U as the next stage's pseudo-masks.

Read top to bottom: :func:`run_stage` finds the run in the cache (reused when finished) and holds
it; :func:`_train_stage` prepares the run, resumes it from its checkpoint, trains the steps left
(:func:`_train_steps`, one :func:`train_step` each) and hands over to the end-of-stage pass. Around
it, in :mod:`selftrain_lib.train`: the run key (``run_key``), the run folder and its reuse rules
(``run_folder``), the model, teacher, optimiser and batches (``parts``), the checkpoint
(``checkpoint``) and the end-of-stage pass (``final_pass``). The loop is the same for data in
memory and data read from files. Everything random in a step is drawn from generators seeded by
(seed, stage, step), so a run resumed from a checkpoint computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import Config
from .data import SegmentationData, labelled_list, load_data, make_split, read_split, write_split
from .distributed import World, average_buffers, current, unwrap
from .ema import EMATeacher
from .evaluate import EvalResult, evaluate_part
from .methods import METHODS, Method
from .models import MultiTaskDeepLab, set_batchnorm_eval
from .precision import Precision
from .preflight import preflight
from .progress import tqdm
from .runs import config_hash, raise_if_disk_full, run_lock, write_labelled_ids
from .train import StepBatch
from .train.checkpoint import resume_or_restart, save_checkpoint
from .train.final_pass import finish_stage
from .train.log import TrainingLog
from .train.parts import StageParts, StageRun
from .train.run_folder import (CHECKPOINT_FILE, PseudoMasks, StageResult, after_error, holds_nothing,
                               open_run_folder, reusable_run)
from .train.run_key import stage_run_key


def run_stage(config: Config, stage: int, pseudo_masks: PseudoMasks | None = None, *,
              out: str | Path = "runs", progress: bool = True, data: SegmentationData | None = None,
              key: dict[str, Any] | None = None) -> StageResult:
    """Train one stage, or reuse the finished run with the same hash, or resume an interrupted one.

    Args:
        config: the resolved configuration.
        stage: 1, 2, 3, ... (stage k >= 3 repeats stage 3 with stage k-1's pseudo-masks).
        pseudo_masks: the previous stage's :class:`PseudoMasks` (required for stage >= 2).
        out: the run cache folder; this run lives in ``out/<hash>/``.
        progress: show a tqdm bar.
        data: an already loaded dataset (else loaded from ``config``).
        key: the run key, when the caller computed it already
            (:func:`selftrain_lib.train.run_key.stage_run_keys`), after :func:`~selftrain_lib.preflight.preflight`;
            else the files are checked and the key computed here.
    """
    if stage < 1:
        raise ValueError(f"stage: must be >= 1, got {stage}")
    if stage >= 2 and METHODS[config.method].single_stage:
        raise ValueError(f"method {config.method!r} is a single-stage run: stage must be 1, got {stage}")
    if stage >= 2 and pseudo_masks is None:
        raise ValueError(f"stage {stage} needs the pseudo-masks of stage {stage - 1}")
    out = Path(out)
    world = current()  # one process, or this rank of a torchrun job (selftrain_lib.distributed)
    previous = pseudo_masks if stage >= 2 else None  # what the run key names
    if key is None:  # a caller that computed the key checked the files before it (run_stages)
        preflight(config)  # the files it names, before the run key reads them
        key = stage_run_key(config, stage, previous, world.size)
    else:
        _check_key(key, stage, previous, world.size)
    run_dir = out / config_hash(key)
    if reusable_run(run_dir):
        return StageResult.load(run_dir, reused=True)
    # rank 0 alone takes the lock: the other ranks of a torchrun job train the same run with it
    with run_lock(run_dir, f"stage {stage} run") if world.is_main else contextlib.nullcontext():
        if reusable_run(run_dir):  # another process finished it while this one waited
            return StageResult.load(run_dir, reused=True)
        fresh = world.is_main and holds_nothing(run_dir)
        try:
            return _train_stage(config, stage, pseudo_masks, progress, data, world, key, run_dir)
        except Exception as err:  # an error, not an interruption (KeyboardInterrupt, a kill): resumable runs stay
            if world.is_main:
                after_error(run_dir, err, fresh)
            raise_if_disk_full(err, getattr(err, "filename", None) or run_dir)
            raise


def _check_key(key: dict[str, Any], stage: int, pseudo_masks: PseudoMasks | None, world_size: int) -> None:
    """A key handed to :func:`run_stage` is this stage's: its stage, the pseudo-masks' run and the
    number of processes agree (a key of another stage would train, and cache, the wrong run)."""
    source = pseudo_masks.source_hash if pseudo_masks is not None else None
    found = (key.get("stage"), key.get("pseudo_masks_from"), key.get("world_size", 1))
    if found != (stage, source, world_size):
        raise ValueError(f"key: a run key of stage {found[0]} after {found[1]} ({found[2]} process(es)) "
                         f"given for stage {stage} after {source} ({world_size} process(es))")


def _train_stage(config: Config, stage: int, pseudo_masks: PseudoMasks | None, progress: bool,
                 data: SegmentationData | None, world: World, key: dict[str, Any], run_dir: Path) -> StageResult:
    """The body of :func:`run_stage` once this process holds the run (resumes from its checkpoint)."""
    if world.is_main:
        open_run_folder(run_dir, stage, key, config)
    world.barrier()
    run = _prepare_run(config, stage, pseudo_masks, progress and world.is_main, data, world, run_dir, key["data"])
    parts, ckpt = resume_or_restart(run_dir / CHECKPOINT_FILE, run.build_parts(), run.device, run.build_parts)
    # the networks the stage can report; no teacher where the stage has no EMA teacher of its own
    # (Stage 1, the Γ-model without EMA)
    nets = {"student": parts.model.segmenter}
    if parts.teacher is not None and parts.teacher.use_ema:
        nets["teacher"] = parts.teacher.module
    evaluated = parts.method.evaluated(config.eval_model)  # as the run key's protocol says
    rows, train_time, evals = _train_steps(run, parts, ckpt, nets, evaluated)
    # Both networks are scored (rank 0), so every metrics.json has both: the scores of the last
    # step's curve row when this process trained it, else (resumed after the last step) now.
    if world.is_main and not evals:
        evals = {name: _validate(run, net) for name, net in nets.items()}
    result = finish_stage(run, nets[evaluated], evaluated, evals if world.is_main else {}, rows, train_time)
    world.barrier()  # rank 0 has written the run: the others read it back
    return result if world.is_main else StageResult.load(run_dir, reused=False)


def _prepare_run(config: Config, stage: int, pseudo_masks: PseudoMasks | None, progress: bool,
                 data: SegmentationData | None, world: World, run_dir: Path, identity: str) -> StageRun:
    """The device and its threads, the data (checked once) and the labelled set of the run.
    ``identity``: the data's, from the run key (a fingerprint of the files is not read twice)."""
    device = resolve_device(config.device)
    torch.set_num_threads(cpu_threads(config, device))
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
    data = data if data is not None else load_data(config)
    data.check_once(config, progress, identity)  # files: a bad one is found now, not after a stage
    split = select_split(config, data, run_dir.parent)  # the run cache (run_dir is out/<hash>)
    if world.is_main:  # the labelled set as it was when this run trained (the split file may change later)
        write_labelled_ids(run_dir, data.train_ids, split.labelled.tolist())
    return StageRun(config=config, stage=stage, run_dir=run_dir, data=data, split=split, pseudo_masks=pseudo_masks,
                    device=device, world=world, progress=progress)


def _train_steps(run: StageRun, parts: StageParts, ckpt: dict[str, Any] | None, nets: dict[str, nn.Module],
                 evaluated: str) -> tuple[list[dict], float, dict[str, EvalResult]]:
    """Train the steps left after ``ckpt`` (None: all); a curve row every ``log_every`` steps, the
    ``nets`` evaluated every ``eval_every`` (rank 0), a checkpoint every ``checkpoint_every`` and
    at the last step (a kill during the end-of-stage pass then resumes there). Returns the curve
    rows, the training time and the last step's evaluations (empty when no step was left)."""
    config, world, steps = run.config, run.world, parts.steps
    start, rows, elapsed = (ckpt["step"], ckpt["rows"], ckpt["elapsed"]) if ckpt is not None else (0, [], 0.0)
    sums: dict[str, Tensor] = {k: v.to(run.device) for k, v in ckpt["sums"].items()} if ckpt is not None else {}
    evals: dict[str, EvalResult] = {}
    parts.model.train()
    if config.freeze_bn:
        set_batchnorm_eval(parts.model)
    log = TrainingLog(run.run_dir, run.stage, steps, start, device=run.device, enabled=world.is_main)
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=f"stage {run.stage}", disable=not run.progress, dynamic_ncols=True)
    for step in range(start, steps):
        decay = parts.ema_decay(step)
        losses = train_step(parts.trained, parts.teacher, parts.optimizer, parts.batches(step), parts.method,
                            run.data.info.ignore_index, decay, parts.precision, parts.scaler)
        for k, v in losses.items():  # stays on the device: no host sync inside the step
            sums[k] = sums.get(k, 0) + v.detach()
        done = step + 1
        if done % config.log_every == 0 or done == steps:
            n = (done - 1) % config.log_every + 1
            row = {"step": done, "ema_decay": decay if parts.teacher is not None else ""}
            row.update({k: float(v) / n for k, v in world.mean(sums).items()})  # mean over ranks
            _check_finite(row, run.stage, done - n, done, run.run_dir)
            log.interval(row, [g["lr"] for g in parts.optimizer.param_groups], time.perf_counter() - t0)
            if (done % config.eval_every == 0 or done == steps) and world.is_main:  # rank 0 writes the curves
                evals = {name: _validate(run, net) for name, net in nets.items()}
                row.update({f"val_miou_{name}": v.miou for name, v in evals.items()})
                row["val_miou"] = row[f"val_miou_{evaluated}"]
                log.evaluation(done, evals, run.data.info.class_names)
            rows.append(row)
            sums = {}
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "val_miou") if k in row})
        bar.update(1)
        if done % config.checkpoint_every == 0 and done < steps and sums:  # same test on every rank
            # a checkpoint never holds weights trained past a non-finite loss (one sync per checkpoint)
            _check_finite({k: float(v) for k, v in world.mean(sums).items()}, run.stage,
                          done - (done - 1) % config.log_every - 1, done, run.run_dir)
        if (done % config.checkpoint_every == 0 or done == steps) and world.is_main:
            save_checkpoint(run.run_dir / CHECKPOINT_FILE, parts, done, rows, sums, elapsed + time.perf_counter() - t0)
    bar.close()
    train_time = elapsed + time.perf_counter() - t0
    log.close(f"training done in {train_time:.0f} s; writing pseudo-masks, weights and metrics.json")
    return rows, train_time, evals


def _validate(run: StageRun, net: nn.Module) -> EvalResult:
    """Scores of ``net`` (a segmenter) on the validation set."""
    info = run.data.info
    return evaluate_part(net, run.data.val, info.num_classes, info.ignore_index, run.config.eval_batch_size, run.device)


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


def compute_losses(method: Method, model: MultiTaskDeepLab, teacher: EMATeacher | None, batch: StepBatch,
                   ignore_index: int) -> dict[str, Tensor]:
    """Forward pass and losses of one step: ``method``'s (:meth:`selftrain_lib.methods.Method.losses`)."""
    return method.losses(model, teacher, batch, ignore_index)


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


def cpu_threads(config: Config, device: torch.device) -> int:
    """torch's intra-op threads for a run: ``num_threads`` when set, else 1 on the CPU.

    One, whatever the machine: torch's reduction order follows the thread count, so a run's last
    digits would otherwise depend on the core count and on whether a sweep or a single command
    trained it; several 1-thread processes (``jobs``) also use the cores better than one process
    with several threads (sweep.py), and never oversubscribe cores that other work shares."""
    if config.num_threads:
        return config.num_threads
    return 1 if device.type == "cpu" else torch.get_num_threads()
