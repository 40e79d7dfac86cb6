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
