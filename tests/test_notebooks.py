"""The notebooks: executed with papermill at smoke scale (into tmp_path), parameters documented in
the README, committed without outputs."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from selftrain_lib import experiments as ex
from selftrain_lib import paper_figures as pf

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))

# reduced grids: one seed, mostly synth-objects (the faster dataset at smoke scale)
SMOKE = {
    "stage1": {"dataset": "synth-objects", "labels": 60},
    "stage2": {"dataset": "synth-objects", "labels": 60},
    "stage3": {"dataset": "synth-objects", "labels": 60},
    "baselines": {"dataset": "synth-objects", "labels": 60, "method": "mt-cutmix"},
    "ablation": {"dataset": "synth-objects", "drop": "T2"},
    "lambda_curve": {"dataset": "synth-objects", "lambdas": [0.25]},
    "table2": {"labels": [100], "full": True},
    "table3_4": {"labels": [60], "full": True, "jobs": 2},
    "table5": {"datasets": ["synth-objects"]},
    "table6": {"datasets": ["synth-objects"]},
    "fig2": {"dataset": "synth-objects"},
    "fig3": {"datasets": ["synth-objects"], "lambdas": [0.25, 0.5]},
    "fig4_5": {"datasets": ["synth-objects"], "num_images": 2},
    "pseudo_stages": {"datasets": ["synth-objects"], "stages": 4},
    "per_class_gains": {"datasets": ["synth-objects"]},
    "explore": {"dataset": "synth-objects", "labels": 60},
    "headline": {"datasets": ["synth-objects"]},
}
# what each notebook must leave in figures_dir: (stem, kinds)
TABLE = ("md", "tex", "csv")
FIGURE = ("pdf", "png")
EXPECTED = {
    # a run's figures carry its dataset, label count (the paper's), seed and scale: runs never overwrite each other
    "stage1": [("stage1_synth-objects_60labels_seed0_smoke_losses", FIGURE), ("stage1_synth-objects_60labels_seed0_smoke_predictions", FIGURE)],
    "stage2": [("stage2_synth-objects_60labels_seed0_smoke_losses", FIGURE), ("stage2_synth-objects_60labels_seed0_smoke_val_miou", FIGURE), ("stage2_synth-objects_60labels_seed0_smoke_pseudo", FIGURE)],
    "stage3": [("stage3_synth-objects_60labels_seed0_smoke_losses", FIGURE), ("stage3_synth-objects_60labels_seed0_smoke_predictions", FIGURE)],
    "baselines": [("baselines_mt-cutmix_synth-objects_60labels_seed0_smoke_losses", FIGURE), ("baselines_mt-cutmix_synth-objects_60labels_seed0_smoke_predictions", FIGURE)],
    "ablation": [("ablation_T2", FIGURE)],
    "lambda_curve": [("lambda_curve_synth-objects", FIGURE)],
    "table2": [("table2", TABLE)],
    "table3_4": [("table3_4", TABLE)],
    "table5": [("table5", TABLE), ("table5_per_class", TABLE), ("table5_per_class", FIGURE)],
    "table6": [("table6", TABLE)],
    "fig2": [("fig2", FIGURE)],
    "fig3": [("fig3", TABLE)],   # the λ curve itself: lambda_curve (one figure, not two)
    "fig4_5": [("fig4_5_synth-objects", FIGURE)],
    "pseudo_stages": [("pseudo_stages", FIGURE), ("pseudo_stages", TABLE)],
    "per_class_gains": [("per_class_gains", FIGURE), ("per_class_gains", TABLE)],
    "explore": [("explore_example", FIGURE)],
    "headline": [("headline", FIGURE), ("headline", ("md",)), ("stages_smoke", ("csv",))],
}
CSV_COLUMNS = {
    "table2": {"method", "labels (ours)", "labels (paper)", "reproduced mIoU (%)", "seeds", "published (Table II)"},
    "table3_4": {"method", "reproduced mIoU (%)", "published (Table III, ImageNet)",
                 "published (Table IV, ImageNet+COCO)"},
    "table5": {"dataset", "row", "reproduced mIoU (%)", "published (Table V)"},
    "table5_per_class": {"dataset", "row", "class", "difference", "difference_std", "n_seeds", "never_predicted"},
    "table6": {"dataset", "row", "reproduced mIoU (%)", "published (Table VI)"},
    "fig3": {"dataset", "lambda1", "miou", "miou_std", "seeds"},
    "pseudo_stages": {"dataset", "stage", "pseudo-mask mIoU on U (%)", "val mIoU (%)"},
    "per_class_gains": {"dataset", "class", "gain", "gain_std"},
    "stages_smoke": {"dataset", "labels", "row", "seed", "student", "teacher", "pseudo_U"},
}


def test_every_notebook_has_smoke_parameters_and_expected_outputs():
    assert sorted(SMOKE) == NOTEBOOKS == sorted(pf.NOTEBOOK_ORDER) == sorted(EXPECTED)


def _train_notebook_runs(runs: Path) -> None:
    specs = (ex.label_grid("synth-street", [0], [100], full=True) + ex.label_grid("synth-objects", [0], [60])
             + ex.ablation_grid(["synth-objects"], [0], drops=("none", "CR", "T2", "SA", "N2", "EMA"))
             + ex.lambda_grid(["synth-objects"], [0.25, 0.5], [0]) + ex.stages_grid(["synth-objects"], [0], 4))
    ex.run_grid(specs, "smoke", str(runs), progress=False, jobs=2)  # in parallel, as make paper-figures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shared_folder):
    """``(folder, runs)``: this worker's folder for the notebooks' figures and executed copies, and
    the run cache every notebook test reads, trained once for the whole test run (the notebooks reuse it)."""
    return tmp_path_factory.mktemp("paper"), shared_folder("notebook-runs", _train_notebook_runs)


@pytest.mark.slow
@pytest.mark.parametrize("name", pf.NOTEBOOK_ORDER)
def test_notebook_executes_at_smoke_scale(name, workspace):
    folder, runs = workspace
    figures_dir = folder / "figures"
    params = pf.notebook_parameters(ROOT / "notebooks" / f"{name}.ipynb", "smoke", [0], runs, figures_dir, SMOKE[name])
    executed, ran = pf.execute(name, params, folder / "build", figures_dir=figures_dir)
    assert ran and executed.is_file()
    for stem, kinds in EXPECTED[name]:
        for kind in kinds:
            path = figures_dir / f"{stem}.{kind}"
            assert path.is_file() and path.stat().st_size > 0, path
            if kind == "png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if kind == "pdf":
                assert path.read_bytes()[:5] == b"%PDF-"
            if kind == "csv":
                df = pd.read_csv(path)
                assert len(df) > 0
                assert CSV_COLUMNS.get(stem, set()) <= set(df.columns), (stem, list(df.columns))
            if kind == "csv" and stem in ("table2", "table3_4"):   # reproduced baseline rows
                assert {"Supervised (= Stage 1)", "Cutout (mean teacher)", "CutMix (mean teacher)",
                        "Ours (three-stage)"} <= set(df["method"])
            if kind == "md" and stem.startswith("table"):
                text = path.read_text()
                assert "scale: smoke" in text and "last step" in text
    check_outputs_read_finished(executed)
    # a second execution with nothing changed is skipped
    _, ran_again = pf.execute(name, params, folder / "build", figures_dir=figures_dir)
    assert not ran_again


TQDM_METER = re.compile(r"(\d+)%\|.*\|\s*(\d+)/(\d+)")


def check_outputs_read_finished(executed: Path) -> None:
    """Each figure is shown once (``figures.show``: no second copy from the inline backend), and
    no saved progress bar reads as unfinished (e.g. ``0%| | 0/1``)."""
    nb = nbformat.read(executed, as_version=4)
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        images = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        shows = cell.source.count("figures.show(")
        if "for " in cell.source:    # a loop shows one figure per pass: each once
            assert len(set(images)) == len(images), (executed.name, cell.id, "a figure shown twice")
        else:
            assert len(images) == shows, (executed.name, cell.id, len(images), shows)
        for o in cell.outputs:
            # results read as text in papermill's --log-output too: no object reprs, no lists of paths
            plain = "".join(o.get("data", {}).get("text/plain", ""))
            assert not any(r in plain for r in ("PosixPath(", "IPython.core.display", "RunSpec(")), (executed.name, cell.id, plain)
            text = o.get("data", {}).get("text/plain", "") if o["output_type"] == "display_data" else ""
            for m in TQDM_METER.finditer(text):
                assert m.group(2) == m.group(3), (executed.name, cell.id, "unfinished bar saved", text)


def test_failing_notebook_stops_with_the_executed_notebook(tmp_path, broken_notebook):
    notebooks = broken_notebook("boom")
    with pytest.raises(pf.NotebookFailed) as err:
        pf.execute("broken", {"x": 2}, tmp_path / "build", notebook_dir=notebooks)
    assert err.value.executed == tmp_path / "build" / "broken.ipynb" and err.value.executed.is_file()
    assert "boom" in str(err.value) and str(err.value.executed) in str(err.value)


def test_a_bar_in_a_kernel_prints_its_progress_where_papermill_logs_it(tmp_path):
    """papermill --log-output logs a kernel's streams, not widget updates: a running bar prints
    its text form to stderr at intervals (60 s; shortened here)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import time\nfrom selftrain_lib import progress\nprogress.HEARTBEAT_S = 0.05\n"
        "for _ in progress.tqdm(range(6), desc='stage 9'):\n    time.sleep(0.1)")]
    nbformat.write(nb, tmp_path / "bar.ipynb")
    pm.execute_notebook(str(tmp_path / "bar.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False)
    [cell] = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    lines = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr").splitlines()
    assert len(lines) >= 2 and all(re.match(r"stage 9: +\d+% \d/6 \[", line) for line in lines), lines


def test_committed_notebooks_are_what_the_generator_makes_without_outputs(tmp_path, load_tool):
    """notebooks/ is generated (tools/make_notebooks.py): an edit there, or outputs JupyterLab's
    autosave wrote into a tracked notebook, would otherwise go unnoticed."""
    gen = load_tool("make_notebooks")
    made = gen.write(tmp_path)
    assert sorted(p.name for p in made) == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    for path in made:
        committed = ROOT / "notebooks" / path.name
        nb = nbformat.read(committed, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells
                   if c.cell_type == "code"), f"{committed} holds outputs: clear them (python tools/make_notebooks.py)"
        assert committed.read_text() == path.read_text(), \
            f"{committed} differs from what tools/make_notebooks.py makes: edit the generator and run it"


def test_readmes_notebooks_table_is_what_the_generator_makes(load_tool):
    """README's Notebooks table is generated between two markers (tools/make_notebooks.py): a notebook
    or a parameter added without rerunning the generator leaves it stale, and this names the fix."""
    gen = load_tool("make_notebooks")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert gen.readme_with_table(text) == text, "README's notebooks table is stale: run python tools/make_notebooks.py"
    table = text.split(gen.TABLE_BEGIN)[1].split(gen.TABLE_END)[0]
    assert "| `stage2.ipynb` | `dataset`, `labels`, `seed`, `lambda1`, `lambda2`, `switches`, `scale`," in table
    # no row names a switch or a baseline: a new one (methods.SWITCHES, METHODS) changes no README line
    from selftrain_lib.methods import BASELINES, SWITCHES

    assert not [w for w in [*(s.label for s in SWITCHES if s.table == "V"), *BASELINES] if re.search(rf"\b{w}\b", table)]
    with pytest.raises(ValueError, match="markers"):
        gen.readme_with_table(text.replace(gen.TABLE_END, ""))


def test_switches_are_one_parameter_given_as_a_mapping_or_one_by_one(tmp_path):
    """A stage notebook takes the switches of methods.SWITCHES by name (so a new switch needs no new
    notebook): ``-p switches '{"sa": false}'`` or, as before, ``-p sa False``; a typo is named."""
    from selftrain_lib.notebook_params import NotebookParameterError

    space = _derived("stage3", tmp_path, switches='{"sa": false}')
    assert dict(space["spec"].overrides)["sa"] is False and "cr" not in dict(space["spec"].overrides)
    space = _derived("stage2", tmp_path, cr=False, t2="false", switches='{"ema": false}')
    assert space["switches"] == {"ema": False, "cr": False, "t2": False} and "cr" not in space
    assert {k: v for k, v in space["spec"].overrides if k in ("cr", "t2", "ema")} == {"cr": False, "t2": False,
                                                                                       "ema": False}
    with pytest.raises(ValueError, match=r"switches: 'sa2' is not a switch \(did you mean 'sa'\?\); the switches are cr, t2, sa"):
        _derived("stage1", tmp_path, switches={"sa2": False})
    with pytest.raises(ValueError, match="switches: sa must be true or false, got 'no'"):
        _derived("stage1", tmp_path, switches={"sa": "no"})
    with pytest.raises(NotebookParameterError, match="'srs'"):
        _derived("stage1", tmp_path, srs=False)


def test_a_spec_describes_itself_in_one_line_with_both_label_counts():
    assert ex.spec("synth-street", 100, 0).describe("quick") == \
        "synth-street · 100 labels (20 used at quick) · seed 0 · stages 1–3 · full method · lambda1=0.5, lambda2=0.5"
    assert ex.spec("synth-objects", "full", 1, stages=1).describe() == \
        "synth-objects · full supervision · seed 1"
    assert ex.spec("synth-objects", 60, 2, stages=1).describe() == \
        "synth-objects · 60 labels (1/50) · seed 2 · Stage 1 · full method"


def _readme_parameters() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)\.ipynb`\s*\|([^|]*)\|", line)
        if m:
            table[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return table


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_parameters_match_readme(name):
    documented = _readme_parameters()
    assert name in documented, f"README's Notebooks table has no row for {name}.ipynb"
    declared = pm.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    assert set(declared) == documented[name]
    for p in declared.values():
        assert p["help"], f"{name}: parameter {p['name']} has no comment"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{name}: cell {c.get('id')} has outputs"
    assert "papermill" not in nb.metadata


def test_stage_notebooks_take_the_method_parameters():
    for k in (1, 2, 3):
        declared = pm.inspect_notebook(str(ROOT / "notebooks" / f"stage{k}.ipynb"))
        assert {"dataset", "labels", "seed", "scale", "lambda1", "lambda2", "switches", "out"} <= set(declared)
    assert "drop" in pm.inspect_notebook(str(ROOT / "notebooks" / "ablation.ipynb"))
    assert {"method", "dataset", "labels", "seed", "scale"} <= set(pm.inspect_notebook(
        str(ROOT / "notebooks" / "baselines.ipynb")))


def test_quick_plan_passes_fewer_columns_and_user_parameters_win(tmp_path, monkeypatch):
    """`make paper-figures` at quick runs the scale's plan (SCALE_PARAMETERS: fewer, better runs),
    every plan key is a parameter its notebook declares, and a `-p` of the user's wins."""
    seen = {}
    monkeypatch.setattr(pf, "execute", lambda name, params, build_dir, *a, **k: (seen.setdefault(name, params), False))
    for name, plan in pf.SCALE_PARAMETERS["quick"].items():
        assert set(plan) <= set(pf.declared_parameters(ROOT / "notebooks" / f"{name}.ipynb")), name
    pf.build("quick", [0], tmp_path / "fig", tmp_path / "build", tmp_path / "runs", only=["table2", "table5", "fig3"],
             extra={"fig3": {"lambdas": [0.5]}}, progress=False)
    assert seen["table2"]["labels"] == [100] and seen["table5"]["datasets"] == ["synth-street"]
    assert seen["fig3"]["lambdas"] == [0.5] and seen["fig3"]["datasets"] == ["synth-street"]
    seen.clear()
    pf.build("paper", [0], tmp_path / "fig", tmp_path / "build", tmp_path / "runs", only=["table2"], progress=False)
    assert "labels" not in seen["table2"]   # the paper scale runs every column


def _quick_parameters(name: str, tmp_path: Path, seeds=(0, 1), **more) -> dict:
    path = ROOT / "notebooks" / f"{name}.ipynb"
    plan = {**pf.SCALE_PARAMETERS["quick"].get(name, {}), **more}
    return pf.notebook_parameters(path, "quick", list(seeds), tmp_path / "runs", tmp_path / "fig", plan, jobs=2)


def test_planned_runs_are_the_runs_of_the_notebooks_own_grid(tmp_path):
    """`make paper-figures` trains every notebook's runs in one pool first: the plan is the notebook's
    own cell of derived values run on its parameters, so it asks for exactly the runs the notebook will."""
    params = _quick_parameters("table5", tmp_path, config={"steps": 7})
    want = ex.grid_run_kwargs(ex.ablation_grid(["synth-street"], [0, 1]), "quick", config={"steps": 7})
    assert pf.planned_runs(ROOT / "notebooks" / "table5.ipynb", params) == list(want.values())
    params = _quick_parameters("baselines", tmp_path, method="mt-cutout", labels=60, dataset="synth-objects")
    (run,) = pf.planned_runs(ROOT / "notebooks" / "baselines.ipynb", params)
    assert run == {"dataset": "synth-objects", "labels": 12, "stages": 1, "seed": 0, "scale": "quick",
                   "method": "mt-cutout"}
    assert pf.planned_runs(ROOT / "notebooks" / "explore.ipynb", _quick_parameters("explore", tmp_path)) == []
    # a parameter the notebook's own cell rejects: nothing planned, papermill reports it when it runs
    bad = _quick_parameters("table5", tmp_path, seeds="12")
    assert pf.planned_runs(ROOT / "notebooks" / "table5.ipynb", bad) == []


def test_build_with_jobs_trains_every_notebooks_runs_in_one_pool_first(tmp_path, monkeypatch):
    import selftrain_lib.sweep as sweep

    calls = []
    monkeypatch.setattr(sweep, "run_parallel", lambda runs, **kw: calls.append(("train", runs, kw["jobs"])) or [])
    monkeypatch.setattr(pf, "execute", lambda name, *a, **k: (calls.append(("execute", name)), (Path(name), True))[1])
    pf.build("quick", [0], tmp_path / "fig", tmp_path / "build", tmp_path / "runs", only=["table6", "fig2"],
             jobs=2, progress=False)
    (train, runs, jobs), *executed = calls
    assert train == "train" and jobs == 2 and executed == [("execute", "table6"), ("execute", "fig2")]
    table6 = pf.planned_runs(ROOT / "notebooks" / "table6.ipynb", _quick_parameters("table6", tmp_path, seeds=[0]))
    assert runs[:len(table6)] == table6 and {r["dataset"] for r in runs} == {"synth-street", "synth-objects"}
    calls.clear()   # one job: no pool, each notebook trains its own runs
    pf.build("quick", [0], tmp_path / "fig", tmp_path / "build", tmp_path / "runs", only=["table6"], progress=False)
    assert calls == [("execute", "table6")]


# ------------------------------------------------------------------------------------------
# parameters as papermill hands them over (issue 24, items 6 and 9)
# ------------------------------------------------------------------------------------------

def _derived(name: str, tmp_path: Path, **parameters) -> dict:
    """A notebook's parameters cell, papermill's injected values, then its cell of derived values
    (which checks them first), as ``paper_figures.planned_runs`` runs them: no kernel, nothing trained."""
    cells = [c.source for c in nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    space: dict = {}
    exec(cells[0], space)
    space.update({"out": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "fig"), **parameters})
    exec(cells[1], space)
    return space


def test_an_unknown_notebook_parameter_is_named_with_the_closest_declared_one(tmp_path):
    from selftrain_lib.notebook_params import NotebookParameterError

    with pytest.raises(NotebookParameterError, match=r"unknown notebook parameter 'lables' \(did you mean 'labels'\?\)"):
        _derived("stage2", tmp_path, lables=5)
    with pytest.raises(NotebookParameterError, match=r"'lambda_1' \(did you mean 'lambda1'\?\)"):
        _derived("stage3", tmp_path, lambda_1=0.1)


def test_text_for_list_and_dict_parameters_is_parsed_as_papermill_p_passes_it(tmp_path):
    """The README's `-p config '{"steps": 500, "lr": 5e-4}'`, `-p data_roots '{...}'`, `-p seeds '[0, 1]'`:
    papermill's -p passes these as strings."""
    space = _derived("table5", tmp_path, seeds="[0, 1]", config='{"steps": 500, "lr": 5e-4}', data_roots="{}",
                     datasets='["synth-objects"]')
    assert space["seeds"] == [0, 1] and space["config"] == {"steps": 500, "lr": 5e-4} and space["data_roots"] == {}
    assert {s.seed for s in space["specs"]} == {0, 1} and {s.dataset for s in space["specs"]} == {"synth-objects"}
    space = _derived("table2", tmp_path, seeds=3, labels="[100]", full="false")
    assert space["seeds"] == [3] and space["labels"] == [100] and space["full"] is False
    space = _derived("stage1", tmp_path, data_roots='{"voc": "/data/VOC2012"}', labels="full")
    assert space["data_roots"] == {"voc": "/data/VOC2012"} and space["labels"] == "full"


@pytest.mark.parametrize("parameters,message", [
    ({"seeds": '"12"'}, "notebook parameter 'seeds': expected a list such as [0, 1], got '12'"),
    ({"seeds": "[0, 1"}, "notebook parameter 'seeds': expected a list such as [0, 1]; '[0, 1' is not valid JSON or YAML"),
    ({"config": "steps=500"}, "notebook parameter 'config': expected a mapping such as {\"steps\": 500}, got 'steps=500'"),
    ({"config": "{steps: 5, steps: 6}"}, "key 'steps' is given twice"),
    ({"datasets": "synth-objects"}, "notebook parameter 'datasets': expected a list such as [0, 1], got 'synth-objects'"),
    ({"full": "maybe"}, "notebook parameter 'full': expected bool, got 'maybe'"),
])
def test_a_parameter_that_does_not_fit_its_declaration_is_named(tmp_path, parameters, message):
    from selftrain_lib.notebook_params import NotebookParameterError

    name = "table2" if "full" in parameters else "table5"
    with pytest.raises(NotebookParameterError, match=re.escape(message)):
        _derived(name, tmp_path, **parameters)


def test_stage_notebook_labels_and_lambda_types(tmp_path):
    from selftrain_lib.notebook_params import NotebookParameterError

    with pytest.raises(NotebookParameterError, match=re.escape("'labels': expected int or a fraction such as '1/30' or 'full', got 12.7")):
        _derived("stage2", tmp_path, labels=12.7)
    with pytest.raises(NotebookParameterError, match=re.escape("'lambda1': expected float or None, got 'abc'")):
        _derived("stage2", tmp_path, lambda1="abc")


@pytest.mark.parametrize("config,message", [
    ({"lambda1": 0.1}, "config: lambda1=0.1 would be ignored: this grid's runs set lambda1 themselves (lambda1=0.25)"),
    ({"seed": 4}, "config: seed=4 would be ignored: this grid's runs set seed themselves (seed=0)"),
    ({"stepz": 5}, "config: unknown configuration key 'stepz' (did you mean 'steps'?)"),
    ({"dataset": "voc"}, "config: 'dataset' is chosen by the grid"),
])
def test_config_keys_a_grid_would_ignore_are_errors(tmp_path, config, message):
    """`-y 'config: {lambda1: 0.1}'` on stage2 ran the spec's λ: the spec's keys win over config."""
    space = _derived("stage2", tmp_path, dataset="synth-objects", labels=60, config=config)
    with pytest.raises(ValueError, match=re.escape(message)):
        ex.grid_run_kwargs([space["spec"]], "smoke", space["data_roots"], space["config"])
    assert ex.grid_run_kwargs([space["spec"]], "smoke", None, {"steps": 5, "lambda1": 0.25})  # the same value: fine


def test_data_roots_must_name_datasets(tmp_path):
    spec = ex.spec("synth-street", 100)
    with pytest.raises(ValueError, match=re.escape("data_roots: unknown dataset 'vocc'")):
        ex.grid_run_kwargs([spec], "smoke", {"vocc": str(tmp_path)})
    with pytest.raises(ValueError, match=re.escape("data_roots: expected a mapping")):
        ex.grid_run_kwargs([spec], "smoke", "{}")


@pytest.mark.slow
def test_papermill_command_line_names_an_unknown_parameter_in_its_last_lines(tmp_path):
    """`papermill notebooks/stage2.ipynb out.ipynb -p lables 5` (a kernel, no training: ~10 s)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    papermill = [sys.executable, "-m", "papermill"]
    proc = subprocess.run([*papermill, str(ROOT / "notebooks" / "stage2.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "lables", "5", "-p", "out", str(tmp_path / "runs"), "-p", "figures_dir",
                           str(tmp_path / "fig")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    last = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
    assert "unknown notebook parameter 'lables' (did you mean 'labels'?)" in last, last
    assert not (tmp_path / "runs").exists()  # nothing trained
