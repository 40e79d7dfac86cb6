"""Runs → tidy pandas DataFrames → tables beside the paper's published numbers.

* :func:`collect` turns ``(RunSpec, PipelineResult)`` pairs into one row per (run, stage).
* :func:`mean_std` aggregates over seeds (mIoU in %, mean ± sample std, number of seeds).
* :func:`published` / :func:`published_miou` read the paper's numbers (``paper_results.csv``,
  shipped with the package); :func:`join_published` puts them beside ours.
* :func:`label_report` / :func:`rows_report` / :func:`lambda_report`: each paper table at a glance
  (:mod:`selftrain_lib.glance`): its rows and label columns, each cell "ours | the paper's".
* :func:`setting_text` / :func:`setting_of`: what a figure shows (dataset, labels used beside the
  paper's count, scale, seeds), for its title.
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

from .data import records
from .data.records import View
from .evaluate import EVALUATION, REPORTED
from .experiments import ABLATION_LABELS, PAPER_DATASET, PAPER_DATASET_NAME, PAPER_LABELS, STAND_INS
from .glance import DASH, SEP, Ours, Paper, layout
from .methods import BASELINES, SWITCH_KEYS, SWITCHES, saved_switches
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
    paper, rec = records.paper_of(dataset), records.record(dataset)
    if paper is None or rec.paper is None or len(paper.tables) < 2:   # one pre-training per table
        return True
    df = _published()
    used = set(df.loc[(df["table"] == table) & (df["dataset"] == paper.key), "pretraining"])
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


# what a paper preset follows, said in the caption after its name (docs/paper_vs_code.md)
PRESET_TEXT = {"paper": "the paper's text", "paper-code": "the authors' released code where it departs from the text"}


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
    preset = f" ({PRESET_TEXT[scale]})" if scale in PRESET_TEXT else ""
    text = (f"{title}. Dataset: {names}; scale: {scale}{preset}; {measure}, mean ± std over "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} {seeds}; evaluation: {EVALUATION}; "
            f"{REPORTED_TEXT[which]}.")
    return text + (f" {published}" if published else "")


def seeds_text(seeds: Sequence[int]) -> str:
    """``"1 seed [0]"``, ``"3 seeds [0, 1, 2]"``."""
    seeds = list(seeds)
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} {seeds}"


def setting_text(counts: Iterable[tuple[str, Any, Any]], scale: str, seeds: Sequence[int]) -> str:
    """What a figure shows, for its title or caption: each dataset (a stand-in named so) with the
    labels it used beside the paper's count, the scale (the preset's name) and the seeds.
    ``counts``: ``(dataset, labels used, the paper's count)`` (a used count equal to the paper's is
    said once; the paper's "full" or 2975 is full supervision). E.g. ``"synth-street (Cityscapes
    stand-in), 100 labels (20 used); scale quick; 1 seed [0]"``, ``"synth-objects (PASCAL VOC 2012
    stand-in), labels 1/50 (12 used); ..."``."""
    parts = []
    for d, used, paper in dict.fromkeys((d, str(u), str(p)) for d, u, p in counts):
        name = f"{d} ({PAPER_DATASET_NAME.get(d, d)} stand-in)" if d in STAND_INS else d
        if used == "full" or paper in ("full", "2975"):
            parts.append(f"{name}, full supervision" + (f" ({used} images)" if used.isdigit() else ""))
        elif paper in ("", "None", used):
            parts.append(f"{name}, {used} labels")
        else:   # the paper's count first, the count used beside it (label_counts.label_text)
            parts.append(f"{name}, " + (f"labels {paper}" if "/" in paper else f"{paper} labels") + f" ({used} used)")
    return f"{'; '.join(parts)}; scale {scale}; {seeds_text(seeds)}"


def setting_of(runs: pd.DataFrame, scale: str, seeds: Sequence[int]) -> str:
    """:func:`setting_text` of the runs of a :func:`collect` frame (full supervision left out when
    other counts are there: a figure of stages is about the label counts)."""
    counts = list(zip(runs["dataset"], runs["labels_used"], runs["paper_labels"]))
    partial = [c for c in counts if str(c[1]) != "full" and str(c[2]) not in ("full", "2975")] or counts
    return setting_text(partial, scale, seeds)


def reported_of(runs: pd.DataFrame) -> str:
    """Which evaluation the ``val_miou`` of ``runs`` (a :func:`collect` frame) holds: ``best`` when
    every row says so, else ``last`` (frames from before the column existed hold the last)."""
    if "reported" in runs and len(runs) and (runs["reported"] == "best").all():
        return "best"
    return "last"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def to_markdown(df: pd.DataFrame, caption_text: str = "") -> str:
    head = "| " + " | ".join(str(c).replace("|", "\\|") for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    text = "\n".join([head, rule, *body]) + "\n"
    return (f"{caption_text}\n\n{text}" if caption_text else text)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "λ": r"$\lambda$",
                  "|": r"\textbar{}", "†": r"\dag{}", "·": r"$\cdot$"}


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
    if _label_tables(dataset) == ("II",):
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
    ("full method", 2, "S1+S2 (CR, T2, SA)", "S1+S2 (CR,T2,SA)"),   # the paper's row: Stage 2 with its switches on
    # one row per switch of Table V (methods.SWITCHES), the run that drops it
    *((f"without {s.label}", 3, *s.table_row) for s in SWITCHES if s.table == "V"),
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


PER_CLASS_COLUMNS = ["dataset", "labels", "row", "class", "difference", "difference_std", "n_seeds",
                     "never_predicted", "iou_full", "iou_row"]


def ablation_per_class(frame: pd.DataFrame, rows: Sequence[tuple] = ABLATION_ROWS,
                       reference: tuple[str, int] = ("full method", 3)) -> pd.DataFrame:
    """Where each row of Table V differs from the full method, class by class.

    ``frame``: :func:`per_class`'s rows (validation IoU). For each row of ``rows`` (variant, stage,
    label, ...) but the reference (``reference``: variant and stage, the full method's Stage 3), the
    row's IoU minus the reference's, per class and paired by seed (same split and initialisation),
    in points: ``difference`` (mean), ``difference_std`` (sample std, NaN with one seed), ``n_seeds``,
    ``iou_full`` and ``iou_row`` (mean IoU in %, over the paired seeds) and ``never_predicted``
    (IoU 0 in both, in every seed: nothing to compare, not "no difference"). A mean mIoU difference
    can hide opposite moves of the frequent and the rare classes; this table shows them.
    Rows in Table V's order per dataset, classes by the full method's IoU, highest first."""
    keys = ["dataset", "labels", "seed", "class"]
    ref = frame[(frame["variant"] == reference[0]) & (frame["stage"] == reference[1])]
    ref = ref[keys + ["iou"]].rename(columns={"iou": "iou_full"})
    parts = []
    for order, (variant, stage, label, *_) in enumerate(rows):
        if (variant, stage) == tuple(reference):
            continue
        sel = frame[(frame["variant"] == variant) & (frame["stage"] == stage)][keys + ["iou"]]
        parts.append(sel.merge(ref, on=keys).assign(row=label, _order=order))
    parts = [p for p in parts if len(p)]   # rows without runs, or without the reference's seeds
    if not parts:
        return pd.DataFrame(columns=PER_CLASS_COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    df["difference"] = 100 * (df["iou"] - df["iou_full"])
    df["zero"] = (df["iou"] == 0) & (df["iou_full"] == 0)
    g = df.groupby(["dataset", "labels", "_order", "row", "class"], sort=False)
    out = g["difference"].agg(["mean", "std", "count"]).reset_index().rename(
        columns={"mean": "difference", "std": "difference_std", "count": "n_seeds"})
    out["never_predicted"] = g["zero"].all().to_numpy()
    out["iou_full"] = 100 * g["iou_full"].mean().to_numpy()
    out["iou_row"] = 100 * g["iou"].mean().to_numpy()
    # classes by the full method's IoU in their dataset (the frequent "stuff" first, as a rule)
    rank = ref.groupby(["dataset", "class"])["iou_full"].mean()
    out["_rank"] = [-rank.get((d, c), 0.0) for d, c in zip(out["dataset"], out["class"])]
    out = out.sort_values(["dataset", "_order", "_rank"], kind="stable")
    return out[PER_CLASS_COLUMNS].reset_index(drop=True)


EMA_ROWS = [("full method", 2, "EMA, stage 2", "EMA stage 2"), ("full method", 3, "EMA, stage 3", "EMA stage 3"),
            ("without EMA", 2, "no EMA, stage 2", "no EMA stage 2"),
            ("without EMA", 3, "no EMA, stage 3", "no EMA stage 3")]


def ema_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table VI: the EMA teacher against the student as its own teacher."""
    return _rows_table(runs, EMA_ROWS, "VI")


# ------------------------------------------------------------------------------------------
# the paper's tables at a glance (glance.layout): its rows, its label columns, "ours | paper"
# ------------------------------------------------------------------------------------------

# the paper's label columns: (its label in paper_results.csv, the column's header)
# (read from the records of the paper's datasets, selftrain_lib/data/cityscapes.py and voc.py)
PAPER_COLUMNS = View(lambda: {k: p.columns for k, p in records.paper_datasets().items()})
PAPER_SHORT = View(lambda: {k: p.short for k, p in records.paper_datasets().items()})
PRETRAINING_NAME = {"imagenet": "ImageNet", "imagenet+mscoco": "ImageNet+COCO"}
SUPERVISED_PAPER = "DeepLabV2 (supervised)"
# our row of label_table -> how it is named beside the paper's row it reproduces
OURS_SHORT = {SUPERVISED_ROW: "Stage 1", "full supervision (Stage 1 on the pool)": "Stage 1",
              "Cutout (mean teacher)": "mean teacher + Cutout", "CutMix (mean teacher)": "mean teacher + CutMix",
              "Ours (three-stage)": "Stages 1–3"}
CELL_NOTE = "Each cell: ours | the paper's."
# Table II has no supervised row at 100 labels; Table V's "S1 only" is the same setting
TABLE_II_BASE_NOTE = ("† Table II has no supervised row at 100 labels: the paper's gains in that column are over "
                      "Table V's 'S1 only' ({value:.2f}), the same setting (Cityscapes 100, ImageNet, DeepLabV2).")


def _label_tables(dataset: str) -> tuple[str, ...]:
    """The paper's label tables of ``dataset`` (``("II",)``; ``("III", "IV")``), from its record."""
    paper = records.paper_of(dataset)
    return paper.tables if paper is not None else ("III", "IV")


def _header(paper_dataset: str, key: str) -> str:
    return dict(PAPER_COLUMNS.get(paper_dataset, ())).get(key, key)


def _paper_row(method: str, pretraining: str, main: str, several: bool) -> str:
    """A row of a paper table: the method, with its pre-training where the table has several."""
    return method + (f" ({PRETRAINING_NAME.get(pretraining, pretraining)})" if several and pretraining != main else "")


def label_glance(long: pd.DataFrame, table: str, with_ours: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Table II, III or IV at a glance: every row and label column of the paper's table (each
    published number present), ours (:func:`label_table`'s rows, when ``with_ours``) in the row it
    reproduces, rows of ours only (Stage 2) before "Ours"; a gain column over Supervised beside
    each. Returns the table and its footnotes."""
    pub = published(table)
    paper_dataset, main = pub["dataset"].iloc[0], pub["pretraining"].iloc[0]
    name = _row_namer(pub)
    rows, paper, notes = _paper_cells(pub, table)
    ours, ours_names, extra = _ours_cells(long if with_ours else long.iloc[:0], table)
    at = rows.index(name("Ours (three-stage)", main)) if name("Ours (three-stage)", main) in rows else len(rows)
    rows = rows[:at] + extra + rows[at:]
    keys = [k for k, _ in PAPER_COLUMNS[paper_dataset]]
    keys += sorted({k for _, k in [*paper, *ours]} - set(keys))   # a count the paper's columns lack: at the end
    same = {name(m, p) for m, p in zip(pub["method"], pub["pretraining"]) if p == main}
    df = layout(rows, [(k, _header(paper_dataset, k)) for k in keys], ours, paper, base=name(SUPERVISED_PAPER, main),
                row_header="method", paper_gain_rows=same | set(extra) | set(ours_names))  # none across pre-trainings
    label = {r: r + (f" · ours: {', '.join(dict.fromkeys(ours_names[r]))}" if r in ours_names else "") for r in rows}
    return df.assign(method=df["method"].map(label)), notes


def _row_namer(pub: pd.DataFrame):
    """The row name of (method, pre-training) in a paper table ``pub``: the method, with its
    pre-training where the table has several and it is not the table's first."""
    main, several = pub["pretraining"].iloc[0], pub["pretraining"].nunique() > 1
    return lambda method, pretraining: _paper_row(method, pretraining, main, several)


def _paper_cells(pub: pd.DataFrame, table: str) -> tuple[list[str], dict, list[str]]:
    """The rows of a paper table (in its order), its numbers by (row, label) and its footnotes:
    Table II's Supervised at 100 from Table V, and rows of a second pre-training without gains."""
    name, main = _row_namer(pub), pub["pretraining"].iloc[0]
    rows = list(dict.fromkeys(name(m, p) for m, p in zip(pub["method"], pub["pretraining"])))
    paper = {(name(m, p), str(n)): Paper(float(v))
             for m, p, n, v in zip(pub["method"], pub["pretraining"], pub["labels"], pub["miou"])}
    notes, base = [], name(SUPERVISED_PAPER, main)
    if table == "II" and (base, "100") not in paper:
        v = published_miou("V", "cityscapes", "S1 only", "100", "imagenet")
        paper[(base, "100")] = Paper(v, "†")
        notes.append(TABLE_II_BASE_NOTE.format(value=v))
    others = [PRETRAINING_NAME.get(p, p) for p in dict.fromkeys(pub["pretraining"]) if p != main]
    if others:
        notes.append(f"Rows of {' and '.join(others)} pre-training (named so) have no paper gain: the Supervised "
                     f"row is {PRETRAINING_NAME.get(main, main)}'s.")
    return rows, paper, notes


def _ours_cells(long: pd.DataFrame, table: str) -> tuple[dict, dict, list[str]]:
    """Ours by (the paper's row, label), the short names of ours in each paper row, and the rows of
    ours only (Stage 2; a baseline the table lacks). Full supervision is Supervised's "full" cell."""
    pub = published(table)
    name, main = _row_namer(pub), pub["pretraining"].iloc[0]
    ours, names, extra = {}, {}, []
    for _, r in long.iterrows():
        method = LABEL_ROWS.get(r["method"], (None, None))[0 if table in ("II", "III") else 1]
        row = name(method, main) if method else f"{r['method']} (ours only)"
        if method:
            names.setdefault(row, []).append(OURS_SHORT.get(r["method"], r["method"]))
        elif row not in extra:
            extra.append(row)
        ours[(row, str(r["labels (paper)"]))] = Ours(float(r["mean (%)"]), float(r["std (%)"]), int(r["seeds"]))
    return ours, names, extra


def labels_used_text(long: pd.DataFrame, paper_dataset: str) -> str:
    """What each column's ours used: ``"1/30 (100): 20 labelled images (nominal 100 of the pool); ..."``.
    Both counts come from the table (``labels (ours)``, the nominal; ``labels used at this scale``)."""
    if not len(long):
        return ""
    parts = []
    for paper_n, nominal, used in dict.fromkeys(zip(long["labels (paper)"].astype(str), long["labels (ours)"],
                                                    long["labels used at this scale"])):
        head = _header(paper_dataset, paper_n)
        if str(nominal) == "full":
            parts.append(f"{head}: the whole pool" + (f" ({used} images)" if str(used) != "full" else ""))
        else:
            parts.append(f"{head}: {used} labelled images" + (f" (nominal {nominal})" if str(used) != str(nominal)
                                                              else ""))
    return "Labels ours used: " + "; ".join(parts) + "."


def _pretraining_of(runs: pd.DataFrame, dataset: str):
    if "pretraining" not in runs:
        return None
    pre = runs.loc[runs["dataset"] == dataset, "pretraining"].dropna()
    return pre.iloc[0] if len(pre) else None


def _glance_note(table: str, base: str | None) -> str:
    gain = (f" 'gain': each row minus the {base} row in the same column, ours | the paper's (Table {table}): on "
            "another dataset or at another scale than the paper's every number shifts, so compare gains, not "
            "absolute numbers." if base else "")
    return f"{CELL_NOTE}{gain}"


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
    """Table II (a street dataset) or Tables III and IV (an objects dataset) at a glance
    (:func:`label_report_of` of :func:`label_table`), and the teacher's numbers as a last section
    when the runs kept them: keyword arguments of :func:`write_table`. ``scale`` names the preset
    that made the runs (in every caption)."""
    long = label_table(runs, dataset)
    report = label_report_of(long, dataset, scale, seeds, title, _evaluated(runs), reported_of(runs),
                             _pretraining_of(runs, dataset))
    teacher = teacher_runs(runs[runs["dataset"] == dataset])
    if teacher is not None:
        # Stage 1 has no teacher: its student stays the base of the gains
        t_long = pd.concat([label_table(teacher, dataset), long[long["method"].isin(STUDENT_ONLY)]], ignore_index=True)
        t_df, t_notes = label_glance(t_long, report["tables"][0])
        used = labels_used_text(long, PAPER_DATASET.get(dataset, dataset))
        report["sections"].append(("The EMA teacher", _ours_side(t_df),
                                   caption(f"{title}: the EMA teacher of each stage that has one", [dataset], scale,
                                           seeds, measure="mIoU (%) of the teacher on the validation set",  # last step
                                           published=f"{CELL_NOTE} Supervised (Stage 1, which has no teacher): its "
                                                     f"student, the base of the gains. {used} {' '.join(t_notes)}")))
    return {k: v for k, v in report.items() if k != "tables"}


def label_report_of(long: pd.DataFrame, dataset: str, scale: str, seeds: Sequence[int], title: str,
                    evaluated: str = "the evaluated model: student", which: str = "last",
                    pretraining: str | None = None) -> dict[str, Any]:
    """The paper's label tables at a glance from :func:`label_table`'s rows ``long`` (e.g. read back
    from a committed CSV): Table II, or Table III with Table IV as a section; keyword arguments of
    :func:`write_table` plus ``tables`` (the paper's tables shown). ``evaluated``: which model the
    numbers are of; ``which``: which evaluation (:func:`collect`); ``pretraining``: the runs' (real
    VOC runs meet Table III or IV by it, :func:`comparable`)."""
    paper_dataset = PAPER_DATASET.get(dataset, dataset)
    tables = list(_label_tables(dataset))
    used = labels_used_text(long, paper_dataset)
    made = []
    for table in tables:
        df, notes = label_glance(long, table, with_ours=comparable(dataset, pretraining, table))
        pub = published(table)["pretraining"].iloc[0]
        name = f"Table {table} ({PRETRAINING_NAME.get(pub, pub)} pre-training)" if len(tables) > 1 else title
        cap = caption(name if len(tables) == 1 else f"{title}: {name}", [dataset], scale, seeds,
                      measure=f"{VALIDATION} ({evaluated})",
                      published=" ".join([_glance_note(table, "Supervised"), used, *notes]), which=which)
        made.append((name, df, cap))
    return {"df": made[0][1], "caption_text": made[0][2], "data": long, "sections": list(made[1:]), "tables": tables}


STUDENT_ONLY = (SUPERVISED_ROW, "full supervision (Stage 1 on the pool)")   # the rows with no teacher


def _ours_side(df: pd.DataFrame) -> pd.DataFrame:
    """The rows and columns of a glance table that hold a number of ours (the teacher's table)."""
    ours = df.drop(columns=df.columns[0]).apply(lambda col: col.map(lambda c: not str(c).startswith(DASH)))
    keep = [df.columns[0], *(c for c in ours.columns if ours[c].any())]
    return df.loc[ours.any(axis=1), keep].reset_index(drop=True)


def rows_glance(long: pd.DataFrame, which: str) -> pd.DataFrame:
    """Table V or VI at a glance: the paper's rows; per paper dataset (Cityscapes 100, VOC 1/50) a
    column ``"<ours> | <the paper's>"`` (ours: the dataset of the runs standing in for it, else the
    stand-in's name), with Table V's gains over "S1 only" beside."""
    rows_def, base = {"V": (ABLATION_ROWS, "S1 only"), "VI": (EMA_ROWS, None)}[which]
    pub = published(which)
    columns, ours, paper = [], {}, {}
    for paper_dataset, n in dict.fromkeys(zip(pub["dataset"], pub["labels"].astype(str))):
        mine = [d for d in dict.fromkeys(long["dataset"]) if PAPER_DATASET.get(d, d) == paper_dataset] \
            if len(long) else []
        who = mine[0] if mine else next((s for s, r in STAND_INS.items() if PAPER_DATASET[s] == paper_dataset),
                                        paper_dataset)
        columns.append((paper_dataset, f"{who}{SEP}{PAPER_SHORT.get(paper_dataset, paper_dataset)} {n}"))
        for _, _, label, method in rows_def:
            paper[(label, paper_dataset)] = Paper(published_miou(which, paper_dataset, method, n))
    for _, r in long.iterrows():
        ours[(r["row"], PAPER_DATASET.get(r["dataset"], r["dataset"]))] = Ours(
            float(r["mean (%)"]), float(r["std (%)"]), int(r["seeds"]))
    rows = list(dict.fromkeys(label for _, _, label, _ in rows_def))
    return layout(rows, columns, ours, paper, base=base, gain_header="gain")


def rows_report(runs: pd.DataFrame, which: str, scale: str, seeds: Sequence[int], title: str) -> dict[str, Any]:
    """Table V (``which="V"``, gains over "S1 only") or VI (``"VI"``) at a glance
    (:func:`rows_report_of`); keyword arguments of :func:`write_table`."""
    long = {"V": ablation_table, "VI": ema_table}[which](runs)
    return rows_report_of(long, which, list(dict.fromkeys(runs["dataset"])), scale, seeds, title, _evaluated(runs),
                          reported_of(runs))


def rows_report_of(long: pd.DataFrame, which: str, datasets: Sequence[str], scale: str, seeds: Sequence[int],
                   title: str, evaluated: str = "the evaluated model: student",
                   reported: str = "last") -> dict[str, Any]:
    """Table V or VI at a glance (:func:`rows_glance`) from :func:`ablation_table` or
    :func:`ema_table`'s rows ``long`` (e.g. read back from a committed CSV); keyword arguments of
    :func:`write_table`. The caption says what ours is: the stand-in, the labels it used, the scale
    (``scale``: the preset's name) and the seeds."""
    base = {"V": "'S1 only'", "VI": None}[which]
    used = "; ".join(
        f"{d}: {u} labelled images" + (f" (nominal {n};" if str(u) != str(n) else " (") + f" the paper's {p})"
        for d, n, u, p in dict.fromkeys(zip(long["dataset"], long["labels (ours)"],
                                            long["labels used at this scale"], long["labels (paper)"]))) \
        if len(long) else ""
    cap = caption(title, datasets, scale, seeds, measure=f"{VALIDATION} ({evaluated})",
                  published=_glance_note(which, base) + " Columns: ours (the stand-in) | the paper's dataset and "
                  "label count." + (f" Labels ours used: {used}." if used else ""), which=reported)
    return {"df": rows_glance(long, which), "caption_text": cap, "data": long}


# Fig. 3 of the paper, read off the figure (docs/method.md: Cityscapes 100, best at λ1 = 1/2 with Table II's
# 54.85, about 2 points lower at 1/4 and 1.5 lower at 1): approximate, for the shape of the curve only
PAPER_FIG3 = {"label": "paper, Cityscapes 100 (Fig. 3, approx.)", "dataset": "cityscapes",
              "lambda1": (0.25, 0.5, 1.0), "miou": (52.85, 54.85, 53.35)}


def _lambda_name(v: float) -> str:
    from fractions import Fraction

    return str(Fraction(float(v)).limit_denominator(64))


def lambda_glance(table: pd.DataFrame) -> pd.DataFrame:
    """Figure 3's numbers at a glance: one row per λ1, per dataset ``"ours | the paper's"`` (the
    paper's read off its Fig. 3, Cityscapes only) and beside it the change from λ1 = 1/2."""
    lambdas = sorted(set(map(float, table["lambda1"])) | set(PAPER_FIG3["lambda1"]))
    rows = [_lambda_name(v) for v in lambdas]
    columns, ours, paper = [], {}, {}
    for d in dict.fromkeys(table["dataset"]):
        pd_name = PAPER_DATASET.get(d, d)
        columns.append((d, f"{d}{SEP}{PAPER_SHORT.get(pd_name, pd_name)} {ABLATION_PAPER_LABELS.get(pd_name, '')}"
                        .strip()))
        for _, r in table[table["dataset"] == d].iterrows():
            ours[(_lambda_name(r["lambda1"]), d)] = Ours(float(r["miou"]), float(r["miou_std"]), int(r["seeds"]))
        if pd_name == PAPER_FIG3["dataset"]:
            for lam, v in zip(PAPER_FIG3["lambda1"], PAPER_FIG3["miou"]):
                paper[(_lambda_name(lam), d)] = Paper(v)
    return layout(rows, columns, ours, paper, base="1/2", gain_header="vs λ1 = 1/2", row_header="λ1 (= λ2)")


ABLATION_PAPER_LABELS = View(lambda: {k: p.ablation for k, p in records.paper_datasets().items()})


def lambda_report(table: pd.DataFrame, scale: str, seeds: Sequence[int], title: str) -> dict[str, Any]:
    """Figure 3's numbers (:func:`lambda_table`) as a table at a glance (:func:`lambda_glance`);
    keyword arguments of :func:`write_table` (the CSV keeps :func:`lambda_table`'s columns)."""
    datasets = list(dict.fromkeys(table["dataset"]))
    if {"labels_used", "paper_labels"} <= set(table.columns):
        labels = setting_text(zip(table["dataset"], table["labels_used"], table["paper_labels"]), scale, seeds)
    else:   # a table from before the counts were kept: the nominal count
        labels = "; ".join(f"{d}: {ABLATION_LABELS.get(d, '?')} labels (nominal; the paper's "
                           f"{ABLATION_PAPER_LABELS.get(PAPER_DATASET.get(d, d), '?')})" for d in datasets)
    note = (f"{CELL_NOTE} The paper's numbers are read off its Fig. 3 (approximate, Cityscapes 100 only). "
            "'vs λ1 = 1/2': each row minus the λ1 = 1/2 row (the paper's choice), ours | the paper's: compare the "
            f"shapes, not the absolute numbers. Labels: {labels}.")
    return {"df": lambda_glance(table), "data": table,
            "caption_text": caption(title, datasets, scale, seeds, published=note)}


def table_v_note(drop: str) -> str:
    """The paper's Table V numbers for dropping ``drop`` (CR, T2, SA, N2) against the full method, as
    one line for a figure (``""`` for other drops)."""
    row = {v: m for v, st, _, m in ABLATION_ROWS if st == 3}.get(f"without {drop}")
    if row is None:
        return ""
    parts = []
    for paper_dataset, name, labels in ((k, p.short, p.ablation) for k, p in records.paper_datasets().items()):
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
    counts = [c for c in ("labels_used", "paper_labels") if c in runs and runs[c].notna().any()]  # for the caption
    s = mean_std(runs[runs["stage"] == stage], ["dataset", "labels", *counts, "lambda1"])
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
            "lambda1": cfg.get("lambda1"), "lambda2": cfg.get("lambda2"), **saved_switches(cfg),
            "parent": metrics.get("pseudo_masks_from"), "run_dir": str(m.parent)}
