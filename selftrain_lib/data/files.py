"""Real datasets read from disk: Cityscapes, PASCAL VOC 2012 (augmented) and your own folder.

Each loader returns a :class:`FileDataset`: a list of (image, mask) file pairs read lazily, one
image at a time, and checked as it is read. Every problem is an error that names the file:
a missing image or mask, an image and mask of different sizes, a label value that is neither a
class nor the ignore value, an empty list.

``image(i)`` gives ``uint8 (3, H, W)``, ``mask(i)`` gives ``uint8 (H, W)`` with classes
``0..num_classes-1`` and ``ignore_index`` (255). Cityscapes images are resized to
``resize`` (default 512x1024; masks with nearest-neighbour sampling), as the paper works.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IGNORE_INDEX = 255


@dataclass
class FileDataset:
    """(image, mask) file pairs, read lazily and validated on reading."""

    ids: list[str]
    image_paths: list[Path]
    mask_paths: list[Path]
    num_classes: int
    ignore_index: int = IGNORE_INDEX
    resize: tuple[int, int] | None = None           # (H, W) images and masks are resized to
    label_map: np.ndarray | None = field(default=None, repr=False)  # raw label value -> class (256 entries)

    def __post_init__(self):
        if not self.ids:
            raise ValueError("the dataset lists no images")
        if not len(self.ids) == len(self.image_paths) == len(self.mask_paths):
            raise ValueError("ids, image_paths and mask_paths differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    def check_files(self) -> None:
        """Raise FileNotFoundError naming the first missing image or mask (without reading pixels)."""
        for paths in (self.image_paths, self.mask_paths):
            for name, p in zip(self.ids, paths):
                if not p.is_file():
                    raise FileNotFoundError(f"{p}: no such file (listed for dataset image {name!r})")

    def image(self, i: int) -> Tensor:
        """uint8 (3, H, W)."""
        img = _open(self.image_paths[i]).convert("RGB")
        if self.resize is not None:
            img = img.resize((self.resize[1], self.resize[0]), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()

    def mask(self, i: int) -> Tensor:
        """uint8 (H, W): classes and the ignore value; checked against the image's size."""
        path = self.mask_paths[i]
        m = _open(path)
        if m.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: a mask must be a single-channel integer image, got mode {m.mode}")
        img_size = _open(self.image_paths[i]).size
        if m.size != img_size:
            raise ValueError(f"{path}: mask size {m.size[::-1]} differs from its image "
                             f"{self.image_paths[i]} {img_size[::-1]} (H, W)")
        raw = np.asarray(m).astype(np.int64)
        if raw.min() < 0 or raw.max() > 255:
            raise ValueError(f"{path}: label values must be in 0..255, found {raw.min()}..{raw.max()}")
        labels = self.label_map[raw] if self.label_map is not None else raw
        bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(self.num_classes), self.ignore_index])
        if bad.size:
            raise ValueError(f"{path}: unknown label value(s) {bad.tolist()} (classes 0..{self.num_classes - 1}, "
                             f"ignore {self.ignore_index})")
        out = Image.fromarray(labels.astype(np.uint8))
        if self.resize is not None:
            out = out.resize((self.resize[1], self.resize[0]), Image.NEAREST)
        return torch.from_numpy(np.asarray(out).copy())


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return Image.open(path)
    except Exception as err:  # PIL's errors do not always say which file
        raise ValueError(f"{path}: cannot be read as an image ({err})") from err


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids, one per line (blank lines and '#' comments skipped); VOC-style lines
    ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` give ``x``. Empty or missing: an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such list file")
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(Path(line.split()[0]).stem)
    if not ids:
        raise ValueError(f"{path}: the list names no images")
    return ids


# ------------------------------------------------------------------------------------------
# Cityscapes
# ------------------------------------------------------------------------------------------

def cityscapes_label_map() -> np.ndarray:
    """labelIds -> trainIds (19 classes, 255 ignore) from the official table in ``cityscapesscripts``."""
    from cityscapesscripts.helpers.labels import labels

    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < 255:
            table[label.id] = label.trainId
    return table


def cityscapes_classes() -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """The 19 train-id class names and colours, in train-id order."""
    from cityscapesscripts.helpers.labels import labels

    train = sorted((l for l in labels if 0 <= l.trainId < 255), key=lambda l: l.trainId)
    return tuple(l.name for l in train), tuple(tuple(l.color) for l in train)


def load_cityscapes(root: str | os.PathLike, split: str = "train", resize: tuple[int, int] | None = (512, 1024)
                    ) -> FileDataset:
    """``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``root/gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    root = Path(root)
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: no such folder (expected Cityscapes' leftImg8bit/{split}/<city>/)")
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise ValueError(f"{img_dir}: no *_leftImg8bit.png images in its city folders")
    ids = [p.name[: -len("_leftImg8bit.png")] for p in images]
    masks = [root / "gtFine" / split / p.parent.name / f"{i}_gtFine_labelIds.png" for p, i in zip(images, ids)]
    ds = FileDataset(ids, images, masks, num_classes=19, resize=resize, label_map=cityscapes_label_map())
    ds.check_files()
    return ds


# ------------------------------------------------------------------------------------------
# PASCAL VOC 2012 augmented
# ------------------------------------------------------------------------------------------

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def voc_palette() -> tuple[tuple[int, int, int], ...]:
    """The standard VOC colour map (bit-interleaved), first 21 entries."""
    out = []
    for i in range(len(VOC_CLASSES)):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


def load_voc(root: str | os.PathLike, split: str = "train",
             lists: dict[str, str] | None = None) -> FileDataset:
    """``root/JPEGImages/<id>.jpg`` with ``root/SegmentationClassAug/<id>.png``; ids from
    ``ImageSets/Segmentation/train_aug.txt`` (10,582) or ``val.txt`` (1,449), or ``lists[split]``."""
    root = Path(root)
    default = {"train": "ImageSets/Segmentation/train_aug.txt", "val": "ImageSets/Segmentation/val.txt"}
    list_path = Path((lists or {}).get(split) or root / default[split])
    ids = read_id_list(list_path if list_path.is_absolute() else root / list_path)
    ds = FileDataset(ids, [root / "JPEGImages" / f"{i}.jpg" for i in ids],
                     [root / "SegmentationClassAug" / f"{i}.png" for i in ids], num_classes=len(VOC_CLASSES))
    ds.check_files()
    return ds


# ------------------------------------------------------------------------------------------
# your own data
# ------------------------------------------------------------------------------------------

def load_folder(root: str | os.PathLike, split: str, num_classes: int, ignore_index: int = IGNORE_INDEX,
                image_ext: Sequence[str] = (".png", ".jpg", ".jpeg")) -> FileDataset:
    """``root/images/<id>.<ext>`` with ``root/masks/<id>.png``, ids from ``root/<split>.txt``; or,
    without that list, every image in ``root/<split>/images/`` with ``root/<split>/masks/<id>.png``."""
    root = Path(root)
    if (root / f"{split}.txt").is_file():
        ids = read_id_list(root / f"{split}.txt")
        img_dir, mask_dir = root / "images", root / "masks"
    else:
        img_dir, mask_dir = root / split / "images", root / split / "masks"
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{root}: neither a list {split}.txt nor a folder {img_dir}")
        ids = sorted(p.stem for p in img_dir.iterdir() if p.suffix.lower() in image_ext)
        if not ids:
            raise ValueError(f"{img_dir}: no images ({', '.join(image_ext)})")

    def image_path(i: str) -> Path:
        for ext in image_ext:
            if (img_dir / f"{i}{ext}").is_file():
                return img_dir / f"{i}{ext}"
        return img_dir / f"{i}{image_ext[0]}"  # missing: check_files names it

    ds = FileDataset(ids, [image_path(i) for i in ids], [mask_dir / f"{i}.png" for i in ids], num_classes,
                     ignore_index)
    ds.check_files()
    return ds
