"""Three-stage self-training for semi-supervised semantic segmentation.

The layout follows the data flow: ``data`` → ``augment`` → ``models`` → ``losses`` / ``ema``
→ ``stage`` (one stage of training) → ``pipeline`` (stages chained through the run cache in
``runs``) → ``evaluate``. Start with :func:`selftrain_lib.run` or :func:`selftrain_lib.run_stage`.
"""
from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "run", "run_stage", "StageResult", "PipelineResult"]
__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing the package must not import torch-heavy modules
    if name in ("run", "PipelineResult"):
        from . import pipeline
        return getattr(pipeline, name)
    if name == "run_stage":
        from .stage import run_stage
        return run_stage
    if name == "StageResult":
        from .train.run_folder import StageResult
        return StageResult
    raise AttributeError(name)
