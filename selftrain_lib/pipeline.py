"""The method end to end: Stage 1 → 2 → 3 (→ N), chained through the run cache.

``run(dataset="synth-street", labels=20, scale="quick")`` is the one call (``labels``: the count
used, 20 of quick's 600-image pool for the paper's 100); each stage's run
is reused when finished and resumed when interrupted (see :func:`selftrain_lib.stage.run_stage`).
``run(..., method="mt-cutmix")`` trains a baseline instead (one single-stage run, see
:mod:`selftrain_lib.methods`); ``method="supervised"`` is Stage 1 (the same run).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .data import load_data
from .distributed import current, init_from_env
from .methods import METHODS
from .paths import runs_dir
from .preflight import preflight
from .runs import config_hash
from .stage import run_stage
from .train.run_folder import StageResult
from .train.run_key import stage_run_keys


@dataclass
class PipelineResult:
    config: Config
    stages: list[StageResult]
    wall_time_s: float

    @property
    def final(self) -> StageResult:
        return self.stages[-1]

    def summary(self) -> dict[str, Any]:
        """One JSON-able object: per stage, validation mIoU, pseudo-mask mIoU on U and run folder."""
        return {"dataset": self.config.dataset, "method": self.config.method, "labels": self.config.labels,
                "seed": self.config.seed, "scale": self.config.scale, "wall_time_s": round(self.wall_time_s, 2),
                "stages": {str(r.stage): {k: None if v != v else v for k, v in r.summary().items() if k != "stage"}
                           for r in self.stages}}


def run_stages(config: Config, stages: int = 3, out: str | Path | None = None, progress: bool = True,
               keys: list[dict[str, Any]] | None = None) -> PipelineResult:
    """Run ``stages`` stages of the method with ``config``; stage k >= 2 uses stage k-1's pseudo-masks.
    ``out``: the run cache (None: :func:`selftrain_lib.paths.runs_dir`). ``keys``: the stages' run
    keys when the caller computed them already with :func:`run_keys` (the CLI, which names the run
    to resume on an interruption; a sweep's worker, whose keys were planned); None computes them."""
    out = runs_dir(out)
    if keys is None:
        keys = run_keys(config, stages)
    elif len(keys) != check_stages(stages):
        raise ValueError(f"keys: {len(keys)} run keys given for {stages} stages")
    t0 = time.perf_counter()
    # the data is loaded once, here, unless every stage is in the run cache (then no stage reads it)
    finished = all((out / config_hash(key) / "metrics.json").is_file() for key in keys)
    data = None if finished else load_data(config)
    results: list[StageResult] = []
    for k, key in enumerate(keys, start=1):
        previous = results[-1].pseudo_masks if results else None
        results.append(run_stage(config, k, previous, out=out, progress=progress, data=data, key=key))
    return PipelineResult(config, results, time.perf_counter() - t0)


def run_keys(config: Config, stages: int) -> list[dict[str, Any]]:
    """The run keys of stages 1..``stages`` of ``config``, computed once per invocation and handed
    down to each stage (the data's identity stats every file of a dataset read from files). First
    the files the configuration names are checked (:func:`~selftrain_lib.preflight.preflight`) and,
    under torchrun, the process group is joined: the keys hold the number of processes."""
    stages = check_stages(stages)
    if stages > 1 and METHODS[config.method].single_stage:
        raise ValueError(f"stages: method {config.method!r} is a single-stage run, got stages={stages}")
    preflight(config)  # the files the configuration names, before a hash is computed or a step runs
    init_from_env(config.device)  # under torchrun: join the process group (else one process)
    return stage_run_keys(config, stages, current().size)


# more stages than anyone trains (the paper reports a 4th); a typo of 10**8 would otherwise hash 10**8 runs
MAX_STAGES = 100


def check_stages(stages: Any) -> int:
    """``stages`` is a whole number in [1, :data:`MAX_STAGES`]: 2.5 is not rounded down to 2."""
    if isinstance(stages, bool) or not isinstance(stages, int):
        raise ValueError(f"stages: expected a whole number of stages, got {stages!r}")
    if stages < 1:
        raise ValueError(f"stages: must be >= 1, got {stages}")
    if stages > MAX_STAGES:
        raise ValueError(f"stages: must be <= {MAX_STAGES}, got {stages}")
    return stages


def resolve_run(dataset: str | None = None, labels: int | str | None = None, scale: str = "quick",
                stages: int | None = None, params: str | Path | None = None, method: str | None = None,
                **overrides: Any) -> tuple[Config, int]:
    """The configuration and the number of stages that :func:`run` with these arguments trains."""
    if labels is not None:
        overrides["labels"] = labels
    if method is not None:
        overrides["method"] = method
    config = load_config(dataset, scale, params=params, **overrides)
    if stages is None:
        stages = 1 if METHODS[config.method].single_stage else 3
    return config, check_stages(stages)


def run(dataset: str | None = None, labels: int | str | None = None, scale: str = "quick",
        stages: int | None = None, out: str | Path | None = None, progress: bool = True,
        params: str | Path | None = None, method: str | None = None, **overrides: Any) -> PipelineResult:
    """Load the configuration (``params/<dataset>.yaml`` at ``scale`` plus ``overrides``) and run
    ``stages`` stages. ``dataset``: None takes the one ``params`` names (else synth-street). ``labels``: the
    configuration key, the count of the preset's pool used (``quick``: 20 of 600 for the paper's 100;
    :func:`selftrain_lib.experiments.scaled_labels` turns the paper's count into it, as ``--labels``
    and the notebooks do); None keeps the YAML's (the smallest label count); ``"full"``
    trains on the whole pool (full supervision: use ``stages=1``). ``method``: ``"three-stage"``
    (default, ``stages`` defaults to 3), or a baseline: ``"supervised"``, ``"mt-cutout"``,
    ``"mt-cutmix"`` (single-stage runs: ``stages`` defaults to, and must be, 1)."""
    config, stages = resolve_run(dataset, labels, scale, stages, params, method, **overrides)
    return run_stages(config, stages, out, progress)
