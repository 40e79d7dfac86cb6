"""The run key of a stage: what identifies a stage run in the run cache (docs/run_cache.md).

A stage run lives in ``<out>/<hash>/``, the hash of :func:`stage_run_key`: the configuration keys
that the code the stage runs reads (:func:`stage_key`), the data's identity, the evaluation
protocol and the run its pseudo-masks came from. :func:`stage_run_keys` computes the keys of a
chain of stages at once, reading the data's identity (which stats every file of a dataset read
from files) once; the pipeline passes each key down to :func:`selftrain_lib.stage.run_stage`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Config, execution_keys
from ..data import config_dataset
from ..data.authors import split_key
from ..data.datasets import data_identity, data_reads
from ..evaluate import protocol
from ..methods import Method, build as build_method
from ..models import MODEL_READS
from ..pretrain import pretrained_key
from ..runs import config_hash
from .batches import StepDraws

if TYPE_CHECKING:
    from .run_folder import PseudoMasks

# Bump when a change to the training code changes what a run computes: old cached runs are then
# not reused. 2 (issue 27): the hash declared by the code that reads each key, the evaluation
# protocol in it.
RUN_FORMAT_VERSION = 2

# The Config keys the loop and the end-of-stage pass read (selftrain_lib.stage,
# selftrain_lib.train.final_pass): the initialisation seed, the optimiser, batch-norm freezing,
# when to log and evaluate, the validation sample kept. In every stage's run hash
# (:func:`stage_key`); a key the loop starts reading is added here, in one line.
LOOP_READS = ("seed", "lr", "backbone_lr_mult", "weight_decay", "freeze_bn", "log_every", "eval_every",
              "num_val_samples", "pseudo_ignore_ego")


def loop_reads(config: Config, world_size: int = 1) -> tuple[str, ...]:
    """:data:`LOOP_READS`, ``precision`` when explicit (``auto`` resolves by the device, which like
    ``device`` is no part of a hash) and ``sync_bn`` when several processes train."""
    return LOOP_READS + (("precision",) if config.precision != "auto" else ()) + (("sync_bn",) if world_size > 1 else ())


def stage_key(config: Config, stage: int, world_size: int = 1, method: Method | None = None) -> dict[str, Any]:
    """The configuration part of a stage's run key: the keys that the code the stage runs reads,
    each declared next to the code that reads it (docs/run_cache.md, "How a key enters the hash"):

    - the method: its name and :meth:`~selftrain_lib.methods.Method.reads` at this stage,
    - the model factory: ``model`` and its ``register_model(reads=...)`` (:mod:`selftrain_lib.models`),
    - the initialisation: :func:`selftrain_lib.pretrain.pretrained_key`,
    - the batches and weak augmentation: :meth:`selftrain_lib.train.batches.StepDraws.reads` of the
      method's batch (``Method.batch.reads``: the keys of its sub-batch sizes),
    - the loop: :func:`loop_reads`,
    - the data: :func:`selftrain_lib.data.datasets.data_reads`; the labelled set: :func:`~selftrain_lib.data.authors.split_key`.

    A key no part reads at this stage is left out: ablations share Stage 1, a baseline's keys stay
    out of the three-stage runs. Keys marked ``EXECUTION`` in :class:`~selftrain_lib.config.Config`
    never enter."""
    method = method or build_method(config, stage)
    # a method without a name of its own is named by its class: never confused with another
    key: dict[str, Any] = {"method": method.name or f"{type(method).__module__}.{type(method).__qualname__}"}
    for part in (method.reads(), ("model", *MODEL_READS[config.model]), StepDraws.reads(method.batch),
                 loop_reads(config, world_size), data_reads(config)):
        key.update((k, getattr(config, k)) for k in part)
    key.update(pretrained_key(config))
    key.update(split_key(config))
    leaked = sorted(key.keys() & execution_keys())
    if leaked:  # a reader declares a key its field says changes nothing computed: one of them is wrong
        raise RuntimeError(f"{leaked} are marked EXECUTION in Config but declared as read for the run hash")
    return dict(sorted(key.items()))


def stage_run_key(config: Config, stage: int, pseudo_masks: PseudoMasks | None,
                  world_size: int = 1) -> dict[str, Any]:
    """What identifies a stage run: the keys its code reads (:func:`stage_key`), the data's identity
    (:func:`selftrain_lib.data.datasets.data_identity`: the generator's digest, or the fingerprint of
    the files), the evaluation protocol (:func:`selftrain_lib.evaluate.protocol`), the run its
    pseudo-masks came from, and the number of data-parallel processes when more than one (they
    multiply the batch)."""
    source = pseudo_masks.source_hash if pseudo_masks is not None else None
    return _run_key(config, stage, source, world_size, data_identity(config))


def stage_run_keys(config: Config, stages: int, world_size: int = 1,
                   identity: str | None = None) -> list[dict[str, Any]]:
    """The run keys (:func:`stage_run_key`) of stages 1..``stages`` of ``config``, computed without
    training: stage k's key holds stage k-1's hash, as its pseudo-masks come from there. The data's
    identity is read once for all of them; ``identity``: the one a caller read already for the same
    data (a sweep reads it once per dataset)."""
    identity = data_identity(config) if identity is None else identity
    keys: list[dict[str, Any]] = []
    for k in range(1, stages + 1):
        keys.append(_run_key(config, k, config_hash(keys[-1]) if keys else None, world_size, identity))
    return keys


def stage_hashes(config: Config, stages: int, world_size: int = 1) -> list[str]:
    """The run hashes of stages 1..``stages`` of ``config`` (trained by ``world_size`` processes),
    computed without training (:func:`stage_run_keys`)."""
    return [config_hash(key) for key in stage_run_keys(config, stages, world_size)]


def _run_key(config: Config, stage: int, source_hash: str | None, world_size: int, identity: str) -> dict[str, Any]:
    """:func:`stage_run_key` with the previous run's hash and the data's identity given."""
    method = build_method(config, stage)
    info = config_dataset(config)
    key = {"format": RUN_FORMAT_VERSION, "stage": stage, "config": stage_key(config, stage, world_size, method),
           "data": identity,
           "protocol": protocol(info.num_classes, info.ignore_index, config.resize or info.image_size,
                                method.evaluated(config.eval_model)),
           "pseudo_masks_from": source_hash}
    if world_size > 1:
        key["world_size"] = world_size
    return key
