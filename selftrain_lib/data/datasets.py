"""The datasets by name (each one's record: :mod:`selftrain_lib.data.records`), the two kinds of
data, label splits and the training views that keep U's ground truth out of training.

The generated benchmarks are held in memory (:class:`SegmentationData`, a few tens of MB) as
``uint8``: images ``(N, 3, H, W)``, masks ``(N, H, W)`` with ``ignore_index`` (255) for void
pixels. Datasets read from files (:class:`FileSegmentationData`: Cityscapes, VOC, folders) hold
paths and read each image when it is used. Both offer the same parts (``data.train``,
``data.val``: ``ids``, ``image(i)``, ``mask(i)``, ``chunks(...)``) and ``training_view(split)``;
what differs is read by the training readers (:mod:`selftrain_lib.train.batches`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from ..runs import atomic_write_text, config_hash, files_fingerprint
from . import records
from .files import FileDataset
from .folder import folder_info, open_folder, register_dataset
from .records import DATASETS, IGNORE_INDEX, DatasetInfo, View
from .synthetic import cache_root, generator_digest, load_synthetic
from . import cityscapes, voc  # noqa: F401  (they register their records: after the stand-ins, so lists of datasets start with those)

# The paper's label counts |L| of each of its datasets registered under its own name (the authors'
# splits: Cityscapes 100, 372, 744, 1488 of 2,975; VOC 1/100, 1/50, 1/20, 1/8 of 10,582 = 106, 212,
# 529, 1323), read from the records (data/cityscapes.py, data/voc.py)
PAPER_LABEL_COUNTS = View(lambda: {n: r.paper.counts for n, r in records.RECORDS.items() if r.paper is not None})


def dataset_info(name: str) -> DatasetInfo:
    """The registered dataset ``name`` (built in, or added by :func:`register_dataset`)."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {name!r} (known: {sorted(DATASETS)})")
    return DATASETS[name]


def config_dataset(config) -> DatasetInfo:
    """The dataset ``config`` trains on: the folder dataset it declares (``num_classes``, with
    ``class_names``, ``palette``, ``ignore_index`` and ``resize``: :func:`~selftrain_lib.data.folder.folder_info`),
    else the registered one it names.

    The one place a folder dataset is resolved; nothing is registered, so a configuration is plain
    data (two configurations may declare two different datasets of one name). The declaration's
    values are checked by :func:`selftrain_lib.config.validate`."""
    if config.num_classes is None:
        return dataset_info(config.dataset)
    return folder_info(config)


@dataclass(frozen=True)
class ArrayDataset:
    """Images and masks held in memory, with the interface of a :class:`~selftrain_lib.data.files.FileDataset`."""

    images: Tensor        # uint8 (N, 3, H, W)
    masks: Tensor | None  # uint8 (N, H, W); None: images to predict only
    ids: Sequence[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def image(self, i: int) -> Tensor:
        return self.images[i]

    def mask(self, i: int) -> Tensor:
        return self.masks[i]

    def chunks(self, indices: Sequence[int], batch_size: int) -> Iterator[tuple[list[int], Tensor]]:
        """``indices`` in batches of ``batch_size``: (indices, uint8 images (b, 3, H, W))."""
        indices = [int(i) for i in indices]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            yield chunk, self.images[chunk]


@dataclass
class SegmentationData:
    """A train pool and a validation set held in memory, with ground truth for both (held by the
    loader and the evaluation only: training sees a :class:`TrainingView`)."""

    info: DatasetInfo
    train_images: Tensor  # uint8 (N, 3, H, W)
    train_masks: Tensor   # uint8 (N, H, W): for U, read by evaluation only
    val_images: Tensor    # uint8 (M, 3, H, W)
    val_masks: Tensor     # uint8 (M, H, W)
    train_ids: list[str]

    @property
    def pool_size(self) -> int:
        return self.train_images.shape[0]

    @property
    def train(self) -> ArrayDataset:
        return ArrayDataset(self.train_images, self.train_masks, self.train_ids)

    @property
    def val(self) -> ArrayDataset:
        return ArrayDataset(self.val_images, self.val_masks, [f"val_{i:05d}" for i in range(self.val_images.shape[0])])

    def training_view(self, split: Split) -> TrainingView:
        return TrainingView(images=self.train_images, labelled=split.labelled,
                            labelled_masks=self.train_masks[split.labelled].clone(),
                            ignore_index=self.info.ignore_index, ids=tuple(self.train_ids))

    def check_once(self, config, progress: bool = False, identity: str | None = None) -> None:
        """Nothing to check: generated arrays (see :meth:`FileSegmentationData.check_once`)."""


@dataclass
class FileSegmentationData:
    """A train pool and a validation set read from files, image by image."""

    info: DatasetInfo
    train: FileDataset
    val: FileDataset

    @property
    def train_ids(self) -> list[str]:
        return self.train.ids

    @property
    def pool_size(self) -> int:
        return len(self.train)

    def training_view(self, split: Split) -> FileTrainingView:
        return FileTrainingView(self, split)

    def check_once(self, config, progress: bool = False, identity: str | None = None) -> Path:
        """Decode every file before training (once per fingerprint: :func:`check_files_once`)."""
        return check_files_once(config, self, progress, identity)


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` when given, else the library's cache root (:func:`synthetic.cache_root`)."""
    return Path(cache_dir) if cache_dir else cache_root()


def load_data(config) -> SegmentationData:
    """Load (generating and caching on first use) the dataset named by ``config.dataset``.

    Datasets read from files (Cityscapes, VOC, folders) come back as a
    :class:`FileSegmentationData` that reads each file when it is used.
    """
    info = config_dataset(config)
    if info.format != "synthetic":
        return FileSegmentationData(info=info, **open_parts(config))
    sizes = (config.pool_size or info.default_pool_size, config.val_size or info.default_val_size)
    cache = default_cache_dir(config.cache_dir) / "synthetic"
    arrays = load_synthetic(config.dataset, pool_size=sizes[0], val_size=sizes[1], seed=config.data_seed,
                            cache_dir=cache)

    def images(a):  # (N, H, W, 3) numpy → (N, 3, H, W) tensor
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()

    n = arrays["train_images"].shape[0]
    return SegmentationData(info=info, train_images=images(arrays["train_images"]),
                            train_masks=torch.from_numpy(arrays["train_masks"]),
                            val_images=images(arrays["val_images"]), val_masks=torch.from_numpy(arrays["val_masks"]),
                            train_ids=[f"train_{i:05d}" for i in range(n)])


def open_files(config, part: str = "train"):
    """The :class:`~selftrain_lib.data.files.FileDataset` of ``part`` (``train``/``val``) of a file dataset.

    Reads ``config.data_root``, ``config.train_list`` / ``config.val_list`` and ``config.resize``.
    """
    info = config_dataset(config)
    if info.format == "synthetic":
        raise ValueError(f"dataset: {config.dataset!r} is generated in memory; use load_data")
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    if not config.data_root:
        raise ValueError(f"data_root: dataset {config.dataset!r} is read from files; set data_root to its folder")
    root = Path(config.data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_root: no such folder {root}")
    list_file = config.train_list if part == "train" else config.val_list
    rec = records.record(info.name)
    reader = rec.open if rec is not None and rec.open is not None and rec.info.format == info.format else open_folder
    return reader(config, info, root, part, list_file)


def open_parts(config) -> dict:
    """``{"train": FileDataset, "val": FileDataset}`` of a dataset read from files. An image in both
    is an error naming the lists: validating on training images would inflate every mIoU."""
    parts = {part: open_files(config, part) for part in ("train", "val")}
    both = sorted(set(parts["train"].ids) & set(parts["val"].ids))
    if both:
        lists = [config.train_list or "the train list/folder", config.val_list or "the val list/folder"]
        raise ValueError(f"{config.dataset}: {len(both)} image(s) are in both the train and the val set "
                         f"({lists[0]}, {lists[1]} under {config.data_root}), e.g. {both[:5]}")
    return parts


# The Config keys the data is read with, per kind of dataset: each enters the hash of every stage
# run (selftrain_lib.train.run_key.stage_key). ``data_root`` is where the files are: what they hold enters
# as the data's identity (:func:`data_identity`), so a moved folder keeps its runs.
GENERATED_READS = ("dataset", "data_seed", "pool_size", "val_size", "ignore_index")
FILE_READS = ("dataset", "train_list", "val_list", "resize", "resize_filter", "num_classes", "class_names", "palette",
              "ignore_index")


def data_reads(config) -> tuple[str, ...]:
    """The Config keys the data of ``config`` is generated or read with."""
    return GENERATED_READS if config_dataset(config).format == "synthetic" else FILE_READS


def data_identity(config) -> str:
    """What the data of ``config`` is, for the run hash: the generated datasets by the digest of
    their generator (data/synthetic/), a dataset read from files by :func:`data_fingerprint`."""
    return generator_digest(config.dataset) if config_dataset(config).format == "synthetic" else data_fingerprint(config)


def data_fingerprint(config) -> str:
    """What a dataset read from files holds, for the run hash: every image and mask file of the
    train and val parts, in pool order, with size and mtime (:func:`selftrain_lib.runs.files_fingerprint`).
    Another folder, an edited list or a replaced image gives another fingerprint."""
    parts = open_parts(config).values()
    return files_fingerprint([p for d in parts for p in (*d.image_paths, *d.mask_paths)], config.data_root)


# Bumped when the file readers check more (2: image modes, EXIF orientation, 16-bit and float images,
# ids that leave their folder): data checked by an older reader is checked again.
FILE_READER_VERSION = 2


def check_files_once(config, data, progress: bool = False, fingerprint: str | None = None) -> Path:
    """Decode every image and mask of ``data`` (a dataset read from files) before training, so a bad
    file is named in seconds, not after a stage. Done once per data fingerprint and label set: a
    marker under ``<cache>/checked/`` records it. Returns the marker. ``fingerprint``: the data's
    :func:`data_fingerprint` when the caller has it (the run key holds it), else read here."""
    info = data.info
    key = {"files": fingerprint or data_fingerprint(config), "num_classes": info.num_classes, "ignore_index": info.ignore_index,
           "resize": config.resize, "format": info.format, "reader": FILE_READER_VERSION}
    marker = default_cache_dir(config.cache_dir) / "checked" / f"{config.dataset}_{config_hash(key)}"
    if not marker.is_file():
        data.train.check(progress=progress)
        data.val.check(progress=progress)
        atomic_write_text(marker, f"{config.data_root}: {len(data.train)} train and {len(data.val)} val files read\n")
    return marker


def paper_splits(dataset: str, ids: list[str], out_dir: str | os.PathLike, seed: int = 0) -> dict[int, Path]:
    """Write one split file per paper label count (``<out_dir>/<dataset>_<labels>_seed<seed>.txt``)."""
    if dataset not in PAPER_LABEL_COUNTS:
        raise ValueError(f"dataset: no paper label counts for {dataset!r} (known: {sorted(PAPER_LABEL_COUNTS)})")
    out_dir = Path(out_dir)
    return {n: write_split(out_dir / f"{dataset}_{n}_seed{seed}.txt", make_split(len(ids), n, seed), ids)
            for n in PAPER_LABEL_COUNTS[dataset]}


# ------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Indices into the train pool: L (labelled) and U (the rest). Both sorted."""

    labelled: Tensor    # int64 (|L|,)
    unlabelled: Tensor  # int64 (|U|,)


def make_split(pool_size: int, labels: int, seed: int) -> Split:
    """Choose ``labels`` images of the pool uniformly at random, deterministically from ``seed``."""
    if not 1 <= labels <= pool_size:
        raise ValueError(f"labels: must be between 1 and the pool size {pool_size}, got {labels}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(pool_size, generator=g)
    return _split_from(perm[:labels], pool_size)


def check_split_count(path: str | os.PathLike, listed: int, labels: int) -> None:
    """A split file of ``listed`` ids for ``labels`` labelled images: they must agree, as the label
    count chooses λ and the batch design (``by_labels``) and is what a result reports."""
    if listed == 0:
        raise ValueError(f"{path}: the split lists no images")
    if listed != labels:
        raise ValueError(f"split_file: {path} lists {listed} image ids, but labels is {labels} (the label count "
                         f"chooses λ and the batch design, and is what results report): give --labels {listed} "
                         f"or a split file of {labels} ids")


def _split_from(labelled: Tensor, pool_size: int) -> Split:
    is_l = torch.zeros(pool_size, dtype=torch.bool)
    is_l[labelled] = True
    return Split(labelled=torch.nonzero(is_l).flatten(), unlabelled=torch.nonzero(~is_l).flatten())


def write_split(path: str | os.PathLike, split: Split, ids: list[str]) -> Path:
    """Write the labelled image ids, one per line (the format ST++ and others publish)."""
    return atomic_write_text(path, "".join(f"{ids[i]}\n" for i in split.labelled.tolist()))  # the Path written


def read_split(path: str | os.PathLike, ids: list[str]) -> Split:
    """Read a list of labelled image ids; unknown or repeated ids are errors naming the file and id."""
    path = Path(path)
    index = {name: i for i, name in enumerate(ids)}
    chosen: list[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):  # a BOM is no id
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name not in index:
            raise ValueError(f"{path}:{lineno}: unknown image id {name!r}")
        chosen.append(index[name])
    if not chosen:
        raise ValueError(f"{path}: the split lists no images")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{path}: an image id is listed twice")
    return _split_from(torch.tensor(chosen), len(ids))


# ------------------------------------------------------------------------------------------
# what training may see
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingView:
    """The data a stage trains on: every pool image, but masks of L only.

    U's ground truth is not in here, so no loss can read it (``tests/test_pipeline.py`` proves that
    changing it leaves training bit-identical).
    """

    images: Tensor           # uint8 (N, 3, H, W): L∪U
    labelled: Tensor         # int64 (|L|,): indices into images
    labelled_masks: Tensor   # uint8 (|L|, H, W): ground truth of images[labelled]
    ignore_index: int = IGNORE_INDEX
    ids: Sequence[str] | None = None  # of the pool images (to read pseudo-masks by id)

    def __len__(self) -> int:
        return self.images.shape[0]


class FileTrainingView:
    """Images of L∪U read from files, masks of L only: ``mask(i)`` of an unlabelled image is an error."""

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


def training_view(data: SegmentationData | FileSegmentationData, split: Split) -> TrainingView | FileTrainingView:
    """What a stage of ``data`` may train on (``data.training_view(split)``)."""
    return data.training_view(split)
