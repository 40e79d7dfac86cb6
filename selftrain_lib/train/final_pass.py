"""The end-of-stage pass: what a stage writes once its last step is trained.

The pseudo-masks of L∪U by the evaluated network (the next stage's targets) and their mIoU on U,
the predictions on a fixed validation sample, the weights, the curves and ``metrics.json`` with
the validation scores of each network and the best and last evaluations. ``metrics.json`` is
written last: its presence marks the run finished (:func:`selftrain_lib.train.run_folder.reusable_run`).
The same pass serves data in memory and data read from files; with several ranks, each writes its
share of the pseudo-masks and rank 0 the rest.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import split_source
from ..evaluate import PROTOCOL, ConfusionMatrix, EvalResult, best_and_last, predictions, scores
from ..precision import resolve_precision
from ..runs import (atomic_directory, atomic_savez, atomic_torch_save, atomic_write_text, json_text, write_csv,
                    write_manifest, write_mask_png)
from .parts import StageRun
from .run_folder import CHECKPOINT_FILE, StageResult

CURVE_COLUMNS = ("step", "loss", "loss_seg", "loss_con", "loss_pl", "ema_decay", "val_miou", "val_miou_student",
                 "val_miou_teacher", "conf_rate")


def finish_stage(run: StageRun, f: nn.Module, evaluated: str, evals: dict[str, EvalResult], rows: list[dict],
                 train_time: float) -> StageResult | None:
    """The end of ``run``: pseudo-masks of L∪U by ``f`` (the ``evaluated`` network), their quality
    on U, the validation sample's predictions, the weights, the curve ``rows`` and ``metrics.json``
    with the validation ``evals`` of each network. Rank 0 returns the result, the others None."""
    t0 = time.perf_counter()
    cm_u = write_pseudo_masks(run, f)
    if not run.world.is_main:
        return None
    pseudo_time = time.perf_counter() - t0
    write_val_samples(run, f)
    atomic_torch_save(run.run_dir / "model.pt", {k: v.cpu() for k, v in f.state_dict().items()})
    # the curves, then metrics.json (written last: its presence marks the run finished)
    write_csv(run.run_dir / "curves.csv", rows, CURVE_COLUMNS)
    metrics = stage_metrics(run, evaluated, evals, rows, cm_u, train_time, pseudo_time)
    # the manifest (digests of every file, metrics.json's included) before metrics.json, which marks
    # the run finished: a finished run always has one
    text = json_text(metrics)
    write_manifest(run.run_dir, text)
    atomic_write_text(run.run_dir / "metrics.json", text)
    (run.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    return StageResult(stage=run.stage, run_dir=run.run_dir, run_hash=run.run_dir.name, metrics=metrics, reused=False)


def write_pseudo_masks(run: StageRun, f: nn.Module) -> ConfusionMatrix:
    """The argmax of ``f`` on every pool image, one PNG per image at its size, written into a
    temporary folder renamed to ``pseudo_masks/`` at the end; returns their confusion matrix on U
    (summed over ranks on rank 0). U's ground truth is read here, to score only."""
    data, info, world = run.data, run.data.info, run.world
    unlabelled = set(run.split.unlabelled.tolist())
    ego = run.config.pseudo_ignore_ego and getattr(data.train, "fixed_void_ids", ())
    cm_u = ConfusionMatrix(info.num_classes, info.ignore_index)
    with atomic_directory(run.run_dir / "pseudo_masks") if world.is_main else contextlib.nullcontext() as tmp:
        tmp = world.broadcast_from_main(tmp)
        for idx, pred in predictions(f, data.train, world.shard(len(data.train)), run.config.eval_batch_size,
                                     run.device, "pseudo-masks", run.progress):
            for i, mask in zip(idx, pred.to(torch.uint8).cpu()):
                if ego:  # the authors' code: Cityscapes' ego vehicle and borders never carry a pseudo-label
                    mask = mask.masked_fill(data.train.fixed_void(i), info.ignore_index)
                write_mask_png(tmp / f"{data.train.ids[i]}.png", mask)
                if i in unlabelled:
                    cm_u.update(mask, data.train.mask(i))
        matrices = world.gather_to_main(cm_u.mat)  # also: every shard is written before the rename
    if world.is_main:
        cm_u.mat = torch.stack(matrices).sum(0)
    return cm_u


def write_val_samples(run: StageRun, f: nn.Module) -> None:
    """``val_samples.npz``: the predictions of ``f`` on ``num_val_samples`` validation images spread
    evenly over the set, one array per image (images read from files differ in size)."""
    n_val, count = len(run.data.val), run.config.num_val_samples
    sample = np.unique(np.linspace(0, n_val - 1, count).round().astype(int)) if count else np.zeros(0, dtype=int)
    chunks = predictions(f, run.data.val, sample, run.config.eval_batch_size, run.device)
    preds = [pred.to(torch.uint8).cpu().numpy() for _, chunk in chunks for pred in chunk]
    atomic_savez(run.run_dir / "val_samples.npz", indices=sample, **{f"prediction_{k}": a for k, a in enumerate(preds)})


def stage_metrics(run: StageRun, evaluated: str, evals: dict[str, EvalResult], rows: list[dict],
                  cm_u: ConfusionMatrix, train_time: float, pseudo_time: float) -> dict[str, Any]:
    """``metrics.json``: the ``evaluated`` network's scores are the reported ``val``, both networks'
    are recorded, with the best evaluation during training, the pseudo-masks' scores on U and the
    protocol."""
    config, info, names = run.config, run.data.info, run.data.info.class_names
    return {
        "scale": config.scale,  # the preset (paper, paper-code...) that made the run
        "stage": run.stage, "run_hash": run.run_dir.name,
        "pseudo_masks_from": run.pseudo_masks.source_hash if run.pseudo_masks else None,
        "dataset": config.dataset, "labels": int(run.split.labelled.numel()), "seed": config.seed,
        "split": split_source(config),  # "authors", "random" or "file": where the labelled set came from
        "num_classes": info.num_classes, "class_names": list(names),
        "steps": config.stage1_steps if run.stage == 1 else config.steps,
        "val": evals[evaluated].as_dict(names), "eval_model": evaluated,
        **{f"val_{name}": evals[name].as_dict(names) if name in evals else None for name in ("student", "teacher")},
        # the reported ``val`` is the last step's; the best evaluation during training is kept beside it
        "reported": "last", **_best_and_last(rows, evaluated),
        "pseudo_masks_unlabelled": scores(cm_u).as_dict(names),
        "train_time_s": train_time, "eval_and_pseudo_time_s": pseudo_time, "protocol": PROTOCOL,
        "device": str(run.device), "precision": resolve_precision(config.precision, run.device).name,
    }


def _best_and_last(rows: list[dict], evaluated: str) -> dict[str, Any]:
    """``best`` and ``last`` (``{"miou", "step"}``) of the ``evaluated`` network over the evaluations in
    the curve ``rows``, and ``best_student`` / ``best_teacher`` (None for a network the stage has not)."""
    per = {name: best_and_last(rows, f"val_miou_{name}") for name in ("student", "teacher")}
    ours = per[evaluated] or {"best": None, "last": None}
    return {"best": ours["best"], "last": ours["last"],
            **{f"best_{name}": v["best"] if v else None for name, v in per.items()}}
