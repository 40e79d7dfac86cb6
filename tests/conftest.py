import os
from pathlib import Path

import pytest
import pandas as pd
import torch

# `make test` runs one pytest worker per core (pytest-xdist): one torch thread each, so that two
# workers do not fight over the cores; a plain `pytest` keeps both cores for its one process.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Generated data and pre-trained weights go to a per-session temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory):
    """``shared_folder(name, fill)``: the folder ``shared-<name>``, filled by ``fill(folder)`` once
    for the whole test run. ``make test``'s pytest-xdist workers share it (each worker is a session
    of its own): the first to ask fills it under a lock while the others wait, so that work
    (e.g. a grid of smoke runs) is done once, not once per worker. Fill it only with what tests
    read; a test that changes files copies them first. A fill that raised is redone by the next."""
    from selftrain_lib.runs import file_lock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, above the workers' own popen-gwK/

    def get(name: str, fill) -> Path:
        folder = root / f"shared-{name}"
        with file_lock(root / f"shared-{name}.lock", f"waiting for another pytest worker to fill {folder}"):
            if not (folder / ".filled").exists():
                folder.mkdir(exist_ok=True)
                fill(folder)
                (folder / ".filled").touch()
        return folder

    return get


@pytest.fixture
def interrupt_at_step(monkeypatch):
    """``interrupt_at_step(n)``: the n-th training step from now on raises KeyboardInterrupt (a kill,
    as far as the run is concerned); ``restore()`` of the returned handle puts the real step back."""
    from selftrain_lib import stage as stage_mod

    real = stage_mod.compute_losses

    class Handle:
        def __init__(self, n: int):
            self.calls = 0

            def crashing(*args, **kwargs):
                self.calls += 1
                if self.calls == n:
                    raise KeyboardInterrupt
                return real(*args, **kwargs)

            monkeypatch.setattr(stage_mod, "compute_losses", crashing)

        @staticmethod
        def restore():
            monkeypatch.setattr(stage_mod, "compute_losses", real)

    return Handle


@pytest.fixture
def broken_notebook(tmp_path):
    """``broken_notebook(message)``: ``<tmp>/nb/broken.ipynb``, a parameters cell (``x = 1``) and a
    cell that raises ``ValueError(message)``; returns the folder (a ``notebook_dir``)."""
    import nbformat

    def write(message: str) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("x = 1  # a parameter", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(f"raise ValueError({message!r})")]
        folder = tmp_path / "nb"
        folder.mkdir()
        nbformat.write(nb, folder / "broken.ipynb")
        return folder

    return write


@pytest.fixture(scope="session")
def load_tool():
    """``load_tool("authors_splits")``: the script ``tools/<name>.py`` imported as a module."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def random_view():
    """``(view, masks)``: a TrainingView of 20 random 16x24 images with 3 classes, 5 of them
    labelled (split seed 0), and the masks of all 20 (the pool's hidden ground truth)."""
    from selftrain_lib.data import TrainingView, make_split

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 16, 24), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 3, (20, 16, 24), dtype=torch.uint8, generator=g)
    split = make_split(20, 5, 0)
    return TrainingView(images, split.labelled, masks[split.labelled]), masks


def _ablation_frame(seeds=(0, 1)):
    """Per-class IoU of Table V's runs: the full method (stages 1-3) and without CR (stage 3)."""
    rows = []
    for s in seeds:
        for variant, stage, ious in [("full method", 1, {"road": 0.80, "car": 0.20, "pole": 0.0}),
                                     ("full method", 2, {"road": 0.82, "car": 0.18, "pole": 0.0}),
                                     ("full method", 3, {"road": 0.84, "car": 0.15 - 0.02 * s, "pole": 0.0}),
                                     ("without CR", 3, {"road": 0.83, "car": 0.35, "pole": 0.0})]:
            rows += [{"dataset": "d", "labels": 100, "variant": variant, "seed": s, "stage": stage, "class": c,
                      "iou": i} for c, i in ious.items()]
    return pd.DataFrame(rows)


@pytest.fixture
def ablation_frame():
    """``ablation_frame(seeds=(0, 1))``: per-class IoU rows (results.per_class's) of a small Table V."""
    return _ablation_frame
