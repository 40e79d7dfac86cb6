"""Interactive browsing of the run cache (``notebooks/explore.ipynb``): pick a dataset, a run, a
stage of its chain and a pool image; see Stage 1/2/3 beside the ground truth, the chosen stage's
prediction over the image (opacity slider) and its error map, images ordered by their IoU (worst
first), labelled pool images marked, and a second run (e.g. the mt-cutmix baseline) beside it.

A stage's prediction on a pool image is its pseudo-mask (``pseudo_masks/<id>.png``: the argmax of
the network its validation mIoU scores), so browsing trains nothing and runs no network.

The logic is in small functions of numpy arrays and run folders (tested without a browser); the
widgets of :func:`explorer` only wire them. The explorer opens on a choice (the given dataset and
run, else the newest run of the dataset, else the first dataset in the cache; the run's last stage;
image 0) and draws it at once: ipywidgets 8 does not select a value when an empty Dropdown's options
are filled, so every value is set explicitly."""
from __future__ import annotations

import io
import math
from pathlib import Path

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.patches import Patch

from . import figures
from .data import DATASETS, load_data
from .evaluate import REPORTED, class_map
from .label_counts import count_stands_for, label_text, paper_counts
from .methods import SWITCHES
from .paths import runs_dir
from .results import list_runs
from .runs import LABELLED_IDS, read_mask_pngs, split_file_ids
from .train.run_folder import StageResult

IGNORE = 255                                     # masks' void value (data.datasets.IGNORE_INDEX)
ERROR_COLOURS = np.array([[235, 235, 235],       # correct: light grey
                          [215, 25, 28],         # wrong: red
                          [150, 150, 150]],      # ignore (void in the ground truth): neutral grey
                         np.uint8)
ORDERS = ("image index", "worst first")
NO_COMPARE = "(none)"


# ------------------------------------------------------------------------------------------
# the cache: runs, chains, labels
# ------------------------------------------------------------------------------------------

def chain(runs: pd.DataFrame, run: str) -> list[str]:
    """The run hashes from Stage 1 to ``run``, following ``pseudo_masks_from``."""
    by_hash = runs.set_index("run")
    out = [run]
    while isinstance(by_hash.loc[out[0], "parent"], str) and by_hash.loc[out[0], "parent"] in by_hash.index:
        out.insert(0, by_hash.loc[out[0], "parent"])
    return out


def labels_text(dataset: str, labels, pool_size=None) -> str:
    """A run's label count as the notebooks name it: the paper's count with the count used beside
    it (``"100 labels (20 used)"`` for 20 of a 600-image pool), ``"full supervision"`` when the run
    labels its whole pool, ``"8 labels used"`` for a count that stands for no paper count."""
    info = DATASETS.get(dataset)
    default = info.default_pool_size if info is not None and info.format == "synthetic" else 0
    pool = pool_size if isinstance(pool_size, (int, float)) and pool_size == pool_size and pool_size else default
    if labels == "full" or (pool and labels == pool):
        return "full supervision"
    if not isinstance(labels, (int, np.integer)):
        return f"{labels} labels"
    stands = count_stands_for(dataset, int(labels), int(pool), default) if pool else None
    if stands is None and not default and int(labels) in paper_counts(dataset):   # read from files: not scaled
        stands = int(labels)
    return label_text(dataset, stands, int(labels))


def _row_labels(row) -> str:
    return labels_text(row.dataset, row.labels, getattr(row, "pool_size", None))


def run_label(row) -> str:
    """``"synth-objects · 60 labels (1/50, 12 used) · seed 0 · three-stage λ=0.25 · stage 3"`` for a
    row of :func:`selftrain_lib.results.list_runs` (ablations add ``no CR``; the scale ends it); a run
    on the whole pool: ``"synth-street · full supervision · seed 0 · stage 1"``."""
    method = row.method or "three-stage"
    if method == "three-stage" and row.stage > 1 and isinstance(row.lambda1, float):
        method += f" λ={row.lambda1:g}"
    off = [f"no {s.label}" for s in SWITCHES if getattr(row, s.key, None) is False]  # the ablations
    labels = _row_labels(row)
    if labels == "full supervision" and method == "three-stage" and row.stage == 1 and not off:
        method = ""   # Stage 1 on the whole pool is full supervision: "three-stage" would mislead
    parts = [row.dataset, labels, f"seed {row.seed}", " ".join([method, *off]).strip(), f"stage {row.stage}"]
    parts = [p for p in parts if p]
    return " · ".join(parts) + (f" ({row.scale})" if isinstance(row.scale, str) else "")


def leaves(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The runs of ``dataset`` that end a chain (no later stage in the cache), ordered by label
    count, seed, method and stage."""
    sub = runs[runs["dataset"] == dataset]
    sub = sub[~sub["run"].isin(sub["parent"].dropna())]
    key = sub["labels"].map(lambda v: 10 ** 9 if v == "full" else int(v))
    return sub.assign(_k=key).sort_values(["_k", "seed", "method", "stage", "run"]).drop(columns="_k")


def newest_leaf(runs: pd.DataFrame, dataset: str) -> str:
    """The chain-ending run of ``dataset`` whose ``metrics.json`` was written last: what the
    explorer opens on when the notebook's own run is not in the cache."""
    sub = leaves(runs, dataset)
    written = sub["run_dir"].map(lambda d: (Path(d) / "metrics.json").stat().st_mtime)
    return sub.loc[written.idxmax(), "run"]


def comparable(runs: pd.DataFrame, run: str) -> list[str]:
    """Chain-ending runs that can stand beside ``run`` (same dataset and scale, hence the same
    pool images), ``run`` excluded: those with its label count and seed first (e.g. the mt-cutmix
    baseline of a three-stage run), then the rest in :func:`leaves` order."""
    row = runs.set_index("run").loc[run]
    sub = leaves(runs, row["dataset"])
    scale = "" if pd.isna(row["scale"]) else row["scale"]        # runs older than the scale key: NaN
    sub = sub[(sub["run"] != run) & (sub["scale"].fillna("") == scale)]
    same = (sub["labels"] == row["labels"]) & (sub["seed"] == row["seed"])
    return list(sub[same]["run"]) + list(sub[~same]["run"])


def labelled_ids(run_dir: str | Path) -> set[str] | None:
    """The pool image ids of the run's labelled set L (its ``labelled_ids.txt``); None when the
    run predates that file (labelled or not is then unknown)."""
    path = Path(run_dir) / LABELLED_IDS
    return set(split_file_ids(path)) if path.is_file() else None


def relative_path(path: str | Path, out: str | Path) -> str:
    """``path`` as the status line shows it: relative to the run cache ``out``, under the cache
    folder's own name (``runs/3f2a…``), never absolute; a path outside the cache: its name only."""
    path, out = Path(path).resolve(), Path(out).resolve()
    try:
        return (Path(out.name) / path.relative_to(out)).as_posix()
    except ValueError:
        return path.name


# ------------------------------------------------------------------------------------------
# one image: IoU, error map, overlay
# ------------------------------------------------------------------------------------------

def image_iou(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int = IGNORE) -> float:
    """Mean IoU of one image over the classes present in the prediction or the ground truth
    (pixels void in the ground truth left out): classes absent from both would count as 1 or 0/0.
    NaN when every pixel is void."""
    keep = truth != ignore_index
    p, t = np.asarray(pred)[keep].astype(np.int64), np.asarray(truth)[keep].astype(np.int64)
    if t.size == 0:
        return float("nan")
    p = np.where(p < num_classes, p, num_classes)          # a stray value counts as one wrong class
    n = num_classes + 1
    cm = np.bincount(t * n + p, minlength=n * n).reshape(n, n)[:num_classes]
    inter = np.diag(cm[:, :num_classes])
    union = cm.sum(1) + cm[:, :num_classes].sum(0) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def error_map(pred: np.ndarray, truth: np.ndarray, ignore_index: int = IGNORE) -> np.ndarray:
    """uint8 (H, W): 0 where the prediction equals the ground truth, 1 where it is wrong, 2 where
    the ground truth is void (no verdict: drawn neutral). Colour it with ``ERROR_COLOURS[map]``."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    out = (pred != truth).astype(np.uint8)
    out[truth == ignore_index] = 2
    return out


def colour(mask: np.ndarray, palette) -> np.ndarray:
    """uint8 (H, W, 3): each class in its palette colour, void and unknown values white."""
    lut = np.full((256, 3), 255, np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    return lut[np.asarray(mask, np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, palette, opacity: float, ignore_index: int = IGNORE) -> np.ndarray:
    """uint8 (H, W, 3): ``mask``'s class colours over ``image`` (H, W, 3) at ``opacity`` (0: the
    image, 1: the mask); void pixels keep the image."""
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity: expected a value in [0, 1], got {opacity!r}")
    image = np.asarray(image, np.float32)
    blend = (1 - opacity) * image + opacity * colour(mask, palette).astype(np.float32)
    blend[np.asarray(mask) == ignore_index] = image[np.asarray(mask) == ignore_index]
    return np.rint(blend).clip(0, 255).astype(np.uint8)


def hwc(image) -> np.ndarray:
    """An image tensor or array (3, H, W) as a numpy (H, W, 3) array."""
    image = np.asarray(image)
    return image.transpose(1, 2, 0) if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3 else image


# ------------------------------------------------------------------------------------------
# the pool: per-image IoU and its order
# ------------------------------------------------------------------------------------------

def stage_masks(run_dir: str | Path, ids: list[str]) -> list[np.ndarray]:
    """The stage's predictions (its pseudo-masks) for pool images ``ids``, one (H, W) array each."""
    return [read_mask_pngs(Path(run_dir) / "pseudo_masks", [i]).numpy()[0] for i in ids]


def pool_ious(run_dir: str | Path, data) -> np.ndarray:
    """Per-image IoU (:func:`image_iou`) of the stage in ``run_dir`` on every pool image of ``data``."""
    info = data.info
    preds = stage_masks(run_dir, data.train_ids)
    return np.array([image_iou(p, data.train.mask(i).numpy(), info.num_classes, info.ignore_index)
                     for i, p in enumerate(preds)])


def image_order(ious, worst_first: bool) -> list[int]:
    """Pool indices in the order the image list shows them: by index, or by IoU from the worst
    (ties by index; images with no IoU, all void, last)."""
    ious = list(ious)
    if not worst_first:
        return list(range(len(ious)))
    return sorted(range(len(ious)), key=lambda i: (math.isnan(ious[i]), ious[i] if not math.isnan(ious[i]) else 0, i))


def image_choice(index: int, image_id: str, iou: float, labelled: set[str] | None) -> str:
    """One entry of the image list: ``"#12 train_00012 · IoU 43.2% · labelled"`` (``unlabelled``;
    nothing when the run does not say)."""
    parts = [f"#{index} {image_id}", "IoU –" if math.isnan(iou) else f"IoU {100 * iou:.1f}%"]
    if labelled is not None:
        parts.append("labelled" if image_id in labelled else "unlabelled")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------
# the drawing
# ------------------------------------------------------------------------------------------

def compare_figure(image, truth, rows: list[dict], opacity: float, class_names, palette,
                   ignore_index: int = IGNORE, title: str = ""):
    """A Figure with one row per run: the selected stage's prediction over the image (at
    ``opacity``), each stage's prediction (Stage 1, 2, 3, ...), the selected stage's error map
    and the ground truth. Each row is ``{"title", "masks": [stage 1 mask, ...], "selected": k-1}``
    (0-based index of the stage drawn over the image and in the error map)."""
    image, truth = hwc(image), np.asarray(truth)
    nstages = max(len(r["masks"]) for r in rows)
    ncols = nstages + 3
    h, w = truth.shape
    cell = figures.PAGE_WIDTH / ncols
    fig, axes = figures.figure(ncols=ncols, nrows=len(rows), width=figures.PAGE_WIDTH,
                               height=(0.9 * cell * h / w + 0.25) * len(rows) + 0.5, squeeze=False)
    for ax_row, row in zip(axes, rows):
        k = row["selected"]
        pred = row["masks"][k]
        iou = image_iou(pred, truth, len(class_names), ignore_index)
        panels = [(f"Stage {k + 1} over image", overlay(image, pred, palette, opacity, ignore_index))]
        panels += [(f"Stage {i + 1}", colour(m, palette)) for i, m in enumerate(row["masks"])]
        panels += [None] * (nstages - len(row["masks"]))   # a shorter chain (a baseline): blank cells
        panels += [(f"errors, Stage {k + 1} (IoU {100 * iou:.0f}%)", ERROR_COLOURS[error_map(pred, truth, ignore_index)]),
                   ("ground truth", colour(truth, palette))]
        for ax, panel in zip(ax_row, panels):
            ax.set_axis_off()
            if panel is not None:
                ax.imshow(panel[1], interpolation="nearest")
                ax.set_title(panel[0], fontsize=6)
        ax_row[0].text(-0.06, 0.5, row["title"], transform=ax_row[0].transAxes, rotation=90, ha="right",
                       va="center", fontsize=6)
    legend = [Patch(facecolor=np.asarray(c) / 255, edgecolor="none", label=n) for n, c in zip(class_names, palette)]
    legend += [Patch(facecolor=ERROR_COLOURS[i] / 255, edgecolor="0.5", label=n)
               for i, n in enumerate(("correct", "wrong", "void"))]
    fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 8), bbox_to_anchor=(0.5, 0.0),
               handlelength=1.0, columnspacing=0.8, fontsize=6)
    fig.subplots_adjust(wspace=0.04, hspace=0.25, bottom=0.5 / fig.get_size_inches()[1] + 0.02)
    return figures.title_above(fig, title)   # above the column headings, never over them


def panels(run_dir: str | Path, index: int, data, title: str = ""):
    """Image / prediction of f / pseudo-mask / ground truth for pool image ``index`` (a Figure)."""
    r = StageResult.load(Path(run_dir))
    image = data.train.image(index)[None]
    with torch.no_grad():
        pred = class_map(r.load_model()(image.float() / 255)).to(torch.uint8).numpy()
    pseudo = r.pseudo_masks.load([data.train_ids[index]]).numpy()
    truth = data.train.mask(index)[None].numpy()
    labels = labels_text(r.metrics["dataset"], r.metrics["labels"], r.config.pool_size)
    return figures.prediction_grid(
        image.numpy(), {f"Stage {r.stage} prediction": pred, "pseudo-mask": pseudo, "ground truth": truth},
        r.metrics["dataset"], data.info.class_names, data.info.palette,
        title=title or f"{r.metrics['dataset']}, {labels}, seed {r.metrics['seed']}, stage {r.stage}: pool image {index}")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def row_title(row, labelled: bool | None) -> str:
    """The left label of a run's row: method, label count and seed, and whether the image is in
    the run's labelled set."""
    method = row.method or "three-stage"
    mark = {True: "labelled", False: "unlabelled", None: ""}[labelled]
    return "\n".join(filter(None, [method, f"{_row_labels(row)} · seed {row.seed}", mark]))


def figure_rows(out: Path, runs: pd.DataFrame, run: str, stage_hash: str, compare: str | None,
                image_id: str) -> tuple[list[dict], str]:
    """The rows of :func:`compare_figure` for pool image ``image_id``: the chain ending in ``run``
    with its stage ``stage_hash`` selected, then the chain ending in ``compare`` (the same stage
    number selected, or its last), each titled with its labelled mark. Also a note ("" if none)
    when the compared run has no prediction for the image (another pool: other overrides, one scale)."""
    by_run = runs.set_index("run")
    first = chain(runs, run)
    k = first.index(stage_hash)
    chosen = [(first, k)] + ([(chain(runs, compare), None)] if compare else [])
    rows, note = [], ""
    for hashes, sel in chosen:
        try:
            masks = [stage_masks(out / h, [image_id])[0] for h in hashes]
        except FileNotFoundError:
            note = f"the compared run has no prediction for {image_id}: another pool"
            continue
        marks = labelled_ids(out / hashes[-1])
        rows.append({"title": row_title(by_run.loc[hashes[-1]], None if marks is None else image_id in marks),
                     "masks": masks, "selected": min(k, len(hashes) - 1) if sel is None else sel})
    return rows, note


# ------------------------------------------------------------------------------------------
# the widgets
# ------------------------------------------------------------------------------------------

def opening_choice(runs: pd.DataFrame, dataset: str | None, run: str | None) -> tuple[str, str, str]:
    """(dataset, run, note) the explorer opens on: ``run`` where it ends a chain of the cache, else
    the newest run of ``dataset``, else of the first dataset in the cache; ``note`` says what was
    asked for and is not there ("" when nothing is missing)."""
    datasets = sorted(runs["dataset"].unique())
    note = ""
    if dataset is not None and dataset not in datasets:
        note = f"no finished run of {dataset} in the cache (it holds {', '.join(datasets)}); "
        dataset = None
    if run is not None and run in set(runs["run"]):
        found = runs.set_index("run").loc[run, "dataset"]
        if dataset in (None, found) and run in set(leaves(runs, found)["run"]):
            return found, run, note
    if run is not None and not note:
        note = f"run {run[:12]} does not end a chain of {dataset or 'the cache'}; "
    dataset = dataset or datasets[0]
    return dataset, newest_leaf(runs, dataset), note + (f"showing the newest run of {dataset}" if note else "")


def explorer(out: str | Path | None = None, dataset: str | None = None, run: str | None = None,
             which: str = "last"):
    """An ipywidgets box over the run cache ``out`` (None: :func:`selftrain_lib.paths.runs_dir`),
    opened by :func:`opening_choice`. Controls (in ``box.controls``): ``dataset``, ``run``,
    ``compare`` (a second run, ``""``: none), ``stage``, ``order`` (``"image index"`` or
    ``"worst first"``), ``image`` (pool index), ``opacity`` (0..1), ``miou`` (the validation mIoU
    the status shows: ``"last"``, the last step's as the tables, or ``"best"``, the best evaluation
    during training; opens on ``which``), ``status``, ``view`` (PNG).
    ``box.figure()``: the current choice as a matplotlib Figure (None for an empty cache)."""
    if which not in REPORTED:
        raise ValueError(f"which: must be one of {list(REPORTED)}, got {which!r}")

    out = runs_dir(out)
    runs = list_runs(out)
    if runs.empty:
        box = w.VBox([w.HTML(f"No finished runs in the run cache <code>{Path(out).name}/</code>: "
                             "train one (set <code>train = True</code> above, or run a stage notebook).")])
        box.controls, box.figure = {"status": box.children[0]}, (lambda: None)
        return box
    first_ds, first_run, note = opening_choice(runs, dataset, run)
    by_run = runs.set_index("run")
    labels = {r.run: run_label(r) for r in runs.itertuples()}
    ds = w.Dropdown(options=sorted(runs["dataset"].unique()), value=first_ds, description="dataset")
    run_w = w.Dropdown(description="run", layout=w.Layout(width="44em"))
    compare = w.Dropdown(description="compare", layout=w.Layout(width="44em"))
    stage = w.Dropdown(description="stage")
    order = w.ToggleButtons(options=ORDERS, value=ORDERS[0])   # its own description gets clipped: a Label
    image = w.Dropdown(description="image", layout=w.Layout(width="32em"))
    opacity = w.FloatSlider(0.5, min=0, max=1, step=0.05, description="opacity", continuous_update=False)
    miou = w.ToggleButtons(options=list(REPORTED), value=which, tooltips=["the last step's mIoU (as the tables)",
                                                                          "the best evaluation during training"])
    view = w.Image(format="png", layout=w.Layout(width="100%", height="auto", object_fit="contain"))
    status = w.HTML()
    st = {"busy": 0, "drawn": None, "data": {}, "ious": {}, "note": note}

    def data():
        """The pool of the shown run (one dataset's data kept at a time)."""
        key = tuple(str(v) for v in by_run.loc[run_w.value, ["dataset", "scale"]])   # str: NaN != NaN
        if key not in st["data"]:
            st["data"] = {key: load_data(StageResult.load(out / run_w.value).config)}
        return st["data"][key]

    def ious(stage_hash):
        if stage_hash not in st["ious"]:
            st["ious"][stage_hash] = pool_ious(out / stage_hash, data())
        return st["ious"][stage_hash]

    def quietly(fn):
        """Run ``fn`` with drawing held (filling options fires value events), then draw once."""
        st["busy"] += 1          # a count: fills nest (a new run fills its stages, which fill images)
        try:
            fn()
        finally:
            st["busy"] -= 1
        draw()

    def fill_images(first_of_order: bool):
        d, scores = data(), ious(stage.value)
        marks = labelled_ids(out / stage.value)
        indices = image_order(scores, order.value == "worst first")
        keep = indices[0] if first_of_order or image.value is None or image.value >= len(indices) else image.value
        image.options = [(image_choice(i, d.train_ids[i], scores[i], marks), i) for i in indices]
        image.value = keep

    def on_dataset(*_):
        def fill():
            hashes = list(leaves(runs, ds.value)["run"])
            run_w.options = [(labels[h], h) for h in hashes]
            run_w.value = first_run if first_run in hashes else newest_leaf(runs, ds.value)
            on_run()
        quietly(fill)

    def on_run(*_):
        def fill():
            hashes = chain(runs, run_w.value)
            stage.options = [(f"Stage {i + 1}", h) for i, h in enumerate(hashes)]
            stage.value = hashes[-1]
            compare.options = [(NO_COMPARE, "")] + [(labels[h], h) for h in comparable(runs, run_w.value)]
            compare.value = ""
            fill_images(first_of_order=False)
        quietly(fill)

    def on_stage(*_):
        quietly(lambda: fill_images(first_of_order=False))

    def on_order(*_):
        quietly(lambda: fill_images(first_of_order=True))

    def figure():
        d, index = data(), image.value
        info = d.info
        marks = labelled_ids(out / stage.value)
        where = "" if marks is None else (" (labelled)" if d.train_ids[index] in marks else " (unlabelled)")
        rows, missing = figure_rows(out, runs, run_w.value, stage.value, compare.value or None,
                                    d.train_ids[index])
        st["note"] = st["note"] or missing
        return compare_figure(d.train.image(index).numpy(), d.train.mask(index).numpy(), rows, opacity.value,
                              info.class_names, info.palette, info.ignore_index,
                              title=f"{ds.value}: pool image #{index} {d.train_ids[index]}{where}")

    def draw(*_):
        key = (stage.value, compare.value, image.value, opacity.value, miou.value)
        if st["busy"] or stage.value is None or image.value is None or st["drawn"] == key:
            return
        st["drawn"] = key
        view.value = _png(figure())
        status.value = status_text(out, StageResult.load(out / stage.value), ious(stage.value)[image.value],
                                   compare.value and StageResult.load(out / compare.value), st["note"], miou.value)
        st["note"] = ""          # said once, on opening

    ds.observe(on_dataset, "value")
    run_w.observe(on_run, "value")
    stage.observe(on_stage, "value")
    order.observe(on_order, "value")
    for c in (compare, image, opacity, miou):
        c.observe(draw, "value")
    on_dataset()   # setting a value equal to the current one fires no event: fill once by hand
    box = w.VBox([w.HBox([ds, run_w]), w.HBox([stage, compare]), w.HBox([w.Label("order", layout=w.Layout(width="6em")), order, image]), opacity,
                  w.HBox([w.Label("val mIoU", layout=w.Layout(width="6em")), miou]), status, view])
    box.controls = {"dataset": ds, "run": run_w, "compare": compare, "stage": stage, "order": order, "image": image,
                    "opacity": opacity, "miou": miou, "view": view, "status": status}
    box.figure = figure
    return box


def status_text(out: Path, r: StageResult, iou: float, other: StageResult | None, note: str = "",
                which: str = "last") -> str:
    """The status line (HTML): the run folder relative to the cache, its validation (``which``:
    the last step's or the best evaluation's, with its step) and pseudo-mask mIoU, the image's IoU,
    and the compared run's folder and mIoU."""
    text = (f"<code>{relative_path(r.run_dir, out)}</code>: Stage {r.stage} val mIoU {_miou_text(r, which)}, "
            f"pseudo-masks on U {100 * r.pseudo_miou:.1f}%; this image: IoU "
            + ("–" if math.isnan(iou) else f"{100 * iou:.1f}%"))
    if other:
        text += (f" · compared: <code>{relative_path(other.run_dir, out)}</code> val mIoU "
                 f"{_miou_text(other, which)}")
    return text + (f"<br><i>{note}</i>" if note else "")


def _miou_text(r: StageResult, which: str) -> str:
    """``"61.2% (last)"`` or ``"63.0% (best, step 4000)"``; a run recorded before the best was kept: "–"."""
    value = r.miou(which)
    if math.isnan(value):
        return f"– ({which}: not recorded by this run)"
    step = r.best_step if which == "best" else None
    return f"{100 * value:.1f}% ({which}" + (f", step {step})" if step is not None else ")")
