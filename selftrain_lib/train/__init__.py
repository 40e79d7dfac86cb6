"""What a stage run is made of, around its loop (:mod:`selftrain_lib.stage`).

- :mod:`.batches`: where each step's crops come from. :class:`BatchSource` draws the sub-batches
  a method declares (``Method.batch``) and hands them to the method (``Method.make_batch``),
  through one of two readers, the only code that knows whether the data is held in memory
  (:class:`ArrayReader`, batched) or read from files (:class:`FileReader`, per crop, in loader workers).
- :mod:`.parts`: the method, model, teacher, optimiser and batches of a stage, built from configuration.
- :mod:`.run_key`: the run key and hash of a stage run (what the run cache files it under).
- :mod:`.run_folder`: a run's folder: :class:`~.run_folder.StageResult`, its pseudo-masks, and the
  rules for reusing, starting in and leaving a folder.
- :mod:`.checkpoint`: the checkpoint, written during training and read back to resume.
- :mod:`.final_pass`: the end-of-stage pass (pseudo-masks, their quality on U, metrics.json).
- :mod:`.log`: the training log and TensorBoard events.
"""
from ..methods.base import Crops, StepBatch  # the method's; here too, where the batches are drawn
from .batches import READERS, ArrayReader, BatchSource, EpochSampler, FileReader, StepDraws, derive_seed, generator

__all__ = ["READERS", "ArrayReader", "BatchSource", "Crops", "EpochSampler", "FileReader", "StepBatch", "StepDraws",
           "derive_seed", "generator"]
