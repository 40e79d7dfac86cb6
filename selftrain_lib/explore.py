"""Interactive browsing of the run cache (``notebooks/explore.ipynb``): pick a dataset, a run, a
stage of its chain and a pool image; see the image, the stage's prediction, its pseudo-mask and
the ground truth side by side, with the class legend."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import figures
from .results import list_runs


def chain(runs, run: str) -> list[str]:
    """The run hashes from Stage 1 to ``run``, following ``pseudo_masks_from``."""
    by_hash = runs.set_index("run")
    out = [run]
    while isinstance(by_hash.loc[out[0], "parent"], str) and by_hash.loc[out[0], "parent"] in by_hash.index:
        out.insert(0, by_hash.loc[out[0], "parent"])
    return out


def panels(run_dir: str | Path, index: int, data):
    """Image / prediction of f / pseudo-mask / ground truth for pool image ``index``."""
    from .stage import StageResult

    r = StageResult.load(Path(run_dir))
    image = data.train_images[index:index + 1]
    with torch.no_grad():
        pred = r.load_model()(image.float() / 255).argmax(1).to(torch.uint8).numpy()
    pseudo = r.pseudo_masks.load([data.train_ids[index]]).numpy()
    truth = data.train_masks[index:index + 1].numpy()
    return figures.prediction_grid(image.numpy(), {f"Stage {r.stage} prediction": pred, "pseudo-mask": pseudo,
                                                   "ground truth": truth},
                                   data.info.name if hasattr(data.info, "name") else r.metrics["dataset"],
                                   data.info.class_names, data.info.palette)


def explorer(out: str | Path = "runs"):
    """An ipywidgets box: dataset, run (the last stage of a chain), stage, image."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .data import load_data
    from .stage import StageResult

    runs = list_runs(out)
    if runs.empty:
        return w.HTML(f"No finished runs in {out!s}: run a stage notebook first.")
    datasets = sorted(runs["dataset"].unique())
    ds = w.Dropdown(options=datasets, description="dataset")
    run = w.Dropdown(description="run")
    stage = w.Dropdown(description="stage")
    image = w.IntSlider(0, 0, 0, description="image")
    view = w.Output()
    cache: dict = {}

    def runs_of(d):
        sub = runs[runs["dataset"] == d]
        leaves = sub[~sub["run"].isin(sub["parent"].dropna())]
        return [(f"{r.run} stage {r.stage}, {r.labels} labels, seed {r.seed}, {r.scale}", r.run)
                for r in leaves.itertuples()]

    def on_dataset(*_):
        run.options = runs_of(ds.value)

    def on_run(*_):
        if run.value is None:
            return
        hashes = chain(runs, run.value)
        stage.options = [(f"Stage {i + 1}", h) for i, h in enumerate(hashes)]

    def draw(*_):
        if stage.value is None:
            return
        r = StageResult.load(Path(out) / stage.value)
        key = r.run_dir
        if key not in cache:
            cache.clear()
            cache[key] = load_data(r.config)
        data = cache[key]
        image.max = data.train_images.shape[0] - 1
        with view:
            view.clear_output(wait=True)
            fig = panels(r.run_dir, min(image.value, image.max), data)
            display(fig)
            plt.close(fig)

    ds.observe(on_dataset, "value")
    run.observe(on_run, "value")
    stage.observe(draw, "value")
    image.observe(draw, "value")
    on_dataset()
    on_run()
    draw()
    return w.VBox([w.HBox([ds, run]), w.HBox([stage, image]), view])
