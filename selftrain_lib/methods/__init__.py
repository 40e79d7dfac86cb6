"""The methods a run can train and the ablation switches of the three-stage method: one table each.

The CLI flags (``--method``, ``--no-<switch>``), the validation of ``method``, the ablation grid
(``experiments.DROPS``), Table V's rows (``results.ABLATION_ROWS``), the result columns and the
notebooks (which take switches and baselines by name) are derived from :data:`METHODS` and
:data:`SWITCHES`. Adding a switch: a ``bool`` field of :class:`~selftrain_lib.config.Config`, a row
here, the code that reads it (docs/extending.md); at its default (on) it stays out of the run key
(:attr:`Switch.in_key_when_on`), so no existing run hash moves. Adding a baseline: its keys in
``Config``, a row here, its implementation in a module of this package, which declares the keys it
reads (:meth:`Method.reads`: the run hash follows them, :func:`selftrain_lib.train.run_key.stage_key`).

A method's implementation (a :class:`~selftrain_lib.methods.base.Method`, in the module its row
names) is built per stage by :func:`build`; it owns the model's branch, the batch it draws and its
losses (:mod:`.base` says how a step uses them). This module imports no torch (``config`` reads the
tables); the implementations do, and are imported when a stage builds one.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from .base import BatchSpec, Crops, Method, StepBatch


@dataclass(frozen=True)
class Switch:
    """An ablation switch of the three-stage method: a ``bool`` config key, on by default."""

    key: str                  # the Config field
    label: str                # its name in ablation tables ("no CR")
    drops: str                # what ``--no-<key>`` leaves out (CLI help)
    first_stage: int = 2      # stages before it do not read it (nor hash it: ThreeStage.reads)
    # In the run key at its default (on) too? Off, a switch is always in the key ({"pl1": False}). A new
    # switch leaves this False: on, it computes what the code computed before it existed, so leaving it
    # out of the key keeps every cached run and every pinned hash (tests/test_run_hashes.py) valid. The
    # five first switches say True: their keys were hashed at their default before this rule, and keeping
    # them there keeps those hashes.
    in_key_when_on: bool = False
    table: str = "V"          # the paper's table of its ablation: V (a row "without <label>"), or VI (EMA)
    row: str = ""             # its row of Table V (default "S1+S2+S3 without <label>")
    paper_row: str = ""       # the paper's name of that row in paper_results.csv (default: row)

    @property
    def table_row(self) -> tuple[str, str]:
        """(its row label in Table V, the paper's method name of the row)."""
        row = self.row or f"S1+S2+S3 without {self.label}"
        return row, self.paper_row or row


SWITCHES: tuple[Switch, ...] = (
    Switch("cr", "CR", "the consistency loss L_con", in_key_when_on=True),
    Switch("t2", "T2", "Task 2: the branch and L_pl", in_key_when_on=True),
    Switch("sa", "SA", "strong augmentation", in_key_when_on=True),
    Switch("n2", "N2", "the new branch g~ in stage >= 3", first_stage=3, row="S1+S2+S3 without N2 (ĝ in stage 3)",
           paper_row="S1+S2+S3 without N2 (g-hat in stage 3)", in_key_when_on=True),
    Switch("ema", "EMA", "the EMA teacher (the student teaches itself)", table="VI", in_key_when_on=True),
)
SWITCH_KEYS: tuple[str, ...] = tuple(s.key for s in SWITCHES)


def saved_switches(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Each switch's value in a saved configuration (a run's ``config.json``). A switch added after
    the run trained is absent there: the run computed what the switch on computes (a new switch stays
    out of the run key at its default, :attr:`Switch.in_key_when_on`, so such runs are reused), and
    it reads as on, as :func:`~selftrain_lib.config.make_config` reads the configuration back."""
    return {s.key: saved.get(s.key, True) for s in SWITCHES}


@dataclass(frozen=True)
class MethodSpec:
    """One row of :data:`METHODS`: what the configuration, the CLI and the run cache know of a method."""

    name: str
    label: str                # in tables and figures
    help: str                 # CLI
    impl: str                 # "<module of this package>.<class>": the :class:`Method` built by :func:`build`
    single_stage: bool = True  # a baseline: one stage (Stage 1's step budget); else stages 1..N
    min_pool_per_batch: int = 0  # images from L∪U a step needs (batch_size - labelled_per_batch)

    @property
    def own_runs(self) -> bool:
        """False where its runs are the three-stage method's (``supervised``: its implementation)."""
        return self.impl != THREE_STAGE


THREE_STAGE = "three_stage.ThreeStage"
METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("three-stage", "three-stage", "the three-stage method (default)", THREE_STAGE, single_stage=False),
    MethodSpec("supervised", "Supervised", "L_seg on L only (= Stage 1, the same run)", THREE_STAGE),
    MethodSpec("mt-cutout", "Cutout (mean teacher)", "mean teacher + Cutout (French et al.)",
               "mean_teacher.Cutout", min_pool_per_batch=1),
    MethodSpec("mt-cutmix", "CutMix (mean teacher)", "mean teacher + CutMix (French et al.)",
               "mean_teacher.CutMix", min_pool_per_batch=2),
)}
BASELINES: dict[str, str] = {m.name: m.label for m in METHODS.values() if m.own_runs}  # name -> label


def build(config, stage: int) -> Method:
    """The :class:`Method` of ``config.method`` at ``stage``."""
    module, cls = METHODS[config.method].impl.split(".")
    return getattr(importlib.import_module(f".{module}", __name__), cls)(config, stage)


__all__ = ["Switch", "SWITCHES", "SWITCH_KEYS", "saved_switches", "MethodSpec", "METHODS", "BASELINES", "Method", "BatchSpec",
           "Crops", "StepBatch", "build"]
