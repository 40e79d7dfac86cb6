"""Where the run cache and the figures live, whatever the working directory.

A notebook opened in JupyterLab starts its kernel in ``notebooks/``; papermill run from the
repository root starts it there; a script may run anywhere. All of them must find the same run
cache (or every run retrains) and none may overwrite the committed ``figures/`` by accident:

* the run cache: ``$SELFTRAIN_RUNS`` when set, else ``<repository>/runs`` (the repository being
  the folder that holds ``pyproject.toml`` above this package, i.e. a source checkout), else
  ``./runs`` (an installed package outside a checkout);
* figures of a notebook run by hand: ``$SELFTRAIN_FIGURES`` when set, else
  ``<repository>/build/figures``, else ``./build/figures``. Only ``make paper-figures``
  (:mod:`selftrain_lib.paper_figures`) passes ``figures/`` explicitly.
"""
from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "SELFTRAIN_RUNS"
FIGURES_ENV = "SELFTRAIN_FIGURES"


def repository_root() -> Path | None:
    """The source checkout holding this package (the folder with ``pyproject.toml`` above it), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "selftrain_lib").is_dir() else None


def _default(env: str, relative: str) -> Path:
    value = os.environ.get(env, "").strip()
    if value:
        return Path(value).expanduser().resolve()
    root = repository_root()
    return (root / relative) if root is not None else (Path.cwd() / relative).resolve()


def runs_dir(out: str | os.PathLike | None = None) -> Path:
    """``out`` when given, else the default run cache (module docstring)."""
    return Path(out).expanduser() if out not in (None, "") else _default(RUNS_ENV, "runs")  # '~/x': not a folder '~'


def figures_dir(folder: str | os.PathLike | None = None) -> Path:
    """``folder`` when given, else where a notebook run by hand writes figures (module docstring)."""
    return Path(folder).expanduser() if folder not in (None, "") else _default(FIGURES_ENV, "build/figures")
