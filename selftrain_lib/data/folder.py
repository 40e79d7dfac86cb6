"""Your own data: a folder of images and integer PNG masks.

Either of two layouts under ``data_root``::

    images/<id>.jpg|png   masks/<id>.png   train.txt   val.txt      (lists of ids)
    images/train/<id>.*   masks/train/<id>.png   images/val/...   masks/val/...

Extensions are found in any case (``IMG_0.JPG``, ``IMG_0.PNG``); an id may hold subfolders
(``a/x``) but not leave its folder (``../x`` is an error naming the list file and line).

A mask ``masks/<id>.png`` (``L`` or ``P`` mode) holds class indices ``0..num_classes-1`` and
``ignore_index`` for void pixels. ``num_classes``, ``ignore_index``, ``class_names`` and
``palette`` come from the dataset's params YAML (see the README, "Datasets").
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import IMAGE_EXTENSIONS, FileDataset, dataset_name_problem, find_image, find_mask, read_id_list, resolve
from .records import DATASETS, DatasetInfo


def folder(root: str | os.PathLike, split: str = "train", num_classes: int = 2, ignore_index: int = 255,
           list_file: str | os.PathLike | None = None, resize: tuple[int, int] | None = None,
           name: str = "folder") -> FileDataset:
    """The ``split`` of a folder dataset: ``list_file`` (default ``<split>.txt``) if it exists, else ``images/<split>/``."""
    root = Path(root)
    lst = resolve(root, list_file) if list_file is not None else root / f"{split}.txt"
    if list_file is not None or lst.is_file():
        ids = read_id_list(lst)
        image_dir, mask_dir = root / "images", root / "masks"
    else:
        image_dir, mask_dir = root / "images" / split, root / "masks" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{name}: neither a list file {lst} nor a folder {image_dir}")
        ids = sorted(p.stem for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not ids:
            raise ValueError(f"{name}: no images in {image_dir}")
        ids = sorted(set(ids))  # x.jpg beside x.png: find_image names both
    listings: dict = {}  # one scandir per folder, not a stat per id and extension
    return FileDataset(name=name, ids=ids, image_paths=[find_image(image_dir, i, listings) for i in ids],
                       mask_paths=[find_mask(mask_dir, i, listings) for i in ids], num_classes=num_classes,
                       ignore_index=ignore_index, resize=tuple(resize) if resize else None)


def open_folder(config, info: DatasetInfo, root: Path, part: str, list_file) -> FileDataset:
    """The reader of a folder dataset (one a configuration declares, or :func:`register_dataset` added)."""
    return folder(root, part, num_classes=info.num_classes, ignore_index=info.ignore_index, list_file=list_file,
                  resize=config.resize, name=info.name)


def folder_info(config) -> DatasetInfo:
    """The folder dataset ``config`` declares (``num_classes``, with ``class_names``, ``palette``,
    ``ignore_index`` and ``resize``); its values are checked by :func:`selftrain_lib.config.validate`."""
    from .voc import voc_palette

    n = config.num_classes
    return DatasetInfo(name=config.dataset, class_names=tuple(config.class_names or (f"class_{i}" for i in range(n))),
                       palette=tuple(config.palette or voc_palette(n)),
                       image_size=tuple(config.resize) if config.resize else (0, 0),
                       default_pool_size=0, default_val_size=0, ignore_index=config.ignore_index, format="folder")


def register_dataset(info: DatasetInfo) -> None:
    """Add (or replace) a folder dataset; the built-in names cannot be replaced, and a name that is
    no plain file name (``../../x``: it names files in the cache) is an error."""
    problem = dataset_name_problem(info.name)
    if problem:
        raise ValueError(f"dataset: {info.name!r} {problem}")
    if info.name in DATASETS and DATASETS[info.name].format != "folder":
        raise ValueError(f"dataset: {info.name!r} is a built-in dataset; give your folder dataset another name")
    DATASETS[info.name] = info
