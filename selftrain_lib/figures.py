"""Figures in one style, sized for a paper column, saved as PDF and PNG.

Every function takes plain data (pandas frames, numpy arrays) and returns a matplotlib Figure;
:func:`save` writes it as ``<stem>.pdf`` and ``<stem>.png`` (each atomically).
"""
from __future__ import annotations

import io
import textwrap
import warnings
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import display
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .results import PAPER_FIG3
from .runs import atomic_write_bytes

COLUMN_WIDTH = 3.5   # inches: one column of a two-column paper
PAGE_WIDTH = 7.1     # inches: both columns


def use_style() -> None:
    """The one style of every figure: seaborn ``ticks``, paper context, 8 pt text, colour-blind palette."""
    sns.set_theme(context="paper", style="ticks", palette="colorblind", font_scale=1.0,
                  rc={"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
                      "ytick.labelsize": 7, "legend.fontsize": 7, "legend.frameon": False, "lines.linewidth": 1.2,
                      "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 200,
                      "savefig.bbox": "tight", "pdf.fonttype": 42,
                      # on screen: a column-wide figure at about 560 px (100 dpi gave 350, too small to read)
                      "figure.dpi": 160})


def figure(ncols: int = 1, nrows: int = 1, width: float = COLUMN_WIDTH, height: float | None = None, **kw):
    use_style()
    height = height if height is not None else width * 0.62 * nrows / max(ncols, 1) * (1.4 if ncols > 1 else 1)
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


# ------------------------------------------------------------------------------------------
# one palette for the whole suite: one colour per meaning, the same in every figure
# ------------------------------------------------------------------------------------------

PALETTE: dict[str, str] = {
    # the stages (a stage's line, bar or gain is drawn in its colour wherever it appears)
    "Stage 1": "#0173b2", "Stage 2": "#de8f05", "Stage 3": "#029e73", "Stage 4": "#cc78bc",
    "full supervision": "#ca9161",
    # the baselines trained by the same code
    "CutMix": "#d55e00", "Cutout": "#fbafe4",
    # the stand-ins (their real datasets take the same colour: see ALIASES)
    "synth-street": "#332288", "synth-objects": "#882255",
    # the ablations: the full method is Stage 3's colour; each dropped component its own
    "without CR": "#999933", "without T2": "#88ccee", "without SA": "#ddcc77", "without N2": "#cc6677",
    "without EMA": "#555555",
    # the paper's published numbers, and classes never predicted (no gain to read)
    "paper": "#000000", "never predicted": "#bbbbbb",
    # ours at a scale (the headline figure sets scales side by side)
    "quick": "#56b4e9", "cpu": "#004488",
    # the training losses
    "loss": "#777777", "L_seg": "#44aa99", "L_con": "#aa4499", "L_pl": "#e7298a",
}
# other names of the same meanings
ALIASES = {"supervised": "Stage 1", "supervised (= stage 1)": "Stage 1", "three-stage": "Stage 3",
           "ours (three-stage)": "Stage 3", "full method": "Stage 3", "with l_pl": "Stage 3",
           "without l_pl": "without T2", "mt-cutmix": "CutMix", "mt-cutout": "Cutout",
           "cutmix (mean teacher)": "CutMix", "cutout (mean teacher)": "Cutout",
           "cityscapes": "synth-street", "voc": "synth-objects", "total": "loss",
           "full supervision (stage 1 on the pool)": "full supervision"}
# spare colours for a name the palette does not know (picked by the name, so stable across figures)
SPARE = ("#117733", "#6699cc", "#997700", "#ee99aa", "#994455")
# the order in which a longer name is searched for a meaning ("without CR, stage 3" is "without CR")
_SEARCH = sorted([*PALETTE, *ALIASES], key=len, reverse=True)


def colour(meaning: str) -> str:
    """The colour of ``meaning`` (a stage, a baseline, a stand-in, an ablation, "paper", ...): the same
    in every figure. A longer name takes the first meaning it contains, longest first (``"without CR,
    stage 3"``: without CR's; ``"full method, stage 2"``: Stage 2's); an unknown name a spare colour
    chosen by the name."""
    text = str(meaning).lower().replace("$", "").replace("{", "").replace("}", "")
    for key in _SEARCH:
        if key.lower() == text:
            return PALETTE[ALIASES.get(key, key)]
    for key in _SEARCH:
        if key.lower() in text and not (key.lower() == "full method" and "stage" in text):
            return PALETTE[ALIASES.get(key, key)]
    return SPARE[zlib.crc32(str(meaning).encode()) % len(SPARE)]


def std_label(n: int) -> str:
    """How error bars are labelled: ``"± std over 3 seeds"``."""
    return f"± std over {n} seeds"


def wrap(text: str, fig) -> str:
    """``text`` wrapped to the width of ``fig`` (about 15 characters an inch at 8 pt)."""
    return textwrap.fill(text, max(40, int(fig.get_size_inches()[0] * 15))) if text else text


def legend_outside(ax, **kw):
    """The legend of ``ax`` right of its axes, never over its data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def legend_below(fig, handles, labels=None, ncol: int | None = None):
    """One legend for a figure of several panels, below them all (over no panel)."""
    labels = labels if labels is not None else [h.get_label() for h in handles]
    return fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=ncol or min(len(handles), 3))


def title_above(fig, text: str, pad: float = 0.04):
    """``text`` as the figure's title above everything drawn (the panels' own titles included), so
    that it covers no column heading; ``pad`` in inches."""
    if not text:
        return fig
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes)           # display pixels
    y = (top + pad * fig.dpi) / fig.bbox.height
    fig.suptitle(wrap(text, fig), y=y, va="bottom", fontsize=8)
    return fig


def save(fig, stem: str | Path, close: bool = True) -> list[Path]:
    """Write ``fig`` as ``<stem>.pdf`` and ``<stem>.png``; returns both paths. The PDF carries no
    creation date, so that the same figure gives the same bytes (regenerated ``figures/`` diff clean)."""
    stem = Path(stem)
    paths = []
    for fmt in ("pdf", "png"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(atomic_write_bytes(stem.with_suffix(f".{fmt}"), buf.getvalue()))
    if close:
        plt.close(fig)
    return paths


def _finish(fig, title: str = ""):
    """A figure of several panels: ``title`` (wrapped to the figure's width) above them all, the
    panels laid out tight."""
    if title:
        fig.suptitle(wrap(title, fig), fontsize=8)
    fig.tight_layout()
    return fig


def show(fig, stem: str | Path) -> None:
    """Save ``fig`` (:func:`save`), display it once and close it: a figure left open would be
    displayed a second time by the inline backend at the end of the cell. Returns nothing, so
    that a cell ending in it prints no list of paths."""
    save(fig, stem, close=True)
    display(fig)


def show_markdown(text: str) -> None:
    """Display Markdown that reads as the same text where Markdown is not rendered (papermill's
    ``--log-output``, a terminal), not as ``<IPython.core.display.Markdown object>``."""
    display({"text/markdown": text, "text/plain": text}, raw=True)


# ------------------------------------------------------------------------------------------
# curves
# ------------------------------------------------------------------------------------------

LOSS_NAMES = {"loss": ("total", "loss"), "loss_seg": (r"$L_{seg}$", "L_seg"), "loss_con": (r"$L_{con}$", "L_con"),
              "loss_pl": (r"$L_{pl}$", "L_pl")}   # column -> (legend label, palette meaning)


def plot_losses(curves: pd.DataFrame, title: str = "", ax=None):
    """Training losses (total, L_seg, L_con, L_pl) against the step, legend right of the axes."""
    fig, ax = (ax.figure, ax) if ax is not None else figure()
    for col, (label, meaning) in LOSS_NAMES.items():
        if col in curves and curves[col].notna().any():
            ax.plot(curves["step"], curves[col], label=label, color=colour(meaning))
    ax.set(xlabel="step", ylabel="loss", title=wrap(title, fig))
    legend_outside(ax)
    return fig


MIN_SPAN = 10.0   # points of mIoU: the least span of a y-axis, so that seed noise does not look like a trend


def miou_axis(ax, values, span: float = MIN_SPAN, lower: float = 0.0, upper: float = 100.0) -> tuple[float, float]:
    """Set the y-limits to the data's range widened to at least ``span`` points (centred, kept
    within [lower, upper]); returns them. A 0.5-point wobble then reads as what it is."""
    v = np.asarray([x for x in np.ravel(np.asarray(values, float)) if np.isfinite(x)])
    if v.size == 0:
        return ax.get_ylim()
    lo, hi = float(v.min()), float(v.max())
    pad = max(0.0, span - (hi - lo)) / 2
    lo, hi = lo - pad - 0.05 * span, hi + pad + 0.05 * span
    if lo < lower:
        lo, hi = lower, min(upper, hi + (lower - lo))
    if hi > upper:
        lo, hi = max(lower, lo - (hi - upper)), upper
    ax.set_ylim(lo, hi)
    return lo, hi


def _val_line(ax, curves: pd.DataFrame, name: str, color: str | None = None, ls: str = "-") -> list[float]:
    """Plot the validation mIoU (%) of one curve frame in ``color`` (default: ``name``'s meaning),
    its best evaluation ringed (a table reports the last point, metrics.json records both);
    returns the values drawn."""
    v = curves.dropna(subset=["val_miou"])
    color = color or colour(name)
    ax.plot(v["step"], 100 * v["val_miou"], marker="o", ms=3, label=name, color=color, ls=ls)
    if len(v):
        best = v.loc[v["val_miou"].idxmax()]  # the first maximum, as metrics.json's "best"
        ax.plot([best["step"]], [100 * best["val_miou"]], marker="o", ms=8, mfc="none", color=color)
    return list(100 * v["val_miou"])


# the legend's entry for the ring _val_line draws: without it an open circle reads as a data point
BEST_LABEL = "ring: best evaluation (tables report the last)"


def best_ring_handle():
    """A legend handle for the ring around each line's best evaluation (:func:`_val_line`)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="none", marker="o", ms=8, mfc="none", color="0.3", label=BEST_LABEL)


def plot_val_miou(curves_by_name: Mapping[str, pd.DataFrame], title: str = "", ax=None, note: str = ""):
    """Validation mIoU (%) over training, one line per named curve frame (y-span at least
    :data:`MIN_SPAN` points), each in its name's colour (:func:`colour`; a second line of the same
    colour dashed), each line's best evaluation ringed (tables report the last point); the legend
    right of the axes. ``note``: a line of text under the axes (e.g. the paper's numbers)."""
    fig, ax = (ax.figure, ax) if ax is not None else figure()
    seen, values = set(), []
    for name, c in curves_by_name.items():
        col = colour(name)
        values += _val_line(ax, c, name, col, "--" if col in seen else "-")
        seen.add(col)
    miou_axis(ax, values)
    ax.set(xlabel="step", ylabel="val mIoU (%)", title=wrap(title, fig))
    handles, _ = ax.get_legend_handles_labels()
    legend_outside(ax, handles=handles + [best_ring_handle()])
    if note:
        ax.text(0, -0.32, note, transform=ax.transAxes, fontsize=6, va="top", wrap=True)
    return fig


def plot_fig2(with_pl: pd.DataFrame, without_pl: pd.DataFrame, title: str = ""):
    """Figure 2: stage 3 with and without pseudo-masks (L_pl): L_con (left), val mIoU (right); with
    L_pl in Stage 3's colour, without in the "without T2" ablation's; one legend below."""
    fig, (a, b) = figure(ncols=2, width=PAGE_WIDTH * 0.7)
    seen = []
    for name, c, meaning in (("with $L_{pl}$ (Stage 3)", with_pl, "Stage 3"),
                             ("without $L_{pl}$ (T2 off)", without_pl, "without T2")):
        a.plot(c["step"], c["loss_con"], label=name, color=colour(meaning))
        seen += _val_line(b, c, name, colour(meaning))
    miou_axis(b, seen)
    a.set(xlabel="step", ylabel=r"$L_{con}$")
    b.set(xlabel="step", ylabel="val mIoU (%)")
    _finish(fig, title)
    legend_below(fig, a.get_lines() + [best_ring_handle()])
    return fig


def _seeds_of(table: pd.DataFrame, column: str = "seeds") -> int:
    """The most seeds behind a row of ``table`` (1 without the column)."""
    return int(table[column].max()) if column in table and len(table) else 1


def plot_lambda(table: pd.DataFrame, title: str = "", paper: Mapping | None = PAPER_FIG3):
    """Figure 3: mIoU (%) against λ1 (= λ2), one line per dataset in its colour (left; y-span at
    least :data:`MIN_SPAN`), and beside it (right) each curve relative to its value at λ1 = 1/2, the
    paper's choice, with the paper's curve (``paper``, :data:`results.PAPER_FIG3`) dashed: the shapes
    compare where the absolute numbers cannot. Error bars (± std over seeds, so labelled) only where
    a point has 2 or more seeds, and none on the reference λ1 = 1/2 of the right panel (0 there by
    definition). One legend below both panels.
    ``table``: columns dataset, lambda1, miou, miou_std, seeds (see :func:`results.lambda_table`)."""
    fig, (ax, rel) = figure(ncols=2, width=PAGE_WIDTH * 0.75)
    handles = []
    for name, d in table.groupby("dataset", sort=False):
        d = d.sort_values("lambda1")
        n = _seeds_of(d)
        err = d["miou_std"].fillna(0) if n >= 2 else None
        col = colour(name)
        (line,) = ax.plot(d["lambda1"], d["miou"], marker="o", ms=3, color=col,
                          label=name + (f" ({std_label(n)})" if err is not None else " (1 seed)"))
        handles.append(line)
        if err is not None:
            ax.errorbar(d["lambda1"], d["miou"], yerr=err, fmt="none", capsize=2, color=col)
        ref = np.isclose(d["lambda1"], 0.5)
        if ref.any():
            diff = d["miou"] - float(d.loc[ref, "miou"].iloc[0])
            rel.plot(d["lambda1"], diff, marker="o", ms=3, color=col)
            if err is not None and (~ref).any():   # the reference is 0 by definition: no bar on it
                rel.errorbar(d["lambda1"][~ref], diff[~ref], yerr=err[~ref], fmt="none", capsize=2, color=col)
    spread = table["miou_std"].fillna(0) if _seeds_of(table) >= 2 else 0
    miou_axis(ax, list(table["miou"] - spread) + list(table["miou"] + spread))
    if paper:
        ref = np.asarray(paper["miou"]) - paper["miou"][list(paper["lambda1"]).index(0.5)]
        handles += rel.plot(paper["lambda1"], ref, ls="--", marker="s", ms=3, color=colour("paper"),
                            label=paper["label"])
    rel.axhline(0, color="grey", lw=0.5)
    lo, hi = rel.get_ylim()
    rel.set_ylim(min(lo, -3), max(hi, 3))    # at least ±3 points
    for a in (ax, rel):
        a.set_xscale("log", base=2)
        a.set_xlabel(r"$\lambda_1 = \lambda_2$")
    ax.set(ylabel="val mIoU (%)")
    rel.set(ylabel=r"change from $\lambda_1 = 1/2$ (points)")
    _finish(fig, title)
    legend_below(fig, handles, ncol=2)
    return fig


def plot_pseudo_stages(runs: pd.DataFrame, title: str = ""):
    """Pseudo-mask mIoU on U (%) per dataset: one bar per stage in the stage's colour, from 0,
    each labelled with its value; error bars (± std over seeds, so labelled in the legend) only
    where a stage has 2 or more seeds. The legend right of the axes."""
    fig, ax = figure()
    df = runs.assign(pseudo=100 * runs["pseudo_miou"].astype(float))
    stages = sorted(df["stage"].unique())
    datasets = list(dict.fromkeys(df["dataset"]))
    width = 0.8 / max(len(stages), 1)
    most = 1
    for i, st in enumerate(stages):
        g = df[df["stage"] == st].groupby("dataset")["pseudo"].agg(["mean", "std", "count"]).reindex(datasets)
        x = np.arange(len(datasets)) + (i - (len(stages) - 1) / 2) * width
        several = g["count"].fillna(0) >= 2
        most = max(most, int(g["count"].max()))
        bars = ax.bar(x, g["mean"], width * 0.95, color=colour(f"Stage {st}"), label=f"Stage {st}")
        if several.any():
            ax.errorbar(x[several.to_numpy()], g["mean"][several], yerr=g["std"][several].fillna(0), fmt="none",
                        capsize=2, color="black", lw=0.8)
        # inside the bar: an error bar above it would cover the value
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in g["mean"]], fontsize=6, label_type="center", color="white")
    ax.set_xticks(np.arange(len(datasets)), datasets)
    ax.set_ylim(0, min(100, max(10.0, float(np.nanmax(df["pseudo"])) * 1.2)))
    ax.set(ylabel="pseudo-mask mIoU on U (%)", title=wrap(title, fig))
    handles = ax.get_legend_handles_labels()[0]
    if most >= 2:
        handles.append(Line2D([], [], color="black", marker="|", ls="none", label=f"error bars: {std_label(most)}"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


NEVER_PREDICTED = "n/p: IoU 0 at both stages (never predicted; no gain to read)"


def plot_per_class_gains(gains: pd.DataFrame, title: str = ""):
    """Per-class IoU gain (points) of stage 3 over stage 1, one panel per dataset, classes sorted
    by gain: a bar in Stage 3's colour where Stage 3 is higher, in Stage 1's where Stage 1 is
    (error bars, ± std over seeds, only with 2 or more seeds). A class whose IoU is 0 at both
    stages (never predicted correctly) has no bar: a grey open marker at 0 and "n/p", so that it
    cannot read as a gain. One legend below the panels."""
    datasets = list(dict.fromkeys(gains["dataset"]))
    fig, axes = figure(ncols=len(datasets), width=COLUMN_WIDTH * len(datasets), height=2.6, squeeze=False)
    most, any_never = 1, False
    for ax, d in zip(axes[0], datasets):
        g = gains[gains["dataset"] == d].sort_values("gain", ascending=False)
        never = g["never_predicted"].fillna(False).astype(bool) if "never_predicted" in g else pd.Series(False, g.index)
        n = g["n_seeds"] if "n_seeds" in g else pd.Series(1, g.index)
        most = max(most, int(n.max()) if len(n) else 1)
        shown = ~never
        colours = [colour("Stage 3") if v >= 0 else colour("Stage 1") for v in g["gain"][shown]]
        y = np.arange(len(g))
        ax.barh(y[shown.to_numpy()], g["gain"][shown], color=colours)
        several = (shown & (n >= 2)).to_numpy()
        if several.any():
            ax.errorbar(g["gain"][several], y[several], xerr=g["gain_std"][several].fillna(0), fmt="none",
                        capsize=2, color="black", lw=0.8)
        for yi in y[never.to_numpy()]:
            ax.plot(0, yi, marker="o", ms=4, mfc="none", color=colour("never predicted"), ls="none")
            ax.annotate("n/p", (0, yi), xytext=(5, 0), textcoords="offset points", va="center", fontsize=6,
                        color="dimgrey")
        any_never |= bool(never.any())
        ax.set_yticks(y, g["class"])
        ax.axvline(0, color="black", lw=0.6)
        ax.invert_yaxis()
        ax.set(xlabel="IoU gain of Stage 3 over Stage 1 (points)", title=d)
    _finish(fig, title)
    handles = [Patch(color=colour("Stage 3"), label="Stage 3 higher"), Patch(color=colour("Stage 1"),
                                                                             label="Stage 1 higher")]
    if any_never:
        handles.append(Line2D([], [], marker="o", mfc="none", ls="none", color=colour("never predicted"),
                              label=NEVER_PREDICTED))
    if most >= 2:
        handles.append(Line2D([], [], color="black", marker="|", ls="none", label=f"error bars: {std_label(most)}"))
    legend_below(fig, handles)
    return fig


def plot_ablation_per_class(table: pd.DataFrame, title: str = ""):
    """Table V class by class (:func:`selftrain_lib.results.ablation_per_class`): per dataset a grid,
    rows Table V's rows, columns the classes (the full method's best first), each cell the row's IoU
    minus the full method's (points, mean of the paired seeds) on a diverging scale centred at 0
    (red: the row lower, blue: higher). A class at IoU 0 in both (never predicted) is a grey "n/p" cell,
    never a 0 that could read as "no difference"."""
    datasets = list(dict.fromkeys(table["dataset"]))
    masks = [(table["dataset"] == d) for d in datasets]
    n_rows = [table.loc[m, "row"].nunique() for m in masks]
    n_cols = max((table.loc[m, "class"].nunique() for m in masks), default=1)
    fig, axes = figure(nrows=len(datasets), width=max(COLUMN_WIDTH, 1.8 + 0.42 * n_cols),
                       height=0.6 + sum(0.26 * n + 0.7 for n in n_rows), squeeze=False,
                       gridspec_kw={"height_ratios": n_rows or [1]})
    finite = table["difference"][~table["never_predicted"].astype(bool)]
    top = max(1.0, float(finite.abs().max())) if len(finite) else 1.0
    most = int(table["n_seeds"].max()) if len(table) else 1
    for ax, d, m in zip(axes[:, 0], datasets, masks):
        t = table[m]
        rows, classes = list(dict.fromkeys(t["row"])), list(dict.fromkeys(t["class"]))
        value = t.pivot(index="row", columns="class", values="difference").reindex(index=rows, columns=classes)
        never = t.pivot(index="row", columns="class", values="never_predicted").reindex(index=rows, columns=classes)
        never = never.fillna(False).astype(bool)
        with warnings.catch_warnings():   # seaborn's own call of a deprecated matplotlib method
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(value.mask(never), ax=ax, cmap="RdBu", center=0, vmin=-top, vmax=top,
                        annot=value.map(lambda v: f"{v:+.1f}"), fmt="", annot_kws={"fontsize": 6},
                        linewidths=0.5, linecolor="white",
                        cbar_kws={"label": "row − full method (IoU points)", "shrink": 0.9})
        ax.set_facecolor(colour("never predicted"))   # the masked cells
        for i, j in zip(*np.nonzero(never.to_numpy())):
            ax.text(j + 0.5, i + 0.5, "n/p", ha="center", va="center", fontsize=6, color="dimgrey")
        ax.set(xlabel="", ylabel="", title=f"{d}: IoU of the row minus the full method's (Stage 3), per class")
        ax.tick_params(axis="x", labelrotation=45, length=0)
        ax.tick_params(axis="y", length=0)
        for lab in ax.get_xticklabels():
            lab.set_horizontalalignment("right")
    note = "n/p: IoU 0 in both, never predicted"
    if most >= 2:
        note = f"mean of the paired differences over {most} seeds, ± std in the table; {note}"
    _finish(fig, f"{title} ({note})" if title else note)
    return fig


# ------------------------------------------------------------------------------------------
# image grids
# ------------------------------------------------------------------------------------------

def prediction_grid(images: Sequence[np.ndarray], columns: Mapping[str, Sequence[np.ndarray]], dataset: str,
                    class_names: Sequence[str], palette: Sequence[Sequence[int]], width: float = PAGE_WIDTH,
                    title: str = ""):
    """Rows: images; columns: the image, then one coloured mask per entry of ``columns`` (e.g.
    Stage 1, Stage 2, Stage 3, ground truth). ``images``: uint8 (N, 3, H, W) or (N, H, W, 3), or a
    list of (3, H, W) / (H, W, 3) images of different sizes; each column: masks (H, W) to match.
    ``palette`` colours the classes (``ignore`` and unknown values: white); ``dataset`` is unused
    (kept for callers). A class legend sits below; rows take the first image's aspect ratio;
    ``title`` (e.g. the dataset, scale, labels and seed) above the column headings (:func:`title_above`)."""
    rows = [np.asarray(im) for im in images]
    rows = [im.transpose(1, 2, 0) if im.ndim == 3 and im.shape[0] == 3 and im.shape[-1] != 3 else im for im in rows]
    n = len(rows)
    h, w = rows[0].shape[:2]
    lut = np.full((256, 3), 255, np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    ncols = 1 + len(columns)
    cell = width / ncols
    fig, axes = figure(ncols=ncols, nrows=n, width=width, height=cell * h / w * n + 0.45, squeeze=False)
    for i in range(n):
        panels = [rows[i]] + [lut[np.asarray(m[i], np.uint8)] for m in columns.values()]
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, interpolation="nearest")
            ax.set_axis_off()  # no ticks, no frame (the title stays)
            if i == 0:
                ax.set_title((["image"] + list(columns))[j])
    legend = [Patch(facecolor=np.asarray(c) / 255, edgecolor="none", label=n) for n, c in zip(class_names, palette)]
    fig.legend(handles=legend, loc="lower center", ncol=min(len(class_names), 6),
               bbox_to_anchor=(0.5, 0.0), handlelength=1.0, columnspacing=0.8)
    fig.subplots_adjust(wspace=0.03, hspace=0.03, bottom=0.45 / (cell * h / w * n + 0.45) + 0.02)
    return title_above(fig, title)
