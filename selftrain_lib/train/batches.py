"""The batch of each step: samplers of L and of L∪U, two readers of training crops (arrays in
memory, batched; files, per crop, in loader workers) and :class:`BatchSource`, which draws the
sub-batches a method declares (its :class:`~selftrain_lib.methods.base.BatchSpec`) and hands the
crops to the method, which makes its :class:`~selftrain_lib.methods.base.StepBatch` of them.

Everything random in a step is drawn from generators seeded by (seed, stage, step), so a run
resumed from a checkpoint computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import hashlib
import os
from itertools import count
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..augment import WeakAugment
from ..data.datasets import FileTrainingView, TrainingView, config_dataset
from ..distributed import SINGLE, World
from ..evaluate import to_input
from ..methods.base import BatchSpec, Crops, Method, StepBatch
from ..runs import read_mask_pngs, read_pseudo_mask


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, e.g. ``derive_seed(seed, stage, "aug", step)``."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


class EpochSampler:
    """Indices ``0..size-1`` in a fresh permutation each epoch, ``per_step`` at a time.

    ``indices(step)`` is a pure function of ``(parts, step)``: no state to save for resume.
    """

    def __init__(self, size: int, per_step: int, *parts: Any):
        self.size, self.per_step, self.parts = size, per_step, parts
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.size, generator=generator(*self.parts, epoch))
        return self._cache[epoch]

    def indices(self, step: int) -> Tensor:
        pos = torch.arange(step * self.per_step, (step + 1) * self.per_step)
        return torch.stack([self._perm(int(p) // self.size)[int(p) % self.size] for p in pos])


class StepDraws:
    """The draws of a step that do not depend on the reader: the samplers of L and of L∪U at the
    sub-batch sizes of ``spec`` (the method's), the weak augmentation, and the rank's place among
    the training processes (rank r of N draws what one process would draw at global step step * N + r)."""

    @staticmethod
    def reads(spec: BatchSpec) -> tuple[str, ...]:
        """The Config keys the draws read for a method's batch ``spec`` (in the run hash:
        :func:`selftrain_lib.train.run_key.stage_key`): the seed, the weak augmentation, and the
        keys of the sub-batch sizes (``spec.reads``)."""
        return ("seed", "crop_size", "scale_range", "flip") + spec.reads

    def __init__(self, config, stage: int, spec: BatchSpec, pool_size: int, num_labelled: int, ignore_index: int,
                 world: World = SINGLE):
        self.seed, self.stage, self.world = config.seed, stage, world
        n_lab, self.n_pool = spec.labelled, spec.pool
        self.labelled = EpochSampler(num_labelled, n_lab, config.seed, stage, "L")
        self.pool = EpochSampler(pool_size, max(self.n_pool, 1), config.seed, stage, "LuU")
        self.weak = WeakAugment(tuple(config.crop_size), tuple(config.scale_range), config.flip,
                                ignore_index=ignore_index)

    def indices(self, step: int) -> tuple[Tensor, Tensor]:
        """(positions in L of Sub-batch 2, pool indices of Sub-batch 1) at the *global* ``step``."""
        return self.labelled.indices(step), self.pool.indices(step)[: self.n_pool]

    def generator(self, step: int) -> torch.Generator:
        """The step's generator (global ``step``): the arrays reader's weak augmentation, then the
        strong augmentation or the boxes."""
        return generator(self.seed, self.stage, "aug", step)


# ------------------------------------------------------------------------------------------
# the two readers: the only code that knows whether the data is in memory or in files
# ------------------------------------------------------------------------------------------

class ArrayReader:
    """Crops of a :class:`~selftrain_lib.data.TrainingView` held in memory: each sub-batch is read,
    moved to the device and weakly augmented in one batched call, drawing from the step's generator.
    ``pseudo``: uint8 (N, H, W), or the folder of the previous stage's PNGs, or None."""

    def __init__(self, view: TrainingView, pseudo, draws: StepDraws, config, device: torch.device):
        if isinstance(pseudo, (str, os.PathLike)):  # a bad PNG is an error naming it
            pseudo = read_mask_pngs(pseudo, view.ids, tuple(view.images.shape[2:]),
                                    config_dataset(config).num_classes, view.ignore_index)
        self.view, self.pseudo, self.draws, self.device = view, pseudo, draws, device

    def _weak(self, images: Tensor, masks: list[Tensor], g: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        return self.draws.weak(to_input(images, self.device), [m.to(self.device).long() for m in masks], g)

    def crops(self, step: int, g: torch.Generator) -> Crops:
        """The crops of the global ``step``; the weak augmentation of Sub-batch 2, then of Sub-batch 1,
        is drawn from ``g``."""
        v, pseudo = self.view, self.pseudo
        pos, idx = self.draws.indices(step)
        x2, masks2 = self._weak(v.images[v.labelled[pos]],
                                [v.labelled_masks[pos]] + ([pseudo[v.labelled[pos]]] if pseudo is not None else []), g)
        crops = Crops(x2, masks2[0], masks2[1] if pseudo is not None else None)
        if self.draws.n_pool:
            inside = torch.zeros((len(idx),) + tuple(v.images.shape[2:]), dtype=torch.uint8)  # padding: ignore
            x1, masks1 = self._weak(v.images[idx], ([pseudo[idx]] if pseudo is not None else []) + [inside], g)
            crops.pool_image, crops.pool_inside = x1, masks1.pop() != v.ignore_index
            crops.pool_pseudo = masks1[0] if pseudo is not None else None
        return crops


class FileReader:
    """Crops of a view of files: every crop is read and weakly augmented on its own, from
    ``generator(seed, stage, "weak", step, position)``, so the crops do not depend on the order or
    the process that reads them. ``config.num_workers`` loader processes read ahead (pinned
    memory on CUDA); the crops are the same with or without them. ``pseudo``: the folder of the
    previous stage's PNGs (one per pool image, at its size), or None."""

    def __init__(self, view: FileTrainingView, pseudo, draws: StepDraws, config, device: torch.device):
        self.view, self.draws, self.device = view, draws, device
        self.pseudo_dir = Path(pseudo) if pseudo is not None else None
        # a pseudo-mask value past the classes is an error naming the PNG
        self.num_classes = config_dataset(config).num_classes if pseudo is not None else None
        self.num_workers = config.num_workers
        self._loader, self._next_step = None, 0  # background workers, made on first use

    def crop(self, index: int, labelled: bool, step: int, position: int) -> dict[str, Tensor | None]:
        """One weakly augmented fixed-size crop of pool image ``index``: ``{"image": float (3, ch, cw),
        "label": int64 (ch, cw) (labelled images only, else None), "pseudo": int64 (ch, cw) or None,
        "inside": bool (ch, cw)}``; pixels from outside the image are the fill colour in the image
        and the ignore value in the masks."""
        image = self.view.image(index)
        size = tuple(image.shape[1:])
        masks = [self.view.mask(index).long()[None]] if labelled else []
        if self.pseudo_dir is not None:
            mask = read_pseudo_mask(self.pseudo_dir / f"{self.view.ids[index]}.png", size, self.num_classes,
                                    self.view.ignore_index)
            masks.append(torch.from_numpy(mask.copy()).long()[None])
        masks.append(torch.zeros((1,) + size, dtype=torch.long))  # becomes the map of pixels inside the image
        g = generator(self.draws.seed, self.draws.stage, "weak", int(step), int(position))
        x, out = self.draws.weak(image[None].float().div_(255), masks, g)
        label = out.pop(0)[0] if labelled else None
        pseudo = out.pop(0)[0] if self.pseudo_dir is not None else None
        return {"image": x[0], "label": label, "pseudo": pseudo, "inside": out.pop(0)[0] != self.view.ignore_index}

    def step_crops(self, step: int) -> dict[str, Tensor | None]:
        """The CPU half of the global ``step`` (files read, weak augmentation), stacked: what a loader
        worker computes."""
        pos, idx = self.draws.indices(step)
        n_pool = self.draws.n_pool  # Sub-batch 2 follows Sub-batch 1: its positions come after
        lab = [self.crop(int(self.view.labelled[p]), True, step, n_pool + j) for j, p in enumerate(pos.tolist())]
        pool = [self.crop(i, False, step, j) for j, i in enumerate(idx.tolist())]

        def stack(items, key):
            return torch.stack([it[key] for it in items]) if items and items[0][key] is not None else None

        return {"lab_image": stack(lab, "image"), "lab_label": stack(lab, "label"), "lab_pseudo": stack(lab, "pseudo"),
                "pool_image": stack(pool, "image"), "pool_pseudo": stack(pool, "pseudo"),
                "pool_inside": stack(pool, "inside")}

    def crops(self, step: int, g: torch.Generator) -> Crops:
        """The crops of the global ``step`` (``g`` is not drawn from: each crop has its own generator)."""
        c = self._step_crops(step)
        return Crops(**{k: v.to(self.device, non_blocking=True) if v is not None else None for k, v in c.items()})

    def _step_crops(self, step: int) -> dict[str, Tensor | None]:
        """:meth:`step_crops`, from background workers that read ahead in step order (restarted when
        the loop jumps, e.g. on resume), or in this process."""
        if not self.num_workers:
            return self.step_crops(step)
        if self._loader is None or step != self._next_step:
            steps = count(step, self.draws.world.size)  # this rank's global steps from here on
            self._loader = iter(DataLoader(_StepCrops(self), batch_size=None, sampler=steps, prefetch_factor=2,
                                           num_workers=self.num_workers, pin_memory=self.device.type == "cuda"))
            self._next_step = step
        self._next_step += self.draws.world.size
        return next(self._loader)


class _StepCrops(Dataset):
    """Item ``step`` → :meth:`FileReader.step_crops`: what a loader worker computes."""

    def __init__(self, reader: FileReader):
        self.reader = reader

    def __getitem__(self, step: int):
        return self.reader.step_crops(int(step))


READERS = {TrainingView: ArrayReader, FileTrainingView: FileReader}


class BatchSource:
    """Draws the sub-batches ``method`` declares (``method.batch``: never U's ground truth) through
    the reader of ``view`` (:data:`READERS`: a :class:`~selftrain_lib.data.TrainingView` in memory,
    or a view of files) and gives the weakly augmented crops to ``method.make_batch``, which makes
    the step's :class:`~selftrain_lib.methods.base.StepBatch`.

    ``method``: the stage's :class:`~selftrain_lib.methods.base.Method` (built by the stage).
    ``pseudo``: the previous stage's pseudo-masks (stage >= 2): their folder, or for arrays a
    uint8 (N, H, W) tensor; read only where the method's batch carries them.
    """

    def __init__(self, method: Method, view, pseudo, config, stage: int, device: torch.device,
                 world: World = SINGLE):
        self.method, self.device = method, device
        self.draws = StepDraws(config, stage, method.batch, len(view), len(view.labelled), view.ignore_index, world)
        self.reader = READERS[type(view)](view, pseudo if method.batch.pseudo else None, self.draws, config, device)

    def __call__(self, step: int) -> StepBatch:
        step = step * self.draws.world.size + self.draws.world.rank  # the global step (StepDraws)
        g = self.draws.generator(step)
        # the arrays reader draws its weak augmentation from g, then the method its strong augmentation or boxes
        return self.method.make_batch(self.reader.crops(step, g), g)
