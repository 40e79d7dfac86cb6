"""Decompose Stage 2's drop below Stage 1 (README "Stage 2's drop, decomposed").

    python tools/stage2_decomposition.py --scale quick --seeds 0 1 2 --datasets synth-street --jobs 2

Trains (or reuses) the runs of ``experiments.stage2_grid`` and prints a Markdown table of validation
mIoU (student and EMA teacher) and pseudo-mask mIoU on U, mean ± std over seeds; writes it as CSV and
Markdown under ``--build``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from selftrain_lib import experiments as ex
from selftrain_lib.results import format_mean_std, to_markdown


def rows(grid_result) -> pd.DataFrame:
    out = []
    for spec, result in grid_result:
        for r in result.stages:
            if spec.variant != "full supervision" and r.stage == 1:
                name = "Stage 1 (supervised)"
            elif spec.variant == "full supervision":
                name = "full supervision (Stage 1, every label)"
            else:
                name = f"Stage 2: {spec.variant}"
            out.append({"dataset": spec.dataset, "row": name, "seed": spec.seed, "student": 100 * r.val_miou_student,
                        "teacher": None if r.val_miou_teacher is None else 100 * r.val_miou_teacher,
                        "pseudo_U": 100 * r.pseudo_miou})
    return pd.DataFrame(out).drop_duplicates(["dataset", "row", "seed"])


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    def cell(col):
        return lambda g: "–" if g[col].isna().all() else format_mean_std(g[col].mean(), g[col].std(ddof=1), len(g))

    order = {name: i for i, name in enumerate(frame["row"].unique())}
    table = frame.groupby(["dataset", "row"], sort=False).apply(
        lambda g: pd.Series({"val mIoU, student": cell("student")(g), "val mIoU, EMA teacher": cell("teacher")(g),
                             "pseudo-mask mIoU on U": cell("pseudo_U")(g), "seeds": len(g)}), include_groups=False)
    return table.reset_index().sort_values(["dataset", "row"], key=lambda c: c.map(order) if c.name == "row" else c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--datasets", nargs="+", default=["synth-street"])
    p.add_argument("--out", default="runs")
    p.add_argument("--jobs", default="auto")
    p.add_argument("--build", default="build/experiments")
    a = p.parse_args()
    jobs = a.jobs if a.jobs == "auto" else int(a.jobs)
    grid = ex.stage2_grid(a.datasets, a.seeds)
    frame = rows(ex.run_grid(grid, a.scale, a.out, jobs=jobs, desc="stage 2 decomposition"))
    table = summarise(frame)
    build = Path(a.build)
    build.mkdir(parents=True, exist_ok=True)
    frame.to_csv(build / f"stage2_decomposition_{a.scale}.csv", index=False)
    md = to_markdown(table)
    (build / f"stage2_decomposition_{a.scale}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
