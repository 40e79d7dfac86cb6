"""Runs → tidy pandas DataFrames → tables beside the paper's published numbers.

* :func:`collect` turns ``(RunSpec, PipelineResult)`` pairs into one row per (run, stage).
* :func:`mean_std` aggregates over seeds (mIoU in %, mean ± sample std, number of seeds).
* :func:`published` / :func:`published_miou` read the paper's numbers (``paper_results.csv``,
  shipped with the package); :func:`join_published` puts them beside ours.
* :func:`write_table` writes a table as Markdown, LaTeX and CSV, each file atomically.

mIoU values in the tidy frames are fractions (as in ``metrics.json``); tables show percent.
"""
from __future__ import annotations

import io
import math
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .evaluate import EVALUATION, REPORTED
from .experiments import PAPER_DATASET, PAPER_DATASET_NAME, PAPER_LABELS, STAND_INS
from .methods import BASELINES, SWITCH_KEYS
from .paths import runs_dir
from .pretrain import pretraining_of
from .runs import atomic_write_text, read_json

RUN_COLUMNS = ["dataset", "paper_dataset", "labels", "paper_labels", "labels_used", "variant", "method", "seed", "scale",
               "stage", "val_miou", "pseudo_miou", "lambda1", "lambda2", *SWITCH_KEYS,
               "train_time_s", "run_dir", "pretraining", "eval_model", "val_miou_student", "val_miou_teacher",
               "reported", "val_miou_last", "val_miou_best", "best_step", "split"]


# ------------------------------------------------------------------------------------------
# runs → tidy frames
# ------------------------------------------------------------------------------------------

def collect(pairs: Iterable, scale: str | None = None, which: str = "last") -> pd.DataFrame:
    """One row per (run, stage) of ``pairs`` (``(RunSpec, PipelineResult)``, e.g. a GridResult).

    ``which``: the validation mIoU that ``val_miou`` (what every table shows) holds: ``"last"``, the
    model of the last step (the default, and the number ``metrics.json`` reports as ``val``), or
    ``"best"``, the best of the evaluations made during training (NaN for runs written before it was
    recorded). Both are kept as ``val_miou_last`` and ``val_miou_best``; ``reported`` says which one
    ``val_miou`` is, and the table captions repeat it."""
    _check_which(which)
    rows = []
    for spec, result in pairs:
        cfg = result.config
        for r in result.stages:
            rows.append({
                "dataset": spec.dataset, "paper_dataset": PAPER_DATASET.get(spec.dataset, spec.dataset),
                "labels": spec.labels, "paper_labels": PAPER_LABELS.get(spec.dataset, {}).get(spec.labels, ""),
                "labels_used": cfg.labels, "variant": spec.variant, "method": cfg.method, "seed": cfg.seed,
                "scale": scale or cfg.scale, "stage": r.stage, "val_miou": r.miou(which), "pseudo_miou": r.pseudo_miou,
                "lambda1": cfg.lambda1, "lambda2": cfg.lambda2, **{k: getattr(cfg, k) for k in SWITCH_KEYS},
                "train_time_s": r.metrics.get("train_time_s", np.nan),
                "run_dir": str(r.run_dir), "pretraining": pretraining_of(cfg), **_model_mious(r.metrics),
                "reported": which, **_best_last(r.metrics), "split": _split_of(r.metrics, cfg.split_file)})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _check_which(which: str) -> None:
    if which not in REPORTED:
        raise ValueError(f"which: must be one of {list(REPORTED)} (the last step's mIoU or the best evaluation's), "
                         f"got {which!r}")


def _best_last(metrics: dict) -> dict[str, Any]:
    """The last step's and the best evaluation's validation mIoU (and its step) of a run's ``metrics``;
    runs written before the best was recorded give NaN and None."""
    best = metrics.get("best") or {}
    return {"val_miou_last": float(metrics["val"]["miou"]) if metrics["val"].get("miou") is not None else np.nan,
            "val_miou_best": np.nan if best.get("miou") is None else float(best["miou"]), "best_step": best.get("step")}


def _split_of(metrics: dict, split_file: str | None) -> str:
    """``authors``, ``random`` or ``file``; runs written before ``split`` was recorded drew theirs
    at random unless a split file named it."""
    return metrics.get("split") or ("file" if split_file else "random")


def _model_mious(metrics: dict) -> dict[str, Any]:
    """The evaluated model (``eval_model``: student or teacher) and the validation mIoU of each; runs
    written before these keys existed give NaN (and no teacher when the stage has none)."""
    def miou(key):
        v = metrics.get(key)
        return float(v["miou"]) if isinstance(v, dict) and v.get("miou") is not None else np.nan

    return {"eval_model": metrics.get("eval_model", "student"), "val_miou_student": miou("val_student"),
            "val_miou_teacher": miou("val_teacher")}


def per_class(pairs: Iterable, which: str = "val") -> pd.DataFrame:
    """Per-class IoU, one row per (run, stage, class). ``which``: "val" or "pseudo" (on U)."""
    key = {"val": "val", "pseudo": "pseudo_masks_unlabelled"}[which]
    rows = [{"dataset": spec.dataset, "labels": spec.labels, "variant": spec.variant, "seed": result.config.seed,
             "stage": r.stage, "class": cls, "iou": iou}
            for spec, result in pairs for r in result.stages for cls, iou in r.metrics[key]["per_class_iou"].items()]
    return pd.DataFrame(rows, columns=["dataset", "labels", "variant", "seed", "stage", "class", "iou"])


def per_class_gains(frame: pd.DataFrame, base_stage: int = 1, stage: int = 3) -> pd.DataFrame:
    """IoU gain (in points) of ``stage`` over ``base_stage`` per class, mean ± std over seeds."""
    keys = ["dataset", "labels", "variant", "seed", "class"]
    wide = frame.pivot_table(index=keys, columns="stage", values="iou").reset_index()
    wide["gain"] = 100 * (wide[stage] - wide[base_stage])
    wide["zero"] = (wide[stage] == 0) & (wide[base_stage] == 0)
    keys = ["dataset", "labels", "variant", "class"]
    g = wide.groupby(keys, sort=False)
    out = g["gain"].agg(["mean", "std", "count"]).reset_index().rename(columns={"mean": "gain", "std": "gain_std",
                                                                                "count": "n_seeds"})
    # IoU 0 at both stages in every seed: the class is never predicted correctly, not "no change"
    out["never_predicted"] = g["zero"].all().to_numpy()
    out[f"iou_stage{base_stage}"] = 100 * g[base_stage].mean().to_numpy()
    out[f"iou_stage{stage}"] = 100 * g[stage].mean().to_numpy()
    return out.sort_values(["dataset", "gain"], ascending=[True, False], kind="stable").reset_index(drop=True)


def mean_std(frame: pd.DataFrame, by: Sequence[str], value: str = "val_miou", percent: bool = True) -> pd.DataFrame:
    """Mean, sample standard deviation (NaN for one seed) and count of ``value`` over the rows of
    each group (the seeds), in percent when ``percent``; plus a formatted ``"54.85 ± 0.12"``."""
    scale = 100.0 if percent else 1.0
    g = frame.assign(_v=frame[value].astype(float) * scale).groupby(list(by), sort=False, dropna=False)["_v"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["reproduced"] = [format_mean_std(m, s, n) for m, s, n in zip(out["mean"], out["std"], out["n"])]
    return out


PERCENT_COLUMNS = {"val_miou": "val mIoU (%)", "pseudo_miou": "pseudo-mask mIoU on U (%)",
                   "val_miou_student": "student val mIoU (%)", "val_miou_teacher": "teacher val mIoU (%)"}


def percent(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for reading: its mIoU columns (fractions in the tidy frames) in percent, named so."""
    cols = [c for c in PERCENT_COLUMNS if c in frame]
    return frame.assign(**{c: (100 * frame[c].astype(float)).round(2) for c in cols}).rename(columns=PERCENT_COLUMNS)


def format_mean_std(mean: float, std: float, n: int = 1, digits: int = 2) -> str:
    """``"54.85 ± 0.12"``; one seed (or no std) gives ``"54.85"``; missing gives ``"–"``."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if n <= 1 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ------------------------------------------------------------------------------------------
# the published numbers
# ------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _published() -> pd.DataFrame:
    text = resources.files("selftrain_lib").joinpath("paper_results.csv").read_text()
    return pd.read_csv(io.StringIO(text), dtype={"labels": str, "table": str})


def published(table: str | None = None) -> pd.DataFrame:
    """The paper's published mIoU (%): columns table, dataset, pretraining, method, labels, miou."""
    df = _published().copy()
    return df if table is None else df[df["table"] == table].reset_index(drop=True)


def published_miou(table: str, paper_dataset: str, method: str, labels: str,
                   pretraining: str | None = None) -> float:
    """One published number, NaN when the paper has no such cell."""
    df = _published()
    sel = (df["table"] == table) & (df["dataset"] == paper_dataset) & (df["method"] == method) \
        & (df["labels"] == str(labels))
    if pretraining is not None:
        sel &= df["pretraining"] == pretraining
    hits = df.loc[sel, "miou"]
    return float(hits.iloc[0]) if len(hits) else float("nan")


def comparable(dataset: str, run_pretraining, table: str) -> bool:
    """Whether a run may stand beside ``table``'s numbers for its dataset. A run of the real VOC
    is compared with the ImageNet+COCO numbers only when it started from the COCO checkpoint, and
    with the ImageNet numbers only when it did not; other runs (Cityscapes, whose tables are
    ImageNet's, and the stand-ins, which start from neither) with every table."""
    if dataset != "voc":
        return True
    df = _published()
    used = set(df.loc[(df["table"] == table) & (df["dataset"] == PAPER_DATASET[dataset]), "pretraining"])
    return (run_pretraining == "imagenet+mscoco") == (used == {"imagenet+mscoco"})


def join_published(summary: pd.DataFrame, table: str, method_col: str = "paper_method",
                   column: str = "published", pretraining: str | None = None) -> pd.DataFrame:
    """Add the published number of each row of ``summary`` (which needs ``dataset`` (ours),
    ``labels`` (nominal) and ``method_col``, the paper's method name) as ``column``; NaN where the
    row's ``pretraining`` (when ``summary`` has that column) is not :func:`comparable`."""
    out = summary.copy()
    runs_pre = out["pretraining"] if "pretraining" in out else [None] * len(out)
    out[column] = [published_miou(table, PAPER_DATASET.get(d, d), m, PAPER_LABELS.get(d, {}).get(n, str(n)),
                                  pretraining) if isinstance(m, str) and comparable(d, p, table) else float("nan")
                   for d, n, m, p in zip(out["dataset"], out["labels"], out[method_col], runs_pre)]
    return out


# ------------------------------------------------------------------------------------------
# writing tables
# ------------------------------------------------------------------------------------------

VALIDATION = "mIoU (%) on the validation set"
PSEUDO_MEASURE = ("mIoU (%) of each stage's pseudo-masks on the unlabelled set U (against its hidden ground truth), "
                  "beside the stage's validation mIoU (%)")


# the caption's line on which evaluation of each run a table shows (``collect(which=...)``)
REPORTED_TEXT = {
    "last": "model of the last step (the best evaluation during training is recorded in each metrics.json, "
            "not shown here)",
    "best": "the best of the evaluations during training (every eval_every steps), not the last step's model",
}


def caption(title: str, datasets: Iterable[str], scale: str, seeds: Sequence[int], measure: str = VALIDATION,
            published: str | None = None, which: str = "last") -> str:
    """A table caption naming the datasets (and the paper's counterpart), the scale, what is
    measured (``measure``, e.g. pseudo-masks on U), the seeds, the evaluation protocol and which
    evaluation of each run is shown (``which``: ``last`` or ``best``, see :func:`collect`); and,
    when the table has published numbers, ``published`` (what they are)."""
    _check_which(which)
    names = ", ".join(f"{d} (stand-in for {PAPER_DATASET_NAME.get(d, d)})" if d in STAND_INS else d
                      for d in dict.fromkeys(datasets))
    seeds = list(seeds)
    text = (f"{title}. Dataset: {names}; scale: {scale}; {measure}, mean ± std over "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} {seeds}; evaluation: {EVALUATION}; "
            f"{REPORTED_TEXT[which]}.")
    return text + (f" {published}" if published else "")


def reported_of(runs: pd.DataFrame) -> str:
    """Which evaluation the ``val_miou`` of ``runs`` (a :func:`collect` frame) holds: ``best`` when
    every row says so, else ``last`` (frames from before the column existed hold the last)."""
    if "reported" in runs and len(runs) and (runs["reported"] == "best").all():
        return "best"
    return "last"


PUBLISHED_GAIN = ("'gain' is each row's mIoU minus the {base} row's at the same label count, ours beside the "
                  "paper's (from {source}): on another dataset or at another scale than the paper's every "
                  "number shifts, so compare gains, not absolute numbers.")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def to_markdown(df: pd.DataFrame, caption_text: str = "") -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    text = "\n".join([head, rule, *body]) + "\n"
    return (f"{caption_text}\n\n{text}" if caption_text else text)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "λ": r"$\lambda$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, caption_text: str = "", label: str = "") -> str:
    cols = "l" * len(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption_text:
        lines.append(r"\caption{" + latex_escape(caption_text) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + cols + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(_cell(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, path: str | Path, caption_text: str = "", data: pd.DataFrame | None = None,
                sections: Sequence[tuple[str, pd.DataFrame, str]] = ()) -> dict[str, Path]:
    """Write ``df`` to ``<path>.md`` and ``<path>.tex`` and ``data`` (default ``df``; e.g. the tidy
    long form of a wide table) to ``<path>.csv``, each atomically; ``path`` is given without suffix.
    ``sections``: more ``(heading, table, caption)`` after the first (e.g. the teacher's numbers).
    Returns the three paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {"md": path.with_suffix(".md"), "tex": path.with_suffix(".tex"), "csv": path.with_suffix(".csv")}
    md = [to_markdown(df, caption_text)] + [f"### {h}\n\n" + to_markdown(s, c) for h, s, c in sections]
    tex = [to_latex(df, caption_text, label=f"tab:{path.name}")] + [
        to_latex(s, c, label=f"tab:{path.name}-{i + 1}") for i, (_, s, c) in enumerate(sections)]
    atomic_write_text(out["md"], "\n".join(md))
    atomic_write_text(out["tex"], "\n".join(tex))
    atomic_write_text(out["csv"], (df if data is None else data).to_csv(index=False))
    return out


# ------------------------------------------------------------------------------------------
# the tables of the paper
# ------------------------------------------------------------------------------------------

def _pretraining_col(summary: pd.DataFrame) -> list[str]:
    """``["pretraining"]`` when the rows started from different pre-trainings (else one column of one value)."""
    return ["pretraining"] if summary["pretraining"].nunique(dropna=False) > 1 else []


def _side_by_side(summary: pd.DataFrame, first: Sequence[str], published_cols: Sequence[str]) -> pd.DataFrame:
    cols = list(first) + ["labels", "labels_used", "paper_labels", "reproduced", "n"] + list(published_cols) \
        + ["mean", "std"]
    out = summary[cols].rename(columns={"labels": "labels (ours)", "labels_used": "labels used at this scale",
                                        "paper_labels": "labels (paper)",
                                        "reproduced": "reproduced mIoU (%)", "n": "seeds",
                                        "mean": "mean (%)", "std": "std (%)"})
    return out.reset_index(drop=True)


SUPERVISED_ROW = "Supervised (= Stage 1)"
# our row label -> (the paper's method name in Tables II and III, in Table IV)
LABEL_ROWS = {
    SUPERVISED_ROW: ("DeepLabV2 (supervised)", "DeepLabV2 (supervised)"),
    "Cutout (mean teacher)": ("French et al. (Cutout)", None),
    "CutMix (mean teacher)": ("French et al. (CutMix)", "French et al. (CutMix, reproduced by the paper's authors)"),
    "Stage 2": (None, None),
    "Ours (three-stage)": ("Ours (three-stage)", "Ours (three-stage)"),
    "full supervision (Stage 1 on the pool)": ("DeepLabV2 (supervised)", "DeepLabV2 (supervised)"),
}


def _label_row(variant: str, method: str, stage: int) -> str:
    if variant == "full supervision":
        return "full supervision (Stage 1 on the pool)"
    if method in BASELINES:
        return BASELINES[method]
    return {1: SUPERVISED_ROW, 2: "Stage 2", 3: "Ours (three-stage)"}.get(stage, f"Stage {stage}")


def label_table(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Tables II / III-IV: reproduced rows for Supervised (= Stage 1 of the three-stage runs),
    the mean teacher baselines Cutout and CutMix, Stage 2 and the three-stage method at each label
    count, and full supervision; each beside the published number of the same method and cell
    (French et al.'s rows for Cutout and CutMix)."""
    df = runs[runs["dataset"] == dataset].copy()
    if "method" not in df:
        df["method"] = "three-stage"
    if "pretraining" not in df:
        df["pretraining"] = None
    df["method"] = [_label_row(v, m, st) for v, m, st in zip(df["variant"], df["method"].fillna("three-stage"),
                                                             df["stage"])]
    df["paper_method"] = df["method"].map(lambda r: LABEL_ROWS.get(r, (None, None))[0])
    df["paper_method_iv"] = df["method"].map(lambda r: LABEL_ROWS.get(r, (None, None))[1])
    df = df[df["stage"] <= 3]
    s = mean_std(df, ["dataset", "method", "paper_method", "paper_method_iv", "labels", "labels_used",
                      "paper_labels", "pretraining"])
    if PAPER_DATASET.get(dataset) == "cityscapes":
        s = join_published(s, "II", column="published (Table II)", pretraining="imagenet")
        pub = ["published (Table II)"]
    else:
        s = join_published(s, "III", column="published (Table III, ImageNet)")
        s = join_published(s, "IV", method_col="paper_method_iv", column="published (Table IV, ImageNet+COCO)")
        pub = ["published (Table III, ImageNet)", "published (Table IV, ImageNet+COCO)"]
    order = {r: i for i, r in enumerate(LABEL_ROWS)}  # the paper's row order
    s["_o"] = s["method"].map(order)
    s["_l"] = s["labels"].map(lambda v: 10 ** 9 if v == "full" else int(v))
    s = s.sort_values(["_o", "_l"]).drop(columns=["_o", "_l"])
    return _side_by_side(s, ["method"] + _pretraining_col(s), pub)


ABLATION_ROWS = [  # (variant, stage, row label, the paper's method name in Table V)
    ("full method", 1, "S1 only", "S1 only"),
    ("full method", 2, "S1+S2 (CR, T2, SA)", "S1+S2 (CR,T2,SA)"),
    ("without CR", 3, "S1+S2+S3 without CR", "S1+S2+S3 without CR"),
    ("without T2", 3, "S1+S2+S3 without T2", "S1+S2+S3 without T2"),
    ("without SA", 3, "S1+S2+S3 without SA", "S1+S2+S3 without SA"),
    ("without N2", 3, "S1+S2+S3 without N2 (ĝ in stage 3)", "S1+S2+S3 without N2 (g-hat in stage 3)"),
    ("full method", 3, "S1+S2+S3 full", "S1+S2+S3 full"),
]


def _rows_table(runs: pd.DataFrame, rows: Sequence[tuple], table: str) -> pd.DataFrame:
    parts = [runs[(runs["variant"] == variant) & (runs["stage"] == stage)].assign(row=label, paper_method=method)
             for variant, stage, label, method in rows]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["dataset", "row", "labels (ours)", "labels used at this scale", "labels (paper)",
                                     "reproduced mIoU (%)",
                                     "seeds", f"published (Table {table})", "mean (%)", "std (%)"])
    df = pd.concat(parts, ignore_index=True)
    if "pretraining" not in df:
        df["pretraining"] = None
    s = mean_std(df, ["dataset", "row", "paper_method", "labels", "labels_used", "paper_labels", "pretraining"])
    s = join_published(s, table, column=f"published (Table {table})")
    return _side_by_side(s, ["dataset", "row"] + _pretraining_col(s), [f"published (Table {table})"])


def ablation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table V (rows decoded in docs/method.md)."""
    return _rows_table(runs, ABLATION_ROWS, "V")


EMA_ROWS = [("full method", 2, "EMA, stage 2", "EMA stage 2"), ("full method", 3, "EMA, stage 3", "EMA stage 3"),
            ("without EMA", 2, "no EMA, stage 2", "no EMA stage 2"),
            ("without EMA", 3, "no EMA, stage 3", "no EMA stage 3")]


def ema_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table VI: the EMA teacher against the student as its own teacher."""
    return _rows_table(runs, EMA_ROWS, "VI")


# ------------------------------------------------------------------------------------------
# the paper's layout: one row per method, one column group per label count (or dataset)
# ------------------------------------------------------------------------------------------

def _gain(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def paper_layout(long: pd.DataFrame, row: str, group: Sequence[str], base: str | None = None,
                 published: str | None = None, paper_absolute: bool = False) -> pd.DataFrame:
    """A long table (:func:`label_table`, :func:`ablation_table`; numeric ``mean (%)``, ``std (%)``)
    laid out as the paper's: one row per ``row`` value, per ``group`` (label count, or dataset and
    label count) the reproduced ``mean ± std``, with ``(n=k)`` where a cell has fewer seeds than the
    table's most; with ``base`` (e.g. Supervised) the gain over the base row beside the paper's gain
    over its own base row (``published``: the published column, default the first); with
    ``paper_absolute`` the published number itself."""
    published = published or next((c for c in long.columns if c.startswith("published")), None)
    most = int(long["seeds"].max()) if len(long) else 0
    keys = list(dict.fromkeys(tuple(k) for k in long[list(group)].itertuples(index=False)))
    rows = list(dict.fromkeys(long[row]))
    cell = {(r[row], tuple(r[g] for g in group)): r for _, r in long.iterrows()}
    out = []
    for name in rows:
        line = {row: name}
        for k in keys:
            head = " ".join(str(v) for v in k)
            c = cell.get((name, k))
            b = cell.get((base, k)) if base else None
            ours = "–" if c is None else format_mean_std(c["mean (%)"], c["std (%)"], int(c["seeds"])) + (
                f" (n={int(c['seeds'])})" if int(c["seeds"]) < most else "")
            line[head] = ours
            pub = float(c[published]) if c is not None and published else float("nan")
            if paper_absolute and published:
                line[f"{head} paper"] = pub
            if base:
                line[f"{head} gain"] = _gain(c["mean (%)"] - b["mean (%)"]) if c is not None and b is not None else "–"
                line[f"{head} paper gain"] = _gain(pub - float(b[published])) if b is not None and published else "–"
        out.append(line)
    return pd.DataFrame(out)


def _label_heading(long: pd.DataFrame) -> pd.DataFrame:
    """The column group of a label table: the paper's label count, with ours when it differs."""
    def head(ours, paper, used):
        text = str(paper) if str(paper) == str(ours) else f"{paper} ({ours})"
        return text if str(used) == str(ours) or ours == "full" else f"{text} [{used} used]"

    return long.assign(count=[head(o, p, u) for o, p, u in zip(long["labels (ours)"], long["labels (paper)"],
                                                                 long["labels used at this scale"])])


def teacher_runs(runs: pd.DataFrame) -> pd.DataFrame | None:
    """``runs`` with ``val_miou`` replaced by the teacher's, for the stages that have a teacher;
    None when no run has one (or the runs predate ``val_teacher``)."""
    if "val_miou_teacher" not in runs or runs["val_miou_teacher"].isna().all():
        return None
    has = runs[runs["val_miou_teacher"].notna()]
    return has.assign(val_miou=has["val_miou_teacher"], reported="last")  # the teacher's last step


def _evaluated(runs: pd.DataFrame) -> str:
    models = sorted(set(runs["eval_model"].dropna())) if "eval_model" in runs else []
    return f"the evaluated model: {' / '.join(models) or 'student'}"


def label_report(runs: pd.DataFrame, dataset: str, scale: str, seeds: Sequence[int], title: str) -> dict[str, Any]:
    """Table II or III/IV as in the paper (``paper_layout`` of :func:`label_table`): keyword arguments
    of :func:`write_table` (display table, tidy CSV, caption, and the teacher's numbers when the runs
    kept them)."""
    long = label_table(runs, dataset)
    # the published column that matches these runs' pre-training (VOC: Table III for ImageNet, IV for COCO)
    published = [c for c in long.columns if c.startswith("published")]
    pub = max(published, key=lambda c: long[c].notna().sum()) if published else None
    wide = paper_layout(_label_heading(long), "method", ["count"], base=SUPERVISED_ROW, published=pub)
    note = PUBLISHED_GAIN.format(base="Supervised (= Stage 1)", source=f"'{pub}'") if pub else ""
    cap = caption(title, [dataset], scale, seeds, measure=f"{VALIDATION} ({_evaluated(runs)})", published=note
                  + " Columns: the paper's label count (ours in parentheses; [k used] at a scale with a smaller pool).",
                  which=reported_of(runs))
    sections = []
    teacher = teacher_runs(runs[runs["dataset"] == dataset])
    if teacher is not None:
        t_long = _label_heading(label_table(teacher, dataset))
        sections.append(("The EMA teacher", paper_layout(t_long, "method", ["count"], base=SUPERVISED_ROW,
                                                         published=pub),
                         caption(f"{title}: the EMA teacher of each stage that has one", [dataset], scale, seeds,
                                 measure="mIoU (%) of the teacher on the validation set")))  # always the last step
    return {"df": wide, "caption_text": cap, "data": long, "sections": sections}


def rows_report(runs: pd.DataFrame, which: str, scale: str, seeds: Sequence[int], title: str) -> dict[str, Any]:
    """Table V (``which="V"``, gains over "S1 only") or VI (``"VI"``) as in the paper: one row per
    component row, one column group per dataset; keyword arguments of :func:`write_table`."""
    make, base = {"V": (ablation_table, "S1 only"), "VI": (ema_table, None)}[which]
    long = make(runs)
    if len(long):
        long = long.assign(where=[f"{PAPER_DATASET_NAME.get(d, d)} {p}" for d, p in
                                  zip(long["dataset"], long["labels (paper)"])])
    pub = f"published (Table {which})"
    wide = paper_layout(long, "row", ["where"], base=base, published=pub, paper_absolute=True) if len(long) else long
    note = ("'paper' is the published number of the same cell (its own dataset). "
            + (PUBLISHED_GAIN.format(base="'S1 only'", source=f"Table {which}") if base else ""))
    datasets = list(dict.fromkeys(runs["dataset"]))
    cap = caption(title, datasets, scale, seeds, measure=f"{VALIDATION} ({_evaluated(runs)})", published=note
                  + " Columns: the paper's dataset and label count (our stand-in in the caption).",
                  which=reported_of(runs))
    return {"df": wide, "caption_text": cap, "data": long}


def table_v_note(drop: str) -> str:
    """The paper's Table V numbers for dropping ``drop`` (CR, T2, SA, N2) against the full method, as
    one line for a figure (``""`` for other drops)."""
    row = {v: m for v, st, _, m in ABLATION_ROWS if st == 3}.get(f"without {drop}")
    if row is None:
        return ""
    parts = []
    for paper_dataset, name, labels in (("cityscapes", "Cityscapes", "100"), ("pascal_voc_aug", "VOC", "1/50")):
        full = published_miou("V", paper_dataset, "S1+S2+S3 full", labels)
        without = published_miou("V", paper_dataset, row, labels)
        parts.append(f"{name} {labels}: {without:.2f} vs {full:.2f} ({without - full:+.2f})")
    return f"Paper, Table V, without {drop} vs full: " + "; ".join(parts)


def pseudo_stage_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Pseudo-mask mIoU on U (and validation mIoU) per stage, mean ± std over seeds."""
    p = mean_std(runs, ["dataset", "labels", "stage"], value="pseudo_miou")
    v = mean_std(runs, ["dataset", "labels", "stage"], value="val_miou")
    out = p[["dataset", "labels", "stage", "reproduced", "n"]].rename(
        columns={"reproduced": "pseudo-mask mIoU on U (%)", "n": "seeds"})
    out["val mIoU (%)"] = v["reproduced"].to_numpy()
    return out


def lambda_table(runs: pd.DataFrame, stage: int = 3) -> pd.DataFrame:
    """Figure 3's numbers: validation mIoU of ``stage`` against λ1 (= λ2)."""
    s = mean_std(runs[runs["stage"] == stage], ["dataset", "labels", "lambda1"])
    return s.rename(columns={"mean": "miou", "std": "miou_std", "n": "seeds"})


# ------------------------------------------------------------------------------------------
# predictions kept by the runs (for figure grids) and the runs in a cache
# ------------------------------------------------------------------------------------------

def val_samples(stage_results: Sequence, data, max_images: int = 4,
                before: dict | None = None) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], list[np.ndarray]]:
    """The fixed validation sample every run keeps (``val_samples.npz``): images uint8 (3, H, W),
    ``{"Stage k": predictions}`` (H, W) for each stage result, and the ground truths (H, W), one
    list entry per image (images of a dataset read from files differ in size).
    ``before``: ``{"CutMix": StageResult}``, columns placed before the stages (Figs. 4 and 5)."""
    columns: dict[str, list[np.ndarray]] = {}
    indices = None
    named = [(name, r) for name, r in (before or {}).items()] + [(f"Stage {r.stage}", r) for r in stage_results]
    for name, r in named:
        z = np.load(Path(r.run_dir) / "val_samples.npz")
        if indices is not None and not np.array_equal(z["indices"][:len(indices)], indices):
            raise ValueError(f"{r.run_dir} kept another validation sample than the other runs")
        indices = z["indices"][:max_images] if indices is None else indices
        columns[name] = [z[f"prediction_{k}"] for k in range(len(indices))]
    if indices is None:
        raise ValueError("no stage results given")
    idx = [int(i) for i in indices]
    return [data.val.image(i).numpy() for i in idx], columns, [data.val.mask(i).numpy() for i in idx]


def list_runs(out: str | Path | None = None, which: str = "last") -> pd.DataFrame:
    """Every finished stage run in the run cache ``out`` (None: :func:`selftrain_lib.paths.runs_dir`):
    one row per ``<hash>/metrics.json``. ``val_miou`` is the ``which`` evaluation (``last`` or ``best``,
    as in :func:`collect`); both are columns too."""
    _check_which(which)
    out = runs_dir(out)
    rows = []
    for m in sorted(Path(out).glob("*/metrics.json")):
        try:
            rows.append(_run_row(m, which))
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as err:
            # one damaged or foreign run must not hide the others (a rerun of it sets it aside)
            warnings.warn(f"{m}: not a finished run's metrics.json ({type(err).__name__}: {err}); left out of the list",
                          stacklevel=2)
    return pd.DataFrame(rows)


def _run_row(m: Path, which: str) -> dict:
    """The row of :func:`list_runs` for the run whose ``metrics.json`` is ``m``."""
    metrics = read_json(m)
    cfg = read_json(m.parent / "config.json").get("config", {})
    return {"run": m.parent.name, "dataset": metrics["dataset"], "stage": metrics["stage"],
            "labels": metrics["labels"], "pool_size": cfg.get("pool_size"), "seed": metrics["seed"], "scale": cfg.get("scale"),
            "method": cfg.get("method", "three-stage"),
            "val_miou": metrics["val"]["miou"] if which == "last" else _best_last(metrics)["val_miou_best"],
            **_best_last(metrics), "split": _split_of(metrics, cfg.get("split_file")),
            "pseudo_miou": metrics["pseudo_masks_unlabelled"]["miou"],
            **{k: cfg.get(k) for k in ("lambda1", "lambda2", *SWITCH_KEYS)},
            "parent": metrics.get("pseudo_masks_from"), "run_dir": str(m.parent)}
