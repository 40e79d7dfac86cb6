"""The headline figure: each published effect of the method, ours beside the paper's.

Three effects, each a difference of validation mIoU (points) at the smallest label count a table
of the paper shows for both of its datasets (Table V: Cityscapes 100 labels, VOC 1/50):

* **labels matter**: full supervision − Stage 1 (supervised);
* **Stage 2 over Stage 1**: Stage 2 − Stage 1;
* **Stage 3 over Stage 2**: Stage 3 − Stage 2.

Ours come from a stage measurement (``tools/stage2_decomposition.py --study stages``, one row per
dataset, label count, stage row and seed, e.g. ``docs/measurements/stages_cpu.csv``): each seed's
paired difference, then mean ± std over seeds. The reported network is the EMA teacher where a
row has one (stages ≥ 2), the student otherwise, as in the tables.

    python -m selftrain_lib.headline                       # figures/headline.{png,pdf,md}: quick, cpu (the record)
    python -m selftrain_lib.headline --csv quick=a.csv cpu=b.csv --out build/headline
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

# stand-in -> (paper's dataset, the published rows: S1, S2, S3, full). Table V's rows; full
# supervision from Table II (Cityscapes, ImageNet) and Table IV (VOC, ImageNet+COCO, Table V's
# pre-training for VOC).
PAPER_SETTING = {
    "synth-street": ("Cityscapes, 100 labels (1/30)", ("V", "cityscapes", "100"), ("II", "cityscapes", "2975")),
    "synth-objects": ("VOC, 1/50", ("V", "pascal_voc_aug", "1/50"), ("IV", "pascal_voc_aug", "full")),
}
EFFECTS = ("labels matter: full − Stage 1", "Stage 2 − Stage 1", "Stage 3 − Stage 2")
NOISE = 1.5   # points: a difference of one cell under this is seed noise at our scales (README)
_ROWS = {"Stage 1": "S1 only", "Stage 2": "S1+S2 (CR,T2,SA)", "Stage 3": "S1+S2+S3 full"}


def _stage(row: str) -> str:
    if row.startswith("full supervision"):
        return "full"
    for name in ("Stage 1", "Stage 2", "Stage 3"):
        if row.startswith(name):
            return name
    raise ValueError(f"unknown row {row!r} in a stage measurement (expected Stage 1/2/3 or full supervision)")


STAGE_ROW_KEY = ["dataset", "labels", "row", "seed"]   # one measured number per key


def stage_rows(pairs) -> pd.DataFrame:
    """A stage measurement from a grid's ``(spec, PipelineResult)`` pairs: one row per dataset,
    label count, stage row and seed; columns ``student``, ``teacher`` (None where the stage has no
    EMA teacher) and ``pseudo_U`` (pseudo-mask mIoU on U), in %."""
    out = []
    for spec, result in pairs:
        for r in result.stages:
            if spec.variant == "full supervision":
                name = "full supervision (Stage 1, every label)"
            elif r.stage == 1:
                name = "Stage 1 (supervised)"
            elif spec.variant == "full method":
                name = f"Stage {r.stage}"
            else:
                name = f"Stage 2: {spec.variant}"
            out.append({"dataset": spec.dataset, "labels": str(spec.labels), "row": name, "seed": spec.seed,
                        "student": 100 * r.val_miou_student,
                        "teacher": None if r.val_miou_teacher is None else 100 * r.val_miou_teacher,
                        "pseudo_U": 100 * r.pseudo_miou})
    return pd.DataFrame(out, columns=STAGE_ROW_KEY + ["student", "teacher", "pseudo_U"]).drop_duplicates(STAGE_ROW_KEY)


def measured_effects(csv: str | Path) -> pd.DataFrame:
    """Per-seed paired differences from a stage measurement CSV.

    Returns one row per (dataset, effect, seed): columns ``dataset``, ``effect`` (one of
    :data:`EFFECTS`), ``seed``, ``value`` (points of mIoU). A dataset missing a stage for a seed
    gives no row for the effects that need it.
    """
    df = pd.read_csv(csv, dtype={"labels": str})
    missing = {"dataset", "row", "seed", "student", "teacher"} - set(df.columns)
    if missing:
        raise ValueError(f"{csv}: not a stage measurement (missing columns {sorted(missing)})")
    df["stage"] = df["row"].map(_stage)
    df["miou"] = df["teacher"].where(df["teacher"].notna(), df["student"])
    wide = df.pivot_table(index=["dataset", "seed"], columns="stage", values="miou", aggfunc="first")
    out = []
    for (dataset, seed), r in wide.iterrows():
        pairs = {EFFECTS[0]: ("full", "Stage 1"), EFFECTS[1]: ("Stage 2", "Stage 1"),
                 EFFECTS[2]: ("Stage 3", "Stage 2")}
        for effect, (a, b) in pairs.items():
            if a in r and b in r and pd.notna(r[a]) and pd.notna(r[b]):
                out.append({"dataset": dataset, "effect": effect, "seed": int(seed), "value": r[a] - r[b]})
    return pd.DataFrame(out, columns=["dataset", "effect", "seed", "value"])


def paper_effects() -> pd.DataFrame:
    """The published effects: columns ``dataset`` (our stand-in), ``setting``, ``effect``, ``value``."""
    from .results import published_miou  # loads torch: the headline table is made without it

    def miou(table: str, dataset: str, labels: str, method: str = "DeepLabV2 (supervised)") -> float:
        value = published_miou(table, dataset, method, labels)
        if math.isnan(value):
            raise ValueError(f"paper_results.csv: no row for Table {table}, {dataset}, {labels}, {method}")
        return value

    out = []
    for stand_in, (setting, (table, dataset, labels), full_key) in PAPER_SETTING.items():
        s = {k: miou(table, dataset, labels, m) for k, m in _ROWS.items()}
        full = miou(*full_key)
        for effect, value in zip(EFFECTS, (full - s["Stage 1"], s["Stage 2"] - s["Stage 1"], s["Stage 3"] - s["Stage 2"])):
            out.append({"dataset": stand_in, "setting": setting, "effect": effect, "value": round(value, 2)})
    return pd.DataFrame(out)


def headline_table(measurements: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per (dataset, effect): the paper's value and, per scale, ours as mean, std, seeds."""
    table = paper_effects().rename(columns={"value": "paper"})
    for scale, csv in measurements.items():
        m = measured_effects(csv).groupby(["dataset", "effect"])["value"]
        stats = pd.DataFrame({f"{scale} mean": m.mean(), f"{scale} std": m.std(ddof=1),
                              f"{scale} seeds": m.count(), f"{scale} per seed": m.apply(lambda v: list(np.round(v, 2)))})
        table = table.merge(stats.reset_index(), on=["dataset", "effect"], how="left")
    return table


def plot_headline(table: pd.DataFrame, scales: list[str]):
    """One panel per effect; per stand-in a bar for the paper and one per scale of ours (± std over
    the seeds, when there are 2 or more, with each seed's difference as a dot)."""
    from . import figures  # matplotlib and seaborn (~1 s): only where a figure is drawn

    figures.use_style()
    fig, axes = figures.figure(ncols=len(EFFECTS), width=figures.PAGE_WIDTH, height=2.6)
    series = ["paper"] + scales
    colours = {name: figures.colour(name) for name in series}   # the suite's palette: the paper's, each scale's
    width = 0.8 / len(series)
    datasets = list(PAPER_SETTING)
    for ax, effect in zip(axes, EFFECTS):
        rows = table[table.effect == effect].set_index("dataset")
        for i, name in enumerate(series):
            x = np.arange(len(datasets)) + (i - (len(series) - 1) / 2) * width
            if name == "paper":
                ax.bar(x, [rows.loc[d, "paper"] for d in datasets], width, color=colours[name], label="paper")
                continue
            means = [rows.loc[d, f"{name} mean"] if d in rows.index else np.nan for d in datasets]
            n = [int(rows.loc[d, f"{name} seeds"]) if d in rows.index and pd.notna(rows.loc[d, f"{name} seeds"]) else 0
                 for d in datasets]
            err = [rows.loc[d, f"{name} std"] if k >= 2 else 0.0 for d, k in zip(datasets, n)]
            label = f"ours, {name} (± std over {max(n)} seeds)" if max(n) >= 2 else f"ours, {name}"
            ax.bar(x, means, width, yerr=err if max(n) >= 2 else None, capsize=2, color=colours[name], label=label)
            for xi, d in zip(x, datasets):
                if d in rows.index and isinstance(rows.loc[d, f"{name} per seed"], list):
                    seeds = rows.loc[d, f"{name} per seed"]
                    ax.plot([xi] * len(seeds), seeds, "o", ms=2, color="black", zorder=3)
        ax.axhline(0, color="black", lw=0.6)
        if effect != EFFECTS[0]:   # the project's noise rule: one cell's difference under ~1.5 points is noise
            ax.axhspan(-NOISE, NOISE, color="0.92", zorder=0, label=f"± {NOISE} points: noise")
        ax.set_xticks(range(len(datasets)))
        # the paper's setting on lines of its own: side by side, the two labels run into each other
        ax.set_xticklabels([d + "\n(" + PAPER_SETTING[d][0].replace(", ", ",\n") + ")" for d in datasets], fontsize=6)
        ax.set_title(effect)
    axes[0].set_ylabel("difference of val mIoU (points)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series) + 1, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Each published effect: the paper's (Table V; full supervision from Tables II / IV) "
                 "beside ours on the embedded stand-ins", fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selftrain_lib.headline", description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", nargs="+", metavar="SCALE=CSV",
                   default=[f"quick={ROOT / 'docs/measurements/stages_quick.csv'}",
                            f"cpu={ROOT / 'figures/cpu/stages_cpu.csv'}"],
                   help="stage measurements, one per scale (default: docs/measurements/stages_quick.csv, 3 seeds "
                        "of `quick`; figures/cpu/stages_cpu.csv, the record's 3 seeds of `cpu`)")
    p.add_argument("--out", default=str(ROOT / "figures" / "headline"), help="figure stem (.png, .pdf, .md written)")
    args = p.parse_args(argv)
    measurements = {}
    for item in args.csv:
        scale, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            p.error(f"--csv {item!r}: expected SCALE=CSV naming an existing file")
        measurements[scale] = path
    paths = write_headline(measurements, args.out)
    for path in paths:
        print(path)
    print(paths[-1].read_text())
    return 0


def write_headline(measurements: Mapping[str, str | Path], stem: str | Path) -> list[Path]:
    """The headline of ``measurements`` (``{scale: stage measurement CSV}``) as ``stem``.png/.pdf and
    its table as ``stem``.md; returns the files, the Markdown last."""
    from . import figures  # matplotlib and seaborn (~1 s): only where a figure is drawn
    from .runs import atomic_write_text  # loads torch: the headline table is made without it

    table = headline_table(measurements)
    paths = figures.save(plot_headline(table, list(measurements)), stem)
    md = atomic_write_text(Path(stem).with_suffix(".md"), headline_markdown(table, list(measurements)))
    return [*paths, md]


def headline_caption(table: pd.DataFrame, scales: list[str]) -> str:
    """What the headline's numbers are: the measure, the evaluated network, the labels each scale
    used of its pool (beside the paper's count) and the seeds, in one paragraph."""
    from .config import load_config
    from .experiments import ABLATION_LABELS, scaled_labels

    used = []
    for dataset, (setting, *_rest) in PAPER_SETTING.items():
        at = []
        for s in scales:
            try:
                pool = load_config(dataset, s).pool_size
                at.append(f"{scaled_labels(dataset, ABLATION_LABELS[dataset], s)} of {pool:,} at `{s}`")
            except (ValueError, KeyError):   # a scale the stand-in has no preset for: say nothing of it
                continue
        used.append(f"{dataset} {', '.join(at)} ({setting})" if at else f"{dataset} ({setting})")
    seeds = []
    for s in scales:
        n = table.get(f"{s} seeds")
        k = int(n.max()) if n is not None and n.notna().any() else 0
        seeds.append(f"`{s}` {k} seed{'s' if k != 1 else ''}" if k else f"`{s}` not measured")
    return ("Each published effect: a difference of validation mIoU (points) between two rows of one seed, the "
            "EMA teacher in stages ≥ 2; ours as mean ± std over seeds, each seed's paired difference in brackets "
            f"(one seed: its difference). Labels used: {'; '.join(used)}. Seeds: {', '.join(seeds)}. "
            f"A difference under about {NOISE} points is seed noise at these scales.")


def headline_markdown(table: pd.DataFrame, scales: list[str]) -> str:
    """The headline as a Markdown table, under :func:`headline_caption`: effect, stand-in (paper's
    setting), paper, ours per scale."""
    head = "| effect | stand-in (paper's setting) | paper | " + " | ".join(f"ours, `{s}`" for s in scales) + " |"
    lines = [head, "|" + "---|" * (3 + len(scales))]
    for _, r in table.iterrows():
        cells = []
        for s in scales:
            n = r.get(f"{s} seeds")
            if pd.isna(n) or n == 0:
                cells.append("–")
            elif n >= 2:
                per_seed = ", ".join(f"{v:+.2f}" for v in r[f"{s} per seed"])
                std = r[f'{s} std']   # a std under 0.05 keeps two decimals: "± 0.0" would read as none
                cells.append(f"{r[f'{s} mean']:+.1f} ± {std:.{1 if round(std, 1) > 0 else 2}f} ({per_seed})")
            else:
                cells.append(f"{r[f'{s} mean']:+.1f} (1 seed)")
        lines.append(f"| {r.effect} | {r.dataset} ({r.setting}) | {r.paper:+.1f} | " + " | ".join(cells) + " |")
    return headline_caption(table, scales) + "\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
