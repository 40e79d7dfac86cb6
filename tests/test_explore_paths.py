"""The researcher's first hour: the explorer opens on a drawn choice, the run cache and the
figures folder resolve the same way from any working directory, and progress bars save finished."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import selftrain_lib
from selftrain_lib import explore, paths, results

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """Two chains at smoke scale: synth-objects stages 1-2 (seed 0) and synth-street stage 1."""
    out = tmp_path_factory.mktemp("runs")
    a = selftrain_lib.run("synth-objects", scale="smoke", stages=2, out=out, progress=False)
    b = selftrain_lib.run("synth-street", scale="smoke", stages=1, out=out, progress=False)
    return out, a, b


def test_explorer_opens_on_the_chosen_run_last_stage_and_draws(tiny_cache):
    out, a, _ = tiny_cache
    box = explore.explorer(out, dataset="synth-objects")
    c = box.controls
    assert c["dataset"].value == "synth-objects"
    assert c["run"].value == a.final.run_hash                     # the chain's leaf, selected
    assert c["stage"].value == a.final.run_hash and len(c["stage"].options) == 2
    assert c["image"].value == 0
    png = c["view"].value
    assert png[:8] == b"\x89PNG\r\n\x1a\n"                        # drawn without any click
    label = dict((v, k) for k, v in c["run"].options)[a.final.run_hash]
    assert label.startswith("synth-objects · ") and "seed 0" in label and "stage 2" in label
    assert a.final.run_hash[:6] not in label                      # no hash in the label
    c["stage"].value = a.stages[0].run_hash                       # another stage redraws
    assert c["view"].value[:8] == b"\x89PNG\r\n\x1a\n" and c["view"].value != png
    c["dataset"].value = "synth-street"                           # another dataset selects its run
    assert c["run"].value is not None and c["stage"].value == c["run"].value
    assert c["view"].value != png


def test_explorer_default_dataset_is_the_first_and_unknown_dataset_falls_back_saying_so(tiny_cache):
    out, _, b = tiny_cache
    box = explore.explorer(out)
    assert box.controls["dataset"].value == "synth-objects"
    box = explore.explorer(out, dataset="synth-street", run=b.final.run_hash)
    assert box.controls["run"].value == b.final.run_hash
    box = explore.explorer(out, dataset="synth-nothing")         # opens on what the cache holds
    assert box.controls["dataset"].value == "synth-objects"
    assert "no finished run of synth-nothing" in box.controls["status"].value


def test_list_runs_and_explorer_use_the_env_var(tiny_cache, monkeypatch, tmp_path):
    out, a, _ = tiny_cache
    monkeypatch.setenv(paths.RUNS_ENV, str(out))
    monkeypatch.chdir(tmp_path)                                   # e.g. JupyterLab's notebooks/
    assert paths.runs_dir() == Path(out).resolve()
    assert set(results.list_runs()["run"]) >= {r.run_hash for r in a.stages}
    assert explore.explorer().controls["run"].value is not None


def test_default_paths_do_not_depend_on_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.RUNS_ENV, raising=False)
    monkeypatch.delenv(paths.FIGURES_ENV, raising=False)
    found = []
    for where in (ROOT, ROOT / "notebooks", tmp_path):
        monkeypatch.chdir(where)
        found.append((paths.runs_dir(), paths.figures_dir()))
    assert found == [(ROOT / "runs", ROOT / "build" / "figures")] * 3
    assert paths.figures_dir() != ROOT / "figures"                # only make paper-figures writes figures/
    assert paths.runs_dir("elsewhere") == Path("elsewhere")       # an explicit folder wins
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "f"))
    assert paths.figures_dir() == tmp_path / "f"


def test_cli_default_out_is_the_resolved_cache(tmp_path):
    """``python -m selftrain_lib run`` from another folder writes to $SELFTRAIN_RUNS, not ./runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), paths.RUNS_ENV: str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "selftrain_lib", "run", "--dataset", "synth-objects", "--scale", "smoke",
                    "--stages", "1", "--no-progress"], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert list((tmp_path / "cache").glob("*/metrics.json")) and not (tmp_path / "runs").exists()


def test_readme_command_trains_on_your_own_data(tmp_path):
    """README "Your own data": ``run --params leaves.yaml --dataset leaves --set data_root=...``."""
    from test_real_data import FOLDER_YAML, make_folder

    from selftrain_lib import cli

    root = make_folder(tmp_path / "mine")
    (tmp_path / "leaves.yaml").write_text(FOLDER_YAML)
    rc = cli.main(["run", "--params", str(tmp_path / "leaves.yaml"), "--dataset", "leaves", "--scale", "smoke",
                   "--set", f"data_root={root}", "--stages", "2", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 0
    stages = sorted(results.list_runs(tmp_path / "runs")["stage"])
    assert stages == [1, 2]
