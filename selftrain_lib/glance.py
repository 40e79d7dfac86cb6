"""A paper table at a glance: the paper's rows and columns, each cell "ours | paper".

:func:`layout` lays out numbers it is given (it reads no runs and no published file; ``results``
gathers both): one row per table row, per paper column a cell ``"31.70 ± 0.40 | 46.91"`` (ours,
mean ± std over seeds, beside the paper's number) and, with a base row (e.g. Supervised), a gain
cell ``"+1.65 | +7.94"`` (ours over our base beside the paper's over its base). Columns that hold
nothing on either side are left out, so no column reads "–" in every row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import pandas as pd

DASH = "–"
SEP = " | "   # between ours and the paper's in a cell (escaped to "\|" in Markdown)


@dataclass(frozen=True)
class Ours:
    """One reproduced cell: mean and sample std (percent) over ``n`` seeds."""
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Paper:
    """One published number; ``mark`` (e.g. "†") flags a number taken from elsewhere, explained in a footnote."""
    value: float
    mark: str = ""


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def mean_std_text(mean: float, std: float, n: int = 1, digits: int = 2) -> str:
    """``"54.85 ± 0.12"``; one seed (or no std) gives ``"54.85"``; missing gives ``"–"``."""
    if _nan(mean):
        return DASH
    if n <= 1 or _nan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def ours_text(c: Ours | None, most: int) -> str:
    """Ours, with ``(n=k)`` where the cell has fewer seeds than the table's most."""
    if c is None:
        return DASH
    return mean_std_text(c.mean, c.std, c.n) + (f" (n={c.n})" if c.n < most else "")


def paper_text(p: Paper | None) -> str:
    return DASH if p is None or _nan(p.value) else f"{p.value:.2f}{p.mark}"


def gain_text(v: float | None, mark: str = "") -> str:
    return DASH if _nan(v) else f"{v:+.2f}{mark}"


def pair(left: str, right: str) -> str:
    return f"{left}{SEP}{right}"


def layout(rows: Sequence[str], columns: Sequence[tuple[str, str]], ours: Mapping[tuple[str, str], Ours],
           paper: Mapping[tuple[str, str], Paper], base: str | None = None, gain_header: str = "gain",
           row_header: str = "row", paper_gain_rows: Collection[str] | None = None) -> pd.DataFrame:
    """The table: ``rows`` (labels, in order), ``columns`` ``(key, header)`` (e.g. ``("100", "1/30 (100)")``);
    ``ours`` and ``paper`` by ``(row, key)``. With ``base`` (a row label) each column gets a gain
    column beside it (``"<header> <gain_header>"``): each row's value minus ``base``'s in the same
    column, ours beside the paper's (the paper's base carries its mark, e.g. a number from another
    table). ``paper_gain_rows``: the rows whose paper gain is shown (None: all; e.g. not the rows of
    another pre-training than the base's). A column (or gain column) with nothing on either side in
    every row is left out."""
    most = max((c.n for c in ours.values()), default=0)
    out: dict[str, list[str]] = {row_header: list(rows)}
    for key, head in columns:
        cells = [pair(ours_text(ours.get((r, key)), most), paper_text(paper.get((r, key)))) for r in rows]
        if any(c != pair(DASH, DASH) for c in cells):
            out[head] = cells
        if base is None:
            continue
        gains = [pair(_ours_gain(ours, r, base, key),
                      _paper_gain(paper, r, base, key) if paper_gain_rows is None or r in paper_gain_rows else DASH)
                 for r in rows]
        if any(g != pair(DASH, DASH) for g in gains):
            out[f"{head} {gain_header}"] = gains
    return pd.DataFrame(out)


def _ours_gain(ours, row, base, key) -> str:
    c, b = ours.get((row, key)), ours.get((base, key))
    return gain_text(None if c is None or b is None else c.mean - b.mean)


def _paper_gain(paper, row, base, key) -> str:
    p, b = paper.get((row, key)), paper.get((base, key))
    if p is None or b is None or _nan(p.value) or _nan(b.value):
        return DASH
    return gain_text(p.value - b.value, p.mark or b.mark)
