"""Training-time data flow: where each step's batch comes from (:mod:`.batches`).

:class:`BatchSource` draws the sub-batches a method needs through one of two readers, the only
code that knows whether the data is held in memory (:class:`ArrayReader`, batched) or read from
files (:class:`FileReader`, per crop, in loader workers). The loop and the end-of-stage pass are
:mod:`selftrain_lib.stage`.
"""
from .batches import (READERS, ArrayReader, BatchSource, Crops, EpochSampler, FileReader, StepBatch, StepDraws,
                      derive_seed, generator)

__all__ = ["READERS", "ArrayReader", "BatchSource", "Crops", "EpochSampler", "FileReader", "StepBatch", "StepDraws",
           "derive_seed", "generator"]
