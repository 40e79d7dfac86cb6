"""One record per dataset, registered where the dataset lives (as ``models/`` registers models).

A :class:`DatasetRecord` carries everything the library knows of a dataset: what the code needs
(:class:`DatasetInfo`: classes, sizes, ignore value, its format), how its files are read (``open``;
None for the generated datasets), and the paper's facts (:class:`PaperDataset`: the dataset of the
paper it is or stands for, its label counts, fractions and columns, its tables and the key of its
rows in ``paper_results.csv``), with the label counts its own grids write.

Registered by::

    data/synthetic/street.py, objects.py   the stand-ins (synth-street, synth-objects)
    data/cityscapes.py, data/voc.py         the paper's datasets, read from files
    data/folder.py                          your own folder datasets (declared by their params YAML)

A module of ``selftrain_lib.data`` that calls :func:`register` is found and imported by the
package (:func:`discover`), so a new dataset with its own layout is one loader file beside them
and its ``params/<name>.yaml`` (docs/extending.md). Every table of dataset facts elsewhere
(``label_counts``, ``experiments``, ``results``, ``paper_figures``) reads these records.

This module imports no torch.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetInfo:
    """What the code needs to know about a dataset: classes, sizes, ignore value."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    image_size: tuple[int, int]  # (H, W) of the images as stored / evaluated
    default_pool_size: int
    default_val_size: int
    ignore_index: int = IGNORE_INDEX
    format: str = "synthetic"  # "synthetic" (generated, in memory), else read from files ("cityscapes", "voc", "folder", ...)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class PaperDataset:
    """A dataset of the paper as its tables name it."""

    key: str                     # its name in paper_results.csv ("cityscapes", "pascal_voc_aug")
    name: str                    # in captions ("PASCAL VOC 2012")
    short: str                   # in column headers ("VOC")
    counts: tuple[int, ...]      # |L| of its label columns (the authors' splits)
    labels: tuple[str, ...]      # how paper_results.csv names those columns ("372", "1/50")
    fractions: tuple[str, ...]   # the same columns as fractions of the training set ("1/8", "1/50")
    full: str                    # the full-supervision column ("2975", "full")
    ablation: str                # the column of Tables V, VI and Fig. 3 ("100", "1/50")
    tables: tuple[str, ...]      # its label tables ("II",) or ("III", "IV")
    says_fractions: bool = False  # its tables name fractions (VOC): titles say the fraction too

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """(its label in paper_results.csv, the column's header), full supervision last."""
        heads = [(lab, lab if lab == frac else f"{frac} ({lab})") for lab, frac in zip(self.labels, self.fractions)]
        return (*heads, (self.full, "full" if self.full == "full" else f"full ({self.full})"))


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset: its :class:`DatasetInfo`, its reader and its paper facts.

    ``open(config, info, root, part, list_file)`` reads ``part`` (``train``/``val``) of a dataset
    read from files into a :class:`~selftrain_lib.data.files.FileDataset`; None: generated in memory.
    ``paper``: the paper's dataset it is; ``stands_for``: else the registered dataset whose paper
    facts it takes (an embedded stand-in, or your layout of a paper dataset). ``counts``: its label
    counts as the grids write them, one per paper column (default: the paper's); ``ablation_labels``:
    the count of the ablation column (default: the paper's count of that column)."""

    info: DatasetInfo
    open: Callable[..., Any] | None = None
    paper: PaperDataset | None = None
    stands_for: str | None = None
    counts: tuple[int, ...] = ()
    ablation_labels: int | None = None

    @property
    def name(self) -> str:
        return self.info.name


#: name -> record, in registration order
RECORDS: dict[str, DatasetRecord] = {}
#: name -> DatasetInfo of every dataset a name can run: the records' and folder datasets registered
#: by :func:`selftrain_lib.data.folder.register_dataset`
DATASETS: dict[str, DatasetInfo] = {}


def register(record: DatasetRecord) -> DatasetRecord:
    """Add ``record``; a name registered twice is an error (two modules claiming one dataset)."""
    if record.name in RECORDS:
        raise ValueError(f"dataset {record.name!r} is already registered")
    if record.stands_for is not None and record.paper is not None:
        raise ValueError(f"dataset {record.name!r}: give paper or stands_for, not both")
    RECORDS[record.name] = record
    DATASETS[record.name] = record.info
    return record


def discover(package: str, path) -> None:
    """Import every module of ``package`` (``selftrain_lib.data``) not yet imported, so that a
    dataset module beside the others registers itself without being named anywhere."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


# ------------------------------------------------------------------------------------------
# reads of the records: what every table of dataset facts is derived from
# ------------------------------------------------------------------------------------------

def record(name: str) -> DatasetRecord | None:
    return RECORDS.get(name)


def paper_of(name: str) -> PaperDataset | None:
    """The paper's dataset ``name`` is or stands for (None: a dataset of yours, not in the paper)."""
    r = RECORDS.get(name)
    if r is None:
        return None
    if r.stands_for is not None:
        return paper_of(r.stands_for)
    return r.paper


def counts_of(name: str) -> tuple[int, ...]:
    """Its label counts as the grids write them (none for a dataset without paper facts)."""
    r, paper = RECORDS.get(name), paper_of(name)
    if paper is None:
        return ()
    return tuple(r.counts) or paper.counts


def ablation_labels_of(name: str) -> int | None:
    """The label count of its runs in the ablation column (Cityscapes 100, VOC 1/50)."""
    r, paper = RECORDS.get(name), paper_of(name)
    if paper is None:
        return None
    if r.ablation_labels is not None:
        return r.ablation_labels
    return dict(zip(paper.labels, counts_of(name))).get(paper.ablation)


def paper_labels_of(name: str) -> dict[Any, str]:
    """Its counts -> the paper's name of the same column (``{375: "372", "full": "2975"}``)."""
    paper = paper_of(name)
    if paper is None:
        return {}
    return {**dict(zip(counts_of(name), paper.labels)), "full": paper.full}


def paper_datasets() -> dict[str, PaperDataset]:
    """The paper's datasets by their key in ``paper_results.csv``, in the order first registered."""
    out: dict[str, PaperDataset] = {}
    for name in RECORDS:
        paper = paper_of(name)
        if paper is not None:
            out.setdefault(paper.key, paper)
    return out


def stand_ins() -> dict[str, str]:
    """Each dataset standing in for another -> the registered dataset it stands for."""
    return {n: r.stands_for for n, r in RECORDS.items() if r.stands_for is not None}


class View(Mapping):
    """A read-only mapping computed from the records on each read: a name kept for the table it
    replaced (``PAPER_LABEL_COUNTS``, ``STAND_INS``...), which sees datasets registered later."""

    def __init__(self, compute: Callable[[], dict]):
        self._compute = compute

    def __getitem__(self, key):
        return self._compute()[key]

    def __iter__(self) -> Iterator:
        return iter(self._compute())

    def __len__(self) -> int:
        return len(self._compute())

    def __repr__(self) -> str:
        return repr(self._compute())
