"""Rewrite the tables' Markdown and LaTeX in figures/ from their committed CSVs (the tidy rows), in
the tables' current layout: no training, no notebook. The CSVs are left as they are.

    python tools/retable.py --scale quick --seeds 0            # figures/table2, table3_4, table5, table6, fig3

The scale and seeds are the ones that made the CSVs (the captions name them). A table's section
on the EMA teacher needs the runs (the CSVs do not keep the teacher's numbers): `make
paper-figures` writes it; here it is left out.
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import pandas as pd

from selftrain_lib import results

TEXT = {"labels (ours)": str, "labels (paper)": str, "labels used at this scale": str, "dataset": str}
LABEL_TABLES = {"table2": ("synth-street", "Table II: mIoU against the number of labelled images"),
                "table3_4": ("synth-objects", "Tables III and IV: mIoU against the labelled fraction")}
ROWS_TABLES = {"table5": ("V", "Table V: ablation study"), "table6": ("VI", "Table VI: the EMA teacher")}
FIG3_TITLE = "Figure 3: mIoU against lambda1 (lambda2 = lambda1), Stage 3"


def _evaluated(md: Path) -> str:
    """The evaluated model the old caption named (``the evaluated model: student / teacher``)."""
    found = re.search(r"\((the evaluated model: [^)]*)\)", md.read_text()) if md.is_file() else None
    return found.group(1) if found else "the evaluated model: student"


def _write(report: dict, stem: Path) -> None:
    """The report's .md and .tex over ``stem``'s (the CSV untouched)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = results.write_table(path=Path(tmp) / stem.name, **report)
        for kind in ("md", "tex"):
            stem.with_suffix(f".{kind}").write_text(paths[kind].read_text())


def retable(figures: Path, scale: str, seeds: list[int]) -> list[Path]:
    done = []
    for stem, (dataset, title) in LABEL_TABLES.items():
        csv = figures / f"{stem}.csv"
        if csv.is_file():
            long = pd.read_csv(csv, dtype=TEXT)
            pre = long["pretraining"].dropna().iloc[0] if "pretraining" in long and long["pretraining"].notna().any() \
                else None
            report = results.label_report_of(long, dataset, scale, seeds, title, _evaluated(csv.with_suffix(".md")),
                                             pretraining=pre)
            _write({k: v for k, v in report.items() if k != "tables"}, figures / stem)
            done.append(figures / stem)
    for stem, (which, title) in ROWS_TABLES.items():
        csv = figures / f"{stem}.csv"
        if csv.is_file():
            long = pd.read_csv(csv, dtype=TEXT)
            report = results.rows_report_of(long, which, list(dict.fromkeys(long["dataset"])), scale, seeds, title,
                                            _evaluated(csv.with_suffix(".md")))
            _write(report, figures / stem)
            done.append(figures / stem)
    csv = figures / "fig3.csv"
    if csv.is_file():
        _write(results.lambda_report(pd.read_csv(csv), scale, seeds, FIG3_TITLE), figures / "fig3")
        done.append(figures / "fig3")
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--figures", default=None, help="the folder of the tables (default: figures/<scale>)")
    p.add_argument("--scale", required=True, help="the scale preset that made the CSVs")
    p.add_argument("--seeds", required=True, help='the seeds that made them: "0 1 2"')
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
    for stem in retable(Path(args.figures or f"figures/{args.scale}"), args.scale, seeds):
        print(f"rewrote {stem}.md and {stem}.tex")


if __name__ == "__main__":
    main()
