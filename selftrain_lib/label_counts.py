"""One meaning of a label count: the paper's count (or fraction), and the count a run uses.

The public parameter (``--labels``, the notebooks' ``labels``, figure titles, the explorer) is the
paper's count, written as in the experiment grids (:data:`LABEL_COUNTS`:
synth-street 100 / 375 / 750 / 1500 of its 3,000-image pool for Cityscapes' 100 / 372 / 744 / 1488;
synth-objects 30 / 60 / 150 / 375 for VOC's 1/100 / 1/50 / 1/20 / 1/8), or the paper's fraction
(``1/30``) or the paper's own number (``372``). A scale whose pool is smaller (``quick``: 600 images)
uses the same fraction of it: :func:`scale_count` is the one scaling function, and every other
direction (which paper count a run's count stands for) searches through it.

The configuration key ``labels`` (the run hash, ``config.json``, ``metrics.json``) stays the count
used, so cached runs keep their hashes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .data import records
from .data.records import View

# The tables below are read from the dataset records (selftrain_lib/data/records.py; each dataset
# registers its own where it lives): names kept for their readers.
# the data standing in for each of the paper's datasets (embedded; read from files, README "Datasets")
STAND_INS = View(records.stand_ins)
# nominal label counts (of the 3,000-image pool; the paper's own for the real datasets): the one table
LABEL_COUNTS = View(lambda: {n: records.counts_of(n) for n in records.RECORDS if records.paper_of(n)})
# the paper's fractions, in the order of LABEL_COUNTS (Cityscapes' 100 of 2,975 is 1/30)
FRACTIONS = View(lambda: {n: records.paper_of(n).fractions for n in records.RECORDS if records.paper_of(n)})


def scale_count(count: int, pool: int, default_pool: int, minimum: int = 1) -> int:
    """The count of a ``pool``-image pool that stands for ``count`` of the ``default_pool``-image
    pool the paper's counts are written for: the same fraction, rounded, at least ``minimum`` (a
    batch's labelled share) and at most the pool. A pool at least as large as the default runs the
    count as it is."""
    if not default_pool or pool >= default_pool:
        return count
    return max(minimum, min(pool, round(count * pool / default_pool)))


def paper_counts(dataset: str) -> tuple[int, ...]:
    """The paper's label counts of ``dataset`` as the grids write them (none for a folder dataset)."""
    return tuple(LABEL_COUNTS.get(dataset, ()))


def fraction(dataset: str, count: Any) -> str | None:
    """``"1/50"`` for synth-objects' 60; None where the count is not one of the paper's."""
    counts, names = paper_counts(dataset), FRACTIONS.get(dataset, ())
    return dict(zip(counts, names)).get(count)


def _aliases(dataset: str) -> dict[str, int]:
    """Every spelling of a paper count: ``"100"``, ``"1/30"`` and the paper's own number
    (``"372"`` for synth-street's 375, ``"212"`` for synth-objects' 60)."""
    counts = paper_counts(dataset)
    out = {str(n): n for n in counts}
    out.update(zip(FRACTIONS.get(dataset, ()), counts))
    paper = records.paper_of(dataset)
    real = paper.counts if paper is not None else ()
    if len(real) == len(counts):
        out.update({str(r): n for r, n in zip(real, counts) if str(r) not in out})
    return out


def paper_count(dataset: str, value: Any) -> int | None:
    """The paper's count (as the grids write it) that ``value`` names: a count, a fraction or the
    paper's own number; None where it names none of them."""
    text = str(value).strip().replace(" ", "")
    return _aliases(dataset).get(text.lstrip("+"))


def count_stands_for(dataset: str, used: int, pool: int, default_pool: int,
                     candidates: Iterable[int] | None = None, minimum: int = 1) -> int | None:
    """Which of ``candidates`` (default: the paper's counts) a run using ``used`` labels of a
    ``pool``-image pool stands for: the first that :func:`scale_count` takes to ``used``."""
    for n in (paper_counts(dataset) if candidates is None else candidates):
        if isinstance(n, int) and scale_count(n, pool, default_pool, minimum) == used:
            return n
    return None


def valid_spellings(dataset: str) -> str:
    """``"100, 375, 750, 1500 (or 1/30, 1/8, 1/4, 1/2)"`` for error messages and notices."""
    counts = ", ".join(str(n) for n in paper_counts(dataset))
    fractions = ", ".join(FRACTIONS.get(dataset, ()))
    return counts + (f" or {fractions}" if fractions else "")


@dataclass(frozen=True)
class LabelChoice:
    """What a ``--labels`` value means for one run: the paper's count it names (None: a count of
    the pool, given as such), the count used, the pool (0: not known yet, a dataset read from
    files) and a one-line notice (or "")."""

    dataset: str
    paper: int | str | None
    used: int | str
    pool: int
    notice: str = ""

    def text(self, scale: str | None = None) -> str:
        """``"100 labels (20 used of quick's 600-image pool)"``; ``"full supervision"``."""
        if self.paper == "full" or self.used == "full":
            return f"full supervision ({self.pool} labels)" if self.pool else "full supervision"
        where = f" of {scale}'s {self.pool}-image pool" if scale and self.pool else ""
        return label_text(self.dataset, self.paper, self.used, where)


def label_text(dataset: str, paper: Any, used: Any = None, where: str = "") -> str:
    """How titles, the explorer and the command line name a label count: the paper's count with
    the count used beside it (``"100 labels (20 used)"``, ``"60 labels (1/50, 12 used)"``),
    ``"full supervision"``; a count that stands for no paper count: ``"8 labels used"``."""
    if paper == "full":
        return "full supervision"
    if paper is None:
        return f"{used} labels used{where}"
    # VOC's tables name fractions (1/50), Cityscapes' counts (100): the fraction is said where the paper says it
    facts = records.paper_of(dataset)
    extra = [fraction(dataset, paper)] if facts is not None and facts.says_fractions and fraction(dataset, paper) else []
    if used is not None and used != paper:
        extra.append(f"{used} used{where}")
    return f"{paper} labels" + (f" ({', '.join(extra)})" if extra else "")


def choose(dataset: str, value: Any, pool: int, default_pool: int, minimum: int = 1,
           scale: str | None = None) -> LabelChoice:
    """The meaning of ``--labels value`` for ``dataset`` with a ``pool``-image pool.

    * ``"full"``: the whole pool.
    * A paper count, fraction or paper number: scaled to the pool (:func:`scale_count`).
    * Any other whole number that fits the pool: the count of the pool, as ``--labels`` meant
      before it took the paper's counts, with a notice naming the paper's count it stands for (if
      any) and what to type; so an old command trains (and reuses) the run it trained before.
    * Anything else: a ValueError naming the valid counts.
    """
    if value == "full":
        return LabelChoice(dataset, "full", "full", pool)
    paper = paper_count(dataset, value)
    if paper is not None:
        return LabelChoice(dataset, paper, scale_count(paper, pool, default_pool, minimum), pool)
    number = _whole_number(value)
    counts = paper_counts(dataset)
    at = f" at {scale}" if scale else ""
    if number is None or number < 1 or (pool and number > pool):
        bound = f"between 1 and {pool}" if pool else "of at least 1"
        valid = (f"one of the paper's counts {valid_spellings(dataset)}, scaled to the pool{at}, or a count of "
                 f"the pool {bound}") if counts else f"a count {bound}"
        raise ValueError(f"labels: {value!r} is not a label count of {dataset}: give {valid}, or 'full'")
    if not counts:   # a dataset without paper counts (your own folder data): a count of its pool
        return LabelChoice(dataset, None, number, pool)
    stands = count_stands_for(dataset, number, pool, default_pool, minimum=minimum)
    hint = (f"it is the paper's {stands} here: type --labels {stands}" if stands is not None
            else f"it stands for none of the paper's counts {valid_spellings(dataset)}")
    notice = (f"note: --labels {number} is not a paper count of {dataset}, so it counts images of the "
              f"{pool}-image pool{at}, as --labels did before it took the paper's counts; {hint}")
    return LabelChoice(dataset, stands, number, pool, notice)


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return None
