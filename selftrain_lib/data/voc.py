"""PASCAL VOC 2012 augmented (SBD): 21 classes, 10,582 training and 1,449 validation images.

Layout (``data_root``)::

    JPEGImages/<id>.jpg
    SegmentationClassAug/<id>.png          class indices 0..20, 255 for void
    ImageSets/Segmentation/train_aug.txt   10,582 ids (or DeepLab-style "/JPEGImages/x.jpg /Seg.../x.png" lines)
    ImageSets/Segmentation/val.txt         1,449 ids

The list files and the mask folder are configurable (relative to ``data_root`` or absolute).
Images keep their size (about 500x375); evaluation reads each whole.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import FileDataset, read_id_list, resolve
from .records import DatasetInfo, DatasetRecord, PaperDataset, register

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
TRAIN_LIST = "ImageSets/Segmentation/train_aug.txt"
VAL_LIST = "ImageSets/Segmentation/val.txt"
TRAIN_SIZE, VAL_SIZE = 10582, 1449
IGNORE = 255


def voc_palette(n: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The VOC colour map (bit-interleaved label index): bits 0, 3, 6... of the index are red's
    bits 7, 6, 5..., bits 1, 4, 7... green's, bits 2, 5, 8... blue's."""
    def channel(i: int, k: int) -> int:
        return sum(((i >> (3 * j + k)) & 1) << (7 - j) for j in range(8))

    return tuple((channel(i, 0), channel(i, 1), channel(i, 2)) for i in range(n))


PALETTE = voc_palette(21)


def voc(root: str | os.PathLike, split: str = "train", list_file: str | os.PathLike | None = None,
        mask_dir: str = "SegmentationClassAug", resize: tuple[int, int] | None = None) -> FileDataset:
    """The images of ``list_file`` (default: ``train_aug.txt`` for ``train``, ``val.txt`` for ``val``)."""
    root = Path(root)
    if list_file is None:
        if split not in ("train", "val"):
            raise ValueError(f"voc: split must be 'train' or 'val', got {split!r}")
        list_file = TRAIN_LIST if split == "train" else VAL_LIST
    ids = read_id_list(resolve(root, list_file))
    return FileDataset(name="voc", ids=ids, image_paths=[root / "JPEGImages" / f"{i}.jpg" for i in ids],
                       mask_paths=[resolve(root, mask_dir) / f"{i}.png" for i in ids], num_classes=len(CLASS_NAMES),
                       ignore_index=IGNORE, resize=tuple(resize) if resize else None)


def _open(config, info: DatasetInfo, root: Path, part: str, list_file) -> FileDataset:
    """The record's reader: ``list_file`` (default: the standard lists) and ``config.resize``."""
    return voc(root, part, list_file=list_file, resize=config.resize)


# The paper's VOC: 1/100, 1/50, 1/20, 1/8 of the 10,582 augmented training images (rounded: 106,
# 212, 529, 1323; Tables III and IV), the ablations at 1/50
_FRACTIONS = ("1/100", "1/50", "1/20", "1/8")
PAPER = PaperDataset(key="pascal_voc_aug", name="PASCAL VOC 2012", short="VOC",
                     counts=tuple(round(TRAIN_SIZE * 1 / int(f[2:])) for f in _FRACTIONS), labels=_FRACTIONS,
                     fractions=_FRACTIONS, full="full", ablation="1/50", tables=("III", "IV"), says_fractions=True)
# VOC images vary in size (at most 500x500); crops larger than an image are padded with ignore
RECORD = register(DatasetRecord(
    DatasetInfo(name="voc", class_names=CLASS_NAMES, palette=PALETTE, image_size=(500, 500),
                default_pool_size=TRAIN_SIZE, default_val_size=VAL_SIZE, format="voc"),
    open=_open, paper=PAPER))
