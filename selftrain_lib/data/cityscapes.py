"""Cityscapes in its official layout, 19 train ids, images resized to 512x1024 (masks nearest).

Layout (``data_root``)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Ids are ``<city>/<city>_<seq>_<frame>``. Label ids become the 19 train ids with the official
table of ``cityscapesscripts.helpers.labels``; every other id (void, and the classes Cityscapes
does not evaluate) becomes the ignore value 255.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .files import FileDataset
from .records import DatasetInfo, DatasetRecord, PaperDataset, register

EGO_BORDER_IDS = (1, 2, 3)  # label ids of the ego vehicle, the rectification border and "out of roi"
RESIZE = (512, 1024)  # (H, W): the working resolution of the paper and the work it compares with
IGNORE = 255


def _label_table() -> list[tuple[str, int, int, tuple[int, int, int]]]:
    """(name, id, trainId, colour) of every Cityscapes label: the official table (``cityscapesscripts``,
    a pinned dependency)."""
    from cityscapesscripts.helpers.labels import labels

    return [(l.name, l.id, l.trainId, tuple(l.color)) for l in labels]


def train_classes() -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """(names, palette) of the 19 train ids, in train-id order."""
    rows = sorted((t, n, c) for n, i, t, c in _label_table() if 0 <= t < 255)
    assert [t for t, _, _ in rows] == list(range(19)), "the Cityscapes table must define train ids 0..18"
    return tuple(n for _, n, _ in rows), tuple(c for _, _, c in rows)


def label_map() -> torch.Tensor:
    """``int16 (256,)``: label id -> train id (255 for ignored ids, -1 for values that are no id)."""
    lut = torch.full((256,), -1, dtype=torch.int16)
    for _, i, t, _ in _label_table():
        if 0 <= i < 256:
            lut[i] = t if 0 <= t < 255 else IGNORE
    lut[IGNORE] = IGNORE  # masks already holding the ignore value keep it
    return lut


def cityscapes(root: str | os.PathLike, split: str = "train", resize: tuple[int, int] | None = RESIZE,
               resize_filter: str = "bilinear") -> FileDataset:
    """The ``split`` (``train`` or ``val``) of the Cityscapes copy under ``root``. ``resize_filter="box"``:
    images box-filtered, masks by majority vote, as the authors' loader. ``fixed_void()`` gives the
    ego-vehicle and border pixels (:data:`EGO_BORDER_IDS`)."""
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise FileNotFoundError(f"cityscapes: missing folder {image_dir} (expected leftImg8bit/{split}/<city>/)")
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise ValueError(f"cityscapes: no *_leftImg8bit.png images under {image_dir}/<city>/")
    stems = [(p.parent.name, p.name[: -len("_leftImg8bit.png")]) for p in images]  # (city, stem)
    ids = [f"{city}/{stem}" for city, stem in stems]
    masks = [root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png" for city, stem in stems]
    return FileDataset(name="cityscapes", ids=ids, image_paths=images, mask_paths=masks, num_classes=19,
                       ignore_index=IGNORE, resize=tuple(resize) if resize else None, label_map=label_map(),
                       resize_filter=resize_filter, fixed_void_ids=EGO_BORDER_IDS)


def _open(config, info: DatasetInfo, root: Path, part: str, list_file) -> FileDataset:
    """The record's reader: ``config.resize`` (default :data:`RESIZE`) and ``resize_filter``."""
    return cityscapes(root, part, resize=config.resize or RESIZE, resize_filter=getattr(config, "resize_filter", "bilinear"))


# The paper's Cityscapes: |L| = 100, 372, 744, 1488 of 2,975 (Table II), the ablations at 100
PAPER = PaperDataset(key="cityscapes", name="Cityscapes", short="Cityscapes", counts=(100, 372, 744, 1488),
                     labels=("100", "372", "744", "1488"), fractions=("1/30", "1/8", "1/4", "1/2"), full="2975",
                     ablation="100", tables=("II",))
_CLASSES, _PALETTE = train_classes()
RECORD = register(DatasetRecord(
    DatasetInfo(name="cityscapes", class_names=_CLASSES, palette=_PALETTE, image_size=RESIZE, default_pool_size=2975,
                default_val_size=500, format="cityscapes"),
    open=_open, paper=PAPER))
