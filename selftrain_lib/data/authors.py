"""Which labelled set a run trains on: a split file, the authors' split, or one drawn from the seed.

``config.split`` chooses (``split_file``, when set, always wins):

- ``random``: ``labels`` images drawn from ``seed`` (:func:`~selftrain_lib.data.datasets.make_split`);
- ``authors``: the paper's split (Hung et al. / Mittal et al., loaded by the authors' code as
  ``split_0.pkl``), shipped as id lists in ``selftrain_lib/data/splits/`` (``PROVENANCE.md``):
  Cityscapes 100, 372, 744, 1488 and VOC 106, 212, 529, 1323 labelled images;
- ``auto`` (the ``paper`` presets of Cityscapes and VOC): the authors' split for seed 0 at one of
  their label counts, else a random one. The authors published one split, so seeds 1, 2... draw
  their own, as before.
"""
from __future__ import annotations

from pathlib import Path

from ..runs import id_list_digest, split_file_ids
from .datasets import PAPER_LABEL_COUNTS as AUTHORS_COUNTS  # the paper's label counts are the authors' splits

SPLITS = ("random", "authors", "auto")
SPLITS_DIR = Path(__file__).resolve().parent / "splits"


def authors_split_file(dataset: str, labels: int) -> Path | None:
    """The shipped id list of the authors' split of ``dataset`` with ``labels`` images, or None."""
    if labels not in AUTHORS_COUNTS.get(dataset, ()):
        return None
    return SPLITS_DIR / f"{dataset}_{labels}.txt"


def split_source(config) -> str:
    """Where the labelled set of ``config`` comes from: ``"file"`` (``split_file``), ``"authors"``
    or ``"random"`` (``split: auto`` resolved by dataset, label count and seed)."""
    if config.split_file:
        return "file"
    if config.split == "auto":
        has = authors_split_file(config.dataset, config.labels) is not None
        return "authors" if has and config.seed == 0 else "random"
    return config.split


def labelled_list(config) -> Path | None:
    """The id list the labelled set is read from (``split_file`` or the authors'), None when drawn."""
    source = split_source(config)
    if source == "file":
        return Path(config.split_file)
    if source == "authors":
        return authors_split_file(config.dataset, config.labels)
    return None


def split_key(config) -> dict:
    """What the labelled set contributes to a run's hash: ``labels`` and ``seed`` draw a random one;
    one read from a list enters by the digest of its ids (``split_file`` or the authors' split: the
    same ids are the same run), and ``split`` by what it resolves to (``auto`` drawn at random is the
    random run)."""
    listed = labelled_list(config)
    return {"labels": config.labels, "seed": config.seed, "split": "list" if listed is not None else "random",
            "split_file": id_list_digest(split_file_ids(listed)) if listed is not None else None}


def check_split(config) -> str | None:
    """Why ``config.split`` is impossible (a message naming the key), or None."""
    if config.split not in SPLITS:
        return f"must be one of {list(SPLITS)}, got {config.split!r}"
    if config.split != "authors":
        return None
    if config.split_file:
        return "'authors' and a split_file both name the labelled set; give one"
    counts = AUTHORS_COUNTS.get(config.dataset)
    if counts is None:
        return f"the authors published splits of {sorted(AUTHORS_COUNTS)} only, not of {config.dataset!r}"
    if config.labels not in counts:
        return f"the authors' split of {config.dataset} has {list(counts)} labelled images, not labels={config.labels}"
    return None
