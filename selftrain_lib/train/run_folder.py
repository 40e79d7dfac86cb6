"""A stage run's folder in the run cache (``<out>/<hash>/``, see :mod:`selftrain_lib.runs`): what
a finished run left there (:class:`StageResult`, its :class:`PseudoMasks`) and the rules for
reusing a folder, starting in one, and leaving one after an error.

A finished run is reused only when complete and unchanged (:func:`reusable_run`); files that
stand in the run's way are set aside, never deleted (:func:`open_run_folder`); a failed run
leaves no folder that looks like an interrupted one (:func:`after_error`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config, make_config, resolved_dict
from ..evaluate import REPORTED
from ..models import build_segmenter, config_kwargs
from ..runs import (LOCK_NAME, MANIFEST, MANIFEST_FILES, atomic_write_json, atomic_write_text, clean_interrupted_writes,
                    finished_run_problem, is_interrupted_write, manifest_problem, read_json, read_mask_pngs, set_aside)
from .log import LOG_FILE, TENSORBOARD_DIR

ERROR_FILE = "error.txt"
CHECKPOINT_FILE = "checkpoint.pt"


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
        import pandas as pd  # half a second: a training process never reads the curves back

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
# the reuse and set-aside rules
# ------------------------------------------------------------------------------------------

def open_run_folder(run_dir: Path, stage: int, key: dict[str, Any], config: Config) -> None:
    """Make ``run_dir`` ready for this process (which holds the run's lock) to train in: leftovers of
    interrupted writes go, what stands where the run writes is set aside, ``config.json`` records
    the run key and the resolved configuration."""
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_interrupted_writes(run_dir)  # this process holds the run: no write of another is under way
    _set_aside_non_files(run_dir)
    _keep_files_of_a_linked_folder(run_dir)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_json(run_dir / "config.json", {"stage": stage, "run_hash": run_dir.name, "key": key,
                                                "config": resolved_dict(config)})


def holds_nothing(run_dir: Path) -> bool:
    """``run_dir`` holds nothing but its lock (and leftovers of interrupted writes): this attempt
    makes everything that will be in it."""
    return not run_dir.is_symlink() and all(p.name == LOCK_NAME or is_interrupted_write(p.name)
                                            for p in run_dir.iterdir())


def after_error(run_dir: Path, err: Exception, fresh: bool) -> None:
    """A failed run leaves no folder that looks like an interrupted run. A folder this attempt
    started empty (``fresh``) and left without a checkpoint (nothing to resume) goes; any other
    keeps everything in it (a finished run's model and pseudo-masks, files set aside, what a user
    put there) and gets ``error.txt``, which says why it stopped."""
    if fresh and not (run_dir / CHECKPOINT_FILE).is_file():
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
    for name in (*MANIFEST_FILES, MANIFEST, CHECKPOINT_FILE, ERROR_FILE, LOG_FILE):
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
    if not run_dir.is_symlink() or (run_dir / CHECKPOINT_FILE).is_file():
        return
    for name in (*MANIFEST_FILES, MANIFEST, ERROR_FILE, LOG_FILE, TENSORBOARD_DIR, "pseudo_masks"):
        path = run_dir / name
        if os.path.lexists(path):
            set_aside(path, "kept", "a linked run folder starting afresh holds this; set aside, not overwritten")
