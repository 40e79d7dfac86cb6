"""Interactive browsing of the run cache (``notebooks/explore.ipynb``): pick a dataset, a run, a
stage of its chain and a pool image; see the image, the stage's prediction, its pseudo-mask and
the ground truth side by side, with the class legend.

The explorer opens on a choice (the given dataset and run, else the first of each; the run's last
stage; image 0) and draws it at once: ipywidgets 8 does not select a value when an empty
Dropdown's options are filled, so every value is set explicitly."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import torch

from . import figures
from .data import load_data
from .evaluate import class_map
from .methods import SWITCHES
from .paths import runs_dir
from .results import list_runs
from .stage import StageResult


def chain(runs: pd.DataFrame, run: str) -> list[str]:
    """The run hashes from Stage 1 to ``run``, following ``pseudo_masks_from``."""
    by_hash = runs.set_index("run")
    out = [run]
    while isinstance(by_hash.loc[out[0], "parent"], str) and by_hash.loc[out[0], "parent"] in by_hash.index:
        out.insert(0, by_hash.loc[out[0], "parent"])
    return out


def run_label(row) -> str:
    """``"synth-objects · 60 labels · seed 0 · three-stage λ=0.25 · stage 3"`` for a row of
    :func:`selftrain_lib.results.list_runs` (ablations add ``no CR``; the scale ends it)."""
    method = row.method or "three-stage"
    if method == "three-stage" and row.stage > 1 and isinstance(row.lambda1, float):
        method += f" λ={row.lambda1:g}"
    off = [f"no {s.label}" for s in SWITCHES if getattr(row, s.key, None) is False]  # the ablations
    parts = [row.dataset, f"{row.labels} labels", f"seed {row.seed}", " ".join([method, *off]), f"stage {row.stage}"]
    return " · ".join(parts) + (f" ({row.scale})" if isinstance(row.scale, str) else "")


def leaves(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The runs of ``dataset`` that end a chain (no later stage in the cache), ordered by label
    count, seed, method and stage."""
    sub = runs[runs["dataset"] == dataset]
    sub = sub[~sub["run"].isin(sub["parent"].dropna())]
    key = sub["labels"].map(lambda v: 10 ** 9 if v == "full" else int(v))
    return sub.assign(_k=key).sort_values(["_k", "seed", "method", "stage", "run"]).drop(columns="_k")


def panels(run_dir: str | Path, index: int, data, title: str = ""):
    """Image / prediction of f / pseudo-mask / ground truth for pool image ``index`` (a Figure)."""
    r = StageResult.load(Path(run_dir))
    image = data.train.image(index)[None]
    with torch.no_grad():
        pred = class_map(r.load_model()(image.float() / 255)).to(torch.uint8).numpy()
    pseudo = r.pseudo_masks.load([data.train_ids[index]]).numpy()
    truth = data.train.mask(index)[None].numpy()
    fig = figures.prediction_grid(image.numpy(), {f"Stage {r.stage} prediction": pred, "pseudo-mask": pseudo,
                                                  "ground truth": truth},
                                  r.metrics["dataset"], data.info.class_names, data.info.palette)
    fig.suptitle(title or f"{r.metrics['dataset']}, {r.metrics['labels']} labels, seed {r.metrics['seed']}, "
                 f"stage {r.stage}: pool image {index}", fontsize=8, y=1.04)
    return fig


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def explorer(out: str | Path | None = None, dataset: str | None = None, run: str | None = None):
    """An ipywidgets box (dataset, run, stage, image, and the drawn panels as a PNG ``Image``),
    opened on ``dataset`` / ``run`` (a run hash ending a chain) when given, else the first of
    each. ``out``: the run cache (None: :func:`selftrain_lib.paths.runs_dir`). The widgets are
    kept in ``box.controls`` (``dataset``, ``run``, ``stage``, ``image``, ``view``, ``status``)."""
    import ipywidgets as w

    out = runs_dir(out)
    runs = list_runs(out)
    if runs.empty:
        return w.HTML(f"No finished runs in {out}: run a stage notebook first.")
    datasets = sorted(runs["dataset"].unique())
    if dataset is not None and dataset not in datasets:
        raise ValueError(f"dataset: no finished run of {dataset!r} in {out} (it has {datasets})")
    ds = w.Dropdown(options=datasets, value=dataset or datasets[0], description="dataset")
    run_w = w.Dropdown(description="run", layout=w.Layout(width="44em"))
    stage = w.Dropdown(description="stage")
    image = w.IntSlider(0, 0, 0, description="image", continuous_update=False)
    view = w.Image(format="png", layout=w.Layout(max_width="100%"))
    status = w.HTML()
    cache: dict = {}
    drawn: dict = {}   # the (stage, image) on show: each change draws once
    labels = {r.run: run_label(r) for r in runs.itertuples()}

    def on_dataset(*_):
        options = [(labels[h], h) for h in leaves(runs, ds.value)["run"]]
        chosen = run if run in dict((h, 1) for _, h in options) else options[0][1]
        run_w.options = options
        run_w.value = chosen      # explicit: filling options selects nothing in ipywidgets 8

    def on_run(*_):
        if run_w.value is None:
            return
        hashes = chain(runs, run_w.value)
        stage.options = [(f"Stage {i + 1}", h) for i, h in enumerate(hashes)]
        stage.value = hashes[-1]

    def draw(*_):
        if stage.value is None or drawn.get("key") == (stage.value, image.value):
            return
        drawn["key"] = (stage.value, image.value)
        r = StageResult.load(out / stage.value)
        if r.run_dir not in cache:  # one run's data at a time
            cache.clear()
            cache[r.run_dir] = load_data(r.config)
        data = cache[r.run_dir]
        image.max = len(data.train) - 1
        index = min(image.value, image.max)
        view.value = _png(panels(r.run_dir, index, data, title=f"{labels[stage.value]}: pool image {index}"))
        status.value = (f"<code>{r.run_dir}</code>: val mIoU {100 * r.val_miou:.1f}%, pseudo-masks on U "
                        f"{100 * r.pseudo_miou:.1f}% mIoU")

    ds.observe(on_dataset, "value")
    run_w.observe(on_run, "value")
    stage.observe(draw, "value")
    image.observe(draw, "value")
    on_dataset()
    on_run()   # setting a value equal to the current one fires no event: call both once
    draw()
    box = w.VBox([w.HBox([ds, run_w]), w.HBox([stage, image]), status, view])
    box.controls = {"dataset": ds, "run": run_w, "stage": stage, "image": image, "view": view, "status": status}
    return box
