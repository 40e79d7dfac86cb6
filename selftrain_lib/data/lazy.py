"""Training on datasets read from files: the pool and validation set as :class:`FileDataset` s,
the training view (masks of L only), and per-sample weakly augmented crops.

Nothing is held in memory: every step reads its images (and the masks of its labelled images,
and the pseudo-masks, one PNG per pool image at the image's own size) and crops them. Each
sample's randomness comes from ``(seed, stage, step, position)``, so a resumed run draws exactly
the crops an uninterrupted one does, whatever the order or process that reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import DatasetInfo, Split
from .files import FileDataset


@dataclass
class FileSegmentationData:
    """A train pool and a validation set read from files (what :func:`load_data` returns for them)."""

    info: DatasetInfo
    train: FileDataset
    val: FileDataset

    @property
    def train_ids(self) -> list[str]:
        return self.train.ids

    @property
    def pool_size(self) -> int:
        return len(self.train)


class FileTrainingView:
    """Images of L∪U, masks of L only: ``mask(i)`` of an unlabelled image is an error."""

    def __init__(self, data: FileSegmentationData, split: Split):
        self._files = data.train
        self.labelled = split.labelled
        self._is_labelled = set(split.labelled.tolist())
        self.ignore_index = data.info.ignore_index
        self.ids = data.train.ids

    def __len__(self) -> int:
        return len(self._files)

    def image(self, i: int) -> Tensor:
        return self._files.image(i)

    def mask(self, i: int) -> Tensor:
        if i not in self._is_labelled:
            raise PermissionError(f"image {self.ids[i]!r} is unlabelled: training may not read its mask")
        return self._files.mask(i)


def pseudo_mask_path(directory: str | Path, image_id: str) -> Path:
    return Path(directory) / f"{image_id}.png"


def read_pseudo_mask(directory: str | Path, image_id: str, size: tuple[int, int]) -> Tensor:
    """The pseudo-mask PNG of ``image_id`` (uint8 (H, W)); it must have the image's size."""
    path = pseudo_mask_path(directory, image_id)
    if not path.is_file():
        raise FileNotFoundError(f"pseudo-mask {path} is missing")
    with Image.open(path) as m:
        a = np.asarray(m, dtype=np.uint8)
    if a.shape != tuple(size):
        raise ValueError(f"{path}: pseudo-mask size {a.shape} differs from its image {tuple(size)}")
    return torch.from_numpy(a.copy())


class CropDataset(Dataset):
    """Item ``(index, labelled, step, position)`` → one weakly augmented fixed-size crop.

    Returns ``{"image": float (3, ch, cw) in [0, 1], "label": int64 (ch, cw) or None,
    "pseudo": int64 (ch, cw) or None, "inside": bool (ch, cw)}``: random scale, crop (pixels from outside the image are
    the fill colour in the image and the ignore value in the masks) and flip, the same for the
    image, its ground truth (labelled items only) and its pseudo-mask (when ``pseudo_dir`` is
    given); ``inside`` marks the crop's pixels that come from the image. The random draws come from ``generator(seed, stage, "weak", step, position)``.
    """

    def __init__(self, view: FileTrainingView, weak, seed: int, stage: int, pseudo_dir: str | Path | None = None):
        self.view, self.weak, self.seed, self.stage = view, weak, seed, stage
        self.pseudo_dir = Path(pseudo_dir) if pseudo_dir is not None else None

    def __len__(self) -> int:  # items are addressed by (index, labelled, step, position), not 0..N-1
        return len(self.view)

    def __getitem__(self, item) -> dict:
        from ..stage import generator

        index, labelled, step, position = item
        index = int(index)
        image = self.view.image(index)
        size = tuple(image.shape[1:])
        masks = []
        if labelled:
            masks.append(self.view.mask(index).long()[None])
        if self.pseudo_dir is not None:
            masks.append(read_pseudo_mask(self.pseudo_dir, self.view.ids[index], size).long()[None])
        masks.append(torch.zeros((1,) + size, dtype=torch.long))  # becomes the map of pixels inside the image
        g = generator(self.seed, self.stage, "weak", int(step), int(position))
        x, out = self.weak(image[None].float().div_(255), masks, g)
        label = out.pop(0)[0] if labelled else None
        pseudo = out.pop(0)[0] if self.pseudo_dir is not None else None
        return {"image": x[0], "label": label, "pseudo": pseudo, "inside": out.pop(0)[0] != self.view.ignore_index}
