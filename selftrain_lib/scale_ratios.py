"""The ratios that decide whether a scale can show what the method does (README, "Scales").

At 60,000 steps per stage the paper's Stage 2 sees the unlabelled pool 50-80 times, every labelled
image hundreds of times, and its EMA teacher lags 0.2-2 % of the stage behind the student, with
batch norm frozen. A CPU preset that shrinks the steps without shrinking the rest changes these
ratios, and with them what the experiment measures. :func:`scale_ratios` computes them for any
configuration, so a preset can be compared with the paper's before anything trains.
"""
from __future__ import annotations

from typing import Any

from .config import Config
from .data import config_dataset
from .ema import scale_decays


def scale_ratios(config: Config, pool_size: int | None = None) -> dict[str, Any]:
    """Per-stage exposure and teacher lag of ``config``.

    Returns ``labelled_epochs_stage1`` (times Stage 1 sees each labelled image, on average),
    ``labelled_epochs_stage2`` (the same for a stage >= 2, which draws ``labelled_per_batch`` of
    each batch from L), ``pool_passes_stage2`` (times a stage >= 2 sees each image of L∪U through
    Sub-batch 1), ``teacher_lag_start`` / ``teacher_lag_end`` (the EMA's averaging window
    1 / (1 - decay), as a fraction of the stage's steps, under the first and the last decay) and
    ``frozen_bn``. ``pool_size``: the training pool (default: the config's, else the dataset's).
    """
    pool = pool_size or config.pool_size or config_dataset(config).default_pool_size
    if not pool:
        raise ValueError(f"pool_size: {config.dataset!r} is read from files; give its number of training images")
    decays = scale_decays(config.ema_decays, config.ema_reference_steps, config.steps)

    def lag(d: float) -> float:
        return 1.0 if d >= 1 else min(1.0, 1.0 / (1.0 - d) / config.steps)

    return {
        "labels": config.labels, "pool": pool,
        "labelled_epochs_stage1": config.stage1_steps * config.batch_size / config.labels,
        "labelled_epochs_stage2": config.steps * config.labelled_per_batch / config.labels,
        "pool_passes_stage2": config.steps * (config.batch_size - config.labelled_per_batch) / pool,
        "teacher_lag_start": lag(decays[0]), "teacher_lag_end": lag(decays[-1]),
        "frozen_bn": config.freeze_bn,
    }
