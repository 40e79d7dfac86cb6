"""The parts of a stage that differ for datasets read from files (Cityscapes, VOC, folders).

Batches are assembled from per-sample crops (:class:`~selftrain_lib.data.lazy.CropDataset`);
evaluation and the pseudo-mask pass run image by image, since images may differ in size; the
pseudo-masks are one PNG per pool image at that image's size. The training step itself is the
same code as for the in-memory datasets (``stage.train_step``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from .progress import tqdm

from .data.lazy import CropDataset, FileSegmentationData, FileTrainingView
from .distributed import SINGLE, World
from .evaluate import ConfusionMatrix, scores, to_input
from .runs import atomic_directory, atomic_savez, atomic_torch_save
from .stage import SubBatchDraws


class FileBatchSource(SubBatchDraws):
    """:class:`~selftrain_lib.stage.BatchSource` for a :class:`FileTrainingView`: same samplers,
    same sub-batch order (Sub-batch 1 from L∪U, then Sub-batch 2 from L), same strong augmentation.

    Reading and weak augmentation (:meth:`step_crops`) can run ahead in ``config.num_workers``
    loader processes (pinned memory on CUDA); every draw is a function of the step, so the batches
    are the same with or without workers. Strong augmentation runs batched on the device."""

    def __init__(self, view: FileTrainingView, pseudo_dir, config, stage: int, device: torch.device,
                 world: World = SINGLE):
        super().__init__(config, stage, device, world, len(view), len(view.labelled), view.ignore_index)
        self.view = view
        self.crops = CropDataset(view, self.weak, config.seed, stage, pseudo_dir if stage >= 2 else None)
        self._loader, self._next_step = None, 0  # background workers (config.num_workers), made on first use

    def step_crops(self, step: int) -> dict[str, torch.Tensor | None]:
        """The CPU half of a step (files read, weak augmentation), for the local ``step``: stacked
        crops of Sub-batch 2 (``lab_*``) and Sub-batch 1 (``pool_*``). Runs in loader workers."""
        step = self.global_step(step)
        lab = [self.crops[(int(self.view.labelled[p]), True, step, self.n_pool + j)]
               for j, p in enumerate(self.labelled.indices(step).tolist())]
        pool = [self.crops[(i, False, step, j)] for j, i in enumerate(self.pool.indices(step)[: self.n_pool].tolist())]

        def stack(items, key):
            return torch.stack([it[key] for it in items]) if items and items[0][key] is not None else None

        return {"lab_image": stack(lab, "image"), "lab_label": stack(lab, "label"), "lab_pseudo": stack(lab, "pseudo"),
                "pool_image": stack(pool, "image"), "pool_pseudo": stack(pool, "pseudo"),
                "pool_inside": stack(pool, "inside")}

    def _crops(self, step: int) -> dict[str, torch.Tensor | None]:
        """``step_crops(step)``, from ``num_workers`` background workers that read ahead in step order
        (restarted when the loop jumps, e.g. on resume), or in this process."""
        if not self.config.num_workers:
            return self.step_crops(step)
        if self._loader is None or step != self._next_step:
            from itertools import count

            from torch.utils.data import DataLoader

            self._loader = iter(DataLoader(_StepCrops(self), batch_size=None, sampler=count(step),
                                           num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
                                           prefetch_factor=2))
            self._next_step = step
        self._next_step += 1
        return next(self._loader)

    def __call__(self, step: int):
        from .stage import StepBatch, generator

        c = {k: v.to(self.device, non_blocking=True) if v is not None else None for k, v in self._crops(step).items()}
        x2, y2 = c["lab_image"], c["lab_label"]
        if self.stage == 1 and self.box_masks is None:
            return StepBatch(images=x2, labels=y2)
        g = generator(self.config.seed, self.stage, "aug", self.global_step(step))
        x1 = c["pool_image"]
        if self.box_masks is not None:  # a mean teacher baseline: Sub-batch 1 weakly augmented, its boxes
            boxes = self.box_masks.sample(x1.shape[0], x1.shape[2], x1.shape[3], g)
            return StepBatch(images=torch.cat([x1, x2]), labels=y2, valid=c["pool_inside"], boxes=boxes.to(self.device))
        params = self.strong.sample(x1.shape[0], x1.shape[2], x1.shape[3], g)
        x1_aug = self.strong.apply_image(x1, params)
        p1 = self.strong.apply_mask(c["pool_pseudo"], params)
        return StepBatch(images=torch.cat([x1_aug, x2]), labels=y2, pseudo=torch.cat([p1, c["lab_pseudo"]]),
                         clean=torch.cat([x1, x2]), aug=params)


class _StepCrops(torch.utils.data.Dataset):
    """Item ``step`` → :meth:`FileBatchSource.step_crops`: what a loader worker computes."""

    def __init__(self, source: FileBatchSource):
        self.source = source

    def __getitem__(self, step: int):
        return self.source.step_crops(int(step))


@torch.no_grad()
def predict_one(model, image: torch.Tensor, device) -> torch.Tensor:
    """argmax of ``model`` on one whole uint8 image (3, H, W) → uint8 (H, W) on the CPU."""
    return model(to_input(image[None], device)).argmax(1)[0].to(torch.uint8).cpu()


@torch.no_grad()
def evaluate_files(model, files, num_classes: int, ignore_index: int, device, progress: bool = False):
    """mIoU of ``model`` on every image of ``files``, each evaluated whole at its own size."""
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(len(files)), desc="evaluate", disable=not progress, leave=False):
            cm.update(predict_one(model, files.image(i), device).to(device), files.mask(i).to(device))
    finally:
        model.train(was_training)
    return scores(cm)


def finish_file_stage(f, config, stage, run_dir, run_hash, data: FileSegmentationData, split, rows, train_time,
                      device, progress, parent, world: World = SINGLE, evaluated: str = "student",
                      other_vals: dict | None = None):
    """As ``stage._finish_stage``, image by image: final mIoU of ``f`` (the ``evaluated`` network),
    its pseudo-masks of L∪U (one PNG each, written into a temporary folder renamed at the end), their
    quality on U, the files of the run. With several ranks, each writes its share of the pseudo-masks
    into rank 0's temporary folder, and rank 0 does the rest (the others return None)."""
    import contextlib

    info = data.info
    t0 = time.perf_counter()
    unlabelled = set(split.unlabelled.tolist())
    cm_u = ConfusionMatrix(info.num_classes, info.ignore_index)
    was_training = f.training
    f.eval()
    try:
        folder = atomic_directory(Path(run_dir) / "pseudo_masks") if world.is_main else contextlib.nullcontext()
        with folder as tmp:
            tmp = world.broadcast_from_main(tmp)
            for i in tqdm(world.shard(len(data.train)), desc="pseudo-masks", disable=not progress, leave=False):
                pred = predict_one(f, data.train.image(i), device)
                path = tmp / f"{data.train.ids[i]}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pred.numpy(), mode="L").save(path)
                if i in unlabelled:  # U's ground truth: read here, to score the pseudo-masks only
                    cm_u.update(pred, data.train.mask(i))
            matrices = world.gather_to_main(cm_u.mat)  # also: every shard is written before the rename
    finally:
        f.train(was_training)
    if not world.is_main:
        return None
    cm_u.mat = torch.stack(matrices).sum(0)
    val = evaluate_files(f, data.val, info.num_classes, info.ignore_index, device, progress)
    pseudo_time = time.perf_counter() - t0
    n_val = len(data.val)
    sample = np.unique(np.linspace(0, n_val - 1, config.num_val_samples).round().astype(int)) \
        if config.num_val_samples else np.zeros(0, dtype=int)
    f.eval()
    preds = {f"prediction_{k}": predict_one(f, data.val.image(int(i)), device).numpy() for k, i in enumerate(sample)}
    f.train(was_training)
    atomic_savez(Path(run_dir) / "val_samples.npz", indices=sample, **preds)  # images differ in size: one array each
    atomic_torch_save(Path(run_dir) / "model.pt", {k: v.cpu() for k, v in f.state_dict().items()})
    from .stage import write_stage_results

    return write_stage_results(config, stage, run_dir, run_hash, parent, split, info, rows, val, scores(cm_u),
                               train_time, pseudo_time, device, evaluated, other_vals)
