"""Figures in one style, sized for a paper column, saved as PDF and PNG.

Every function takes plain data (pandas frames, numpy arrays) and returns a matplotlib Figure;
:func:`save` writes it as ``<stem>.pdf`` and ``<stem>.png`` (each atomically).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

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
    """A figure of several panels: ``title`` above them all, the panels laid out tight."""
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def show(fig, stem: str | Path) -> None:
    """Save ``fig`` (:func:`save`), display it once and close it: a figure left open would be
    displayed a second time by the inline backend at the end of the cell. Returns nothing, so
    that a cell ending in it prints no list of paths."""
    from IPython.display import display

    save(fig, stem, close=True)
    display(fig)


def show_markdown(text: str) -> None:
    """Display Markdown that reads as the same text where Markdown is not rendered (papermill's
    ``--log-output``, a terminal), not as ``<IPython.core.display.Markdown object>``."""
    from IPython.display import display

    display({"text/markdown": text, "text/plain": text}, raw=True)


# ------------------------------------------------------------------------------------------
# curves
# ------------------------------------------------------------------------------------------

def plot_losses(curves: pd.DataFrame, title: str = "", ax=None):
    """Training losses (total, L_seg, L_con, L_pl) against the step."""
    fig, ax = (ax.figure, ax) if ax is not None else figure()
    names = {"loss": "total", "loss_seg": r"$L_{seg}$", "loss_con": r"$L_{con}$", "loss_pl": r"$L_{pl}$"}
    for col, label in names.items():
        if col in curves and curves[col].notna().any():
            ax.plot(curves["step"], curves[col], label=label)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    return fig


MIN_SPAN = 10.0   # points of mIoU: the least span of a y-axis, so that seed noise does not look like a trend

# Fig. 3 of the paper, read off the figure (METHOD.md: Cityscapes 100, best at λ1 = 1/2 with Table II's 54.85,
# about 2 points lower at 1/4 and 1.5 lower at 1): approximate, for the shape of the curve only
PAPER_FIG3 = {"label": "paper, Cityscapes 100 (Fig. 3, approx.)", "lambda1": (0.25, 0.5, 1.0),
              "miou": (52.85, 54.85, 53.35)}


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


def _val_line(ax, curves: pd.DataFrame, name: str) -> list[float]:
    """Plot the validation mIoU (%) of one curve frame, its best evaluation ringed (a table reports
    the last point, metrics.json records both); returns the values drawn."""
    v = curves.dropna(subset=["val_miou"])
    (line,) = ax.plot(v["step"], 100 * v["val_miou"], marker="o", ms=3, label=name)
    if len(v):
        best = v.loc[v["val_miou"].idxmax()]  # the first maximum, as metrics.json's "best"
        ax.plot([best["step"]], [100 * best["val_miou"]], marker="o", ms=8, mfc="none", color=line.get_color())
    return list(100 * v["val_miou"])


def plot_val_miou(curves_by_name: Mapping[str, pd.DataFrame], title: str = "", ax=None, note: str = ""):
    """Validation mIoU (%) over training, one line per named curve frame (y-span at least
    :data:`MIN_SPAN` points), each line's best evaluation ringed (tables report the last point).
    ``note``: a line of text under the axes (e.g. the paper's numbers)."""
    fig, ax = (ax.figure, ax) if ax is not None else figure()
    miou_axis(ax, [m for name, c in curves_by_name.items() for m in _val_line(ax, c, name)])
    ax.set(xlabel="step", ylabel="val mIoU (%)", title=title)
    ax.legend()
    if note:
        ax.text(0, -0.32, note, transform=ax.transAxes, fontsize=6, va="top", wrap=True)
    return fig


def plot_fig2(with_pl: pd.DataFrame, without_pl: pd.DataFrame, title: str = ""):
    """Figure 2: stage 3 with and without pseudo-masks (L_pl): L_con (left), val mIoU (right)."""
    fig, (a, b) = figure(ncols=2, width=PAGE_WIDTH * 0.7)
    seen = []
    for name, c in (("with $L_{pl}$", with_pl), ("without $L_{pl}$", without_pl)):
        a.plot(c["step"], c["loss_con"], label=name)
        seen += _val_line(b, c, name)
    miou_axis(b, seen)
    a.set(xlabel="step", ylabel=r"$L_{con}$")
    b.set(xlabel="step", ylabel="val mIoU (%)")
    a.legend()
    return _finish(fig, title)


def plot_lambda(table: pd.DataFrame, title: str = "", paper: Mapping | None = PAPER_FIG3):
    """Figure 3: mIoU (%) against λ1 (= λ2), one line per dataset, error bars = std over seeds
    (left; y-span at least :data:`MIN_SPAN`), and beside it (right) each curve relative to its value
    at λ1 = 1/2, the paper's choice, with the paper's curve (``paper``, :data:`PAPER_FIG3`) dashed:
    the shapes compare where the absolute numbers cannot.
    ``table``: columns dataset, lambda1, miou, miou_std (see :func:`results.lambda_table`)."""
    fig, (ax, rel) = figure(ncols=2, width=PAGE_WIDTH * 0.75)
    for name, d in table.groupby("dataset", sort=False):
        d = d.sort_values("lambda1")
        err = d["miou_std"].fillna(0)
        line = ax.errorbar(d["lambda1"], d["miou"], yerr=err, marker="o", ms=3, capsize=2, label=name)
        at_half = d.loc[np.isclose(d["lambda1"], 0.5), "miou"]
        if len(at_half):
            rel.errorbar(d["lambda1"], d["miou"] - float(at_half.iloc[0]), yerr=err, marker="o", ms=3, capsize=2,
                         color=line[0].get_color(), label=name)
    miou_axis(ax, list(table["miou"] - table["miou_std"].fillna(0)) + list(table["miou"] + table["miou_std"].fillna(0)))
    if paper:
        ref = np.asarray(paper["miou"]) - paper["miou"][list(paper["lambda1"]).index(0.5)]
        rel.plot(paper["lambda1"], ref, ls="--", marker="s", ms=3, color="black", label=paper["label"])
    rel.axhline(0, color="grey", lw=0.5)
    lo, hi = rel.get_ylim()
    rel.set_ylim(min(lo, -3), max(hi, 3))    # at least ±3 points
    for a in (ax, rel):
        a.set_xscale("log", base=2)
        a.set_xlabel(r"$\lambda_1 = \lambda_2$")
    ax.set(ylabel="val mIoU (%)")
    rel.set(ylabel=r"mIoU $-$ mIoU at $\lambda_1 = 1/2$ (points)")
    ax.legend()
    rel.legend(fontsize=6)
    return _finish(fig, title)


def plot_pseudo_stages(runs: pd.DataFrame, title: str = ""):
    """Pseudo-mask mIoU on U (%) per stage: bars from 0 per dataset (mean, error bars = std over
    seeds where there are several), each labelled with its value; one stage reads as one bar."""
    fig, ax = figure()
    df = runs.assign(pseudo=100 * runs["pseudo_miou"].astype(float))
    stages = sorted(df["stage"].unique())
    datasets = list(dict.fromkeys(df["dataset"]))
    width = 0.8 / max(len(datasets), 1)
    for i, d in enumerate(datasets):
        g = df[df["dataset"] == d].groupby("stage")["pseudo"].agg(["mean", "std", "count"]).reindex(stages)
        x = np.arange(len(stages)) + (i - (len(datasets) - 1) / 2) * width
        err = np.where(g["count"] > 1, g["std"].fillna(0), 0)
        bars = ax.bar(x, g["mean"], width * 0.95, yerr=err, capsize=2, label=d)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in g["mean"]], fontsize=6, padding=1)
    ax.set_xticks(np.arange(len(stages)), [f"Stage {s}" for s in stages])
    ax.set_ylim(0, min(100, max(10.0, float(np.nanmax(df["pseudo"])) * 1.2)))
    ax.set(ylabel="pseudo-mask mIoU on U (%)", title=title)
    ax.legend(loc="lower right")
    return fig


def plot_per_class_gains(gains: pd.DataFrame, title: str = ""):
    """Per-class IoU gain (points) of stage 3 over stage 1, one panel per dataset, classes sorted
    by gain (error bars = std over seeds where there are several). A class whose IoU is 0 at both
    stages (never predicted correctly) is drawn as a hatched grey marker, not as a 0 gain."""
    datasets = list(dict.fromkeys(gains["dataset"]))
    fig, axes = figure(ncols=len(datasets), width=COLUMN_WIDTH * len(datasets), height=2.6, squeeze=False)
    for ax, d in zip(axes[0], datasets):
        g = gains[gains["dataset"] == d].sort_values("gain", ascending=False)
        never = g["never_predicted"].fillna(False).astype(bool) if "never_predicted" in g else pd.Series(False, g.index)
        colours = ["lightgrey" if n else ("tab:green" if v >= 0 else "tab:red") for v, n in zip(g["gain"], never)]
        err = np.where(g.get("n_seeds", pd.Series(1, g.index)) > 1, g["gain_std"].fillna(0), 0)
        span = max(1.0, float(np.nanmax(np.abs(g["gain"])))) if len(g) else 1.0
        widths = [span * 0.04 if n else v for v, n in zip(g["gain"], never)]
        bars = ax.barh(g["class"], widths, xerr=err, color=colours)
        for bar, n in zip(bars, never):
            if n:
                bar.set_hatch("////")
                bar.set_edgecolor("grey")
        ax.axvline(0, color="black", lw=0.6)
        ax.invert_yaxis()
        ax.set(xlabel="IoU gain (points)", title=d)
        if never.any():
            ax.legend(handles=[Patch(facecolor="lightgrey", edgecolor="grey", hatch="////",
                                     label="IoU 0 at both stages (never predicted correctly)")],
                      loc="lower right", fontsize=6)
    return _finish(fig, title)


# ------------------------------------------------------------------------------------------
# image grids
# ------------------------------------------------------------------------------------------

def prediction_grid(images: Sequence[np.ndarray], columns: Mapping[str, Sequence[np.ndarray]], dataset: str,
                    class_names: Sequence[str], palette: Sequence[Sequence[int]], width: float = PAGE_WIDTH):
    """Rows: images; columns: the image, then one coloured mask per entry of ``columns`` (e.g.
    Stage 1, Stage 2, Stage 3, ground truth). ``images``: uint8 (N, 3, H, W) or (N, H, W, 3), or a
    list of (3, H, W) / (H, W, 3) images of different sizes; each column: masks (H, W) to match.
    ``palette`` colours the classes (``ignore`` and unknown values: white); ``dataset`` is unused
    (kept for callers). A class legend sits below; rows take the first image's aspect ratio."""
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
    return fig
