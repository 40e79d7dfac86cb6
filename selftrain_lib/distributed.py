"""Data-parallel training across processes (``torchrun``), and the single-process default.

``torchrun --nproc-per-node N -m selftrain_lib run ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in the environment; :func:`init_from_env` joins
the process group (NCCL on GPUs, gloo on the CPU). What a stage does with it (``stage.run_stage``):

- each rank draws its own sub-batches: rank r at step s takes what a single process would take at
  "global step" ``s * N + r`` (the same epoch permutation, disjoint slices; augmentation seeded by
  the global step), so the N ranks together see N times the images per step, none twice;
- gradients are averaged by ``DistributedDataParallel``; as every rank starts from the same
  weights and applies the same update, the EMA teacher stays identical on every rank without
  communication (a test checks it bit for bit);
- batch-norm normalises with each rank's own batch statistics, or synchronised ones with
  ``sync_bn: true`` (CUDA only); the running statistics are averaged over ranks after every step
  (:func:`average_buffers`), so the models and their EMA teachers stay identical (the paper's
  setting freezes batch-norm anyway);
- only rank 0 writes (config, checkpoints, curves, metrics, the model, pseudo-masks); the
  pseudo-mask pass is split across ranks and gathered on rank 0; the others wait at a barrier and
  then read the finished run like any cached one; resume reads rank 0's checkpoint on every rank.

The number of processes changes the training (N times the batch), so it is part of the run hash
when N > 1. Without ``torchrun`` nothing here does anything: :data:`SINGLE` is one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), None elsewhere."""
        if not self.enabled:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The mean over ranks of each (scalar) tensor; one collective for all of them."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked / self.size))

    def shard(self, n: int) -> range:
        """This rank's share of ``range(n)``: ``rank, rank + size, ...``."""
        return range(self.rank, n, self.size)


SINGLE = World()


def current() -> World:
    """The world of the initialised process group, or :data:`SINGLE`."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return SINGLE


def init_from_env(device: str = "auto") -> World:
    """Join the process group that ``torchrun`` describes in the environment (once); without it,
    :data:`SINGLE`. ``device`` picks the backend: NCCL when the runs go to CUDA, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return current()
    if not dist.is_initialized():
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if on_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return current()


def average_buffers(model: torch.nn.Module) -> None:
    """Average the floating-point buffers (batch-norm running statistics) of a
    ``DistributedDataParallel`` model (compiled or not) over ranks, in one collective; a no-op
    otherwise. Each rank updates them from its own batch, so without this the ranks' models, and
    their EMA teachers, would drift apart in the statistics they use in eval mode."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return
    buffers = [b for b in model.module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for b, mean in zip(buffers, flat.split([b.numel() for b in buffers])):
        b.copy_(mean.view_as(b))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` and ``torch.compile`` wrappers (or ``model``)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
