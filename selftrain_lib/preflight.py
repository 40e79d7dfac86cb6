"""The files a configuration names, checked once before anything trains: :func:`preflight`.

:func:`selftrain_lib.config.validate` checks values only (a saved ``config.json`` loads after its
data moved); what the values point at is checked here, by the entry points that train (the CLI,
:func:`selftrain_lib.run` and its notebooks, sweeps, :func:`selftrain_lib.stage.run_stage`), before
a run hash is computed or a step runs. Each error names the key and the file or folder.

What needs the data loaded is checked by the data code when a stage loads it, still before its
first step: a split file's ids against the pool (:func:`selftrain_lib.data.read_split`), the layout
of a dataset's folders (:func:`selftrain_lib.data.open_files`), every image decoded
(``check_once``), a checkpoint's weights against the model (:mod:`selftrain_lib.pretrain`).
"""
from __future__ import annotations

from pathlib import Path

from .config import PRETRAINED, Config, ConfigError
from .data import config_dataset, labelled_list
from .data.datasets import check_split_count
from .runs import split_file_ids


def preflight(config: Config) -> None:
    """Raise :class:`ConfigError` (or ``ValueError`` for a split file's content) naming the first
    key whose file or folder is missing or unusable: ``data_root``, ``train_list``, ``val_list``,
    ``split_file`` (and the authors' split it may stand for), ``pretrained``."""
    _check_data_root(config)
    _check_split(config)
    p = config.pretrained
    if p not in PRETRAINED and not Path(p).expanduser().is_file():
        raise ConfigError(f"pretrained: must be {', '.join(map(repr, PRETRAINED))} or an existing checkpoint file, "
                          f"got {p!r}")


def _check_data_root(config: Config) -> None:
    """A dataset read from files has its folder, and the list files it names are in it."""
    if config_dataset(config).format == "synthetic":
        return  # generated into the cache (validate forbids a data_root)
    if not config.data_root:
        raise ConfigError(f"data_root: dataset {config.dataset!r} is read from files; set data_root to its folder")
    root = Path(config.data_root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data_root: no such folder {config.data_root}")
    for key in ("train_list", "val_list"):
        v = getattr(config, key)
        if v is not None:
            p = Path(v) if Path(v).is_absolute() else root / v
            if not p.is_file():
                raise ConfigError(f"{key}: no such list file {p}")


def _check_split(config: Config) -> None:
    """The list the labelled set is read from exists, is text and lists ``labels`` ids (the label
    count chooses λ and the batch design, and is what a result reports)."""
    if config.split_file is not None and not Path(config.split_file).is_file():
        raise ConfigError(f"split_file: no such file {config.split_file}")
    listed = labelled_list(config)
    if listed is not None:
        check_split_count(listed, len(split_file_ids(listed)), config.labels)
