"""Measure a scale preset over seeds: Stage 2's drop decomposed, or stages 1-3 against full supervision.

    python tools/stage2_decomposition.py --scale quick --seeds 0 1 2 --datasets synth-street --jobs 2
    python tools/stage2_decomposition.py --study stages --scale quick --datasets synth-street synth-objects \
        --labels 100 30 60 --jobs 2

``--study decomposition`` (README "Stage 2's drop, decomposed") trains (or reuses) the runs of
``experiments.stage2_grid``; ``--study stages`` (README "Measured here") the three-stage method at
each nominal label count of ``--labels`` that belongs to the dataset, and full supervision. Prints a
Markdown table of validation mIoU (student and EMA teacher) and pseudo-mask mIoU on U, mean ± std
over seeds; writes it as CSV and Markdown under ``--build``.

A measurement too long for one machine or session can be split by seed (``--seeds 0``, then
``--seeds 1 2``, each on its own run cache); ``--from-csv`` then summarises the per-seed CSVs these
wrote, training nothing:

    python tools/stage2_decomposition.py --from-csv docs/measurements/stages_cpu.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from selftrain_lib import experiments as ex
from selftrain_lib.headline import STAGE_ROW_KEY, stage_rows
from selftrain_lib.results import format_mean_std, to_markdown


KEY = STAGE_ROW_KEY   # one measured number per key


def read_rows(paths) -> pd.DataFrame:
    """The per-seed rows of earlier runs of this tool (its CSVs), as one frame. A (dataset, labels,
    row, seed) that two files give with different numbers is an error: it would be two measurements."""
    frame = pd.concat([pd.read_csv(p, dtype={"labels": str}) for p in paths], ignore_index=True)
    missing = [c for c in KEY + ["student", "teacher", "pseudo_U"] if c not in frame.columns]
    if missing:
        raise ValueError(f"{', '.join(map(str, paths))}: not this tool's CSV (missing columns {missing})")
    unique = frame.drop_duplicates()
    clash = unique[unique.duplicated(KEY, keep=False)]
    if len(clash):
        raise ValueError(f"{', '.join(map(str, paths))}: different numbers for the same run:\n{clash.to_string(index=False)}")
    return unique.reset_index(drop=True)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    def cell(col):
        return lambda g: "–" if g[col].isna().all() else format_mean_std(g[col].mean(), g[col].std(ddof=1), len(g))

    table = frame.groupby(["dataset", "labels", "row"], sort=False).apply(
        lambda g: pd.Series({"val mIoU, student": cell("student")(g), "val mIoU, EMA teacher": cell("teacher")(g),
                             "pseudo-mask mIoU on U": cell("pseudo_U")(g), "seeds": len(g)}), include_groups=False)
    return table.reset_index()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", choices=["decomposition", "stages"], default="decomposition")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help="--study stages: nominal label counts (default: each dataset's ablation label count)")
    p.add_argument("--scale", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--datasets", nargs="+", default=["synth-street"])
    p.add_argument("--out", default="runs")
    p.add_argument("--jobs", default="auto")
    p.add_argument("--build", default="build/experiments")
    p.add_argument("--from-csv", nargs="+", metavar="CSV", default=None,
                   help="summarise the per-seed rows of earlier runs of this tool (their CSVs); train nothing")
    a = p.parse_args()
    if a.from_csv:
        try:
            print(to_markdown(summarise(read_rows(a.from_csv))))
        except (OSError, ValueError) as e:
            p.error(str(e))
        return
    jobs = a.jobs if a.jobs == "auto" else int(a.jobs)
    unknown = [n for n in a.labels or [] if not any(n in ex.LABEL_COUNTS[d] for d in a.datasets)]
    if unknown:   # a count no dataset has would otherwise leave an empty grid and an empty table
        p.error(f"--labels: {unknown} are not nominal label counts of {a.datasets} "
                f"({ {d: list(ex.LABEL_COUNTS[d]) for d in a.datasets} })")
    if a.study == "decomposition":
        grid = ex.stage2_grid(a.datasets, a.seeds)
    else:
        grid = [s for d in a.datasets for s in ex.label_grid(
            d, a.seeds, [n for n in a.labels or [ex.ABLATION_LABELS[d]] if n in ex.LABEL_COUNTS[d]], baselines=())]
    frame = stage_rows(ex.run_grid(grid, a.scale, a.out, jobs=jobs, desc=a.study).pairs)
    table = summarise(frame)
    build = Path(a.build)
    build.mkdir(parents=True, exist_ok=True)
    frame.to_csv(build / f"{a.study}_{a.scale}.csv", index=False)
    md = to_markdown(table)
    (build / f"{a.study}_{a.scale}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
