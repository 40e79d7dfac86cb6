"""Per-run summaries (selftrain_lib.record): every number of a regenerated table links to its run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from selftrain_lib import paper_figures as pf
from selftrain_lib import record
from selftrain_lib.pipeline import run
from selftrain_lib.runs import read_json

ROOT = Path(__file__).resolve().parent.parent
SMOKE_RUN = dict(dataset="synth-objects", labels=2, scale="smoke", seed=0)   # 2 used: the paper's 1/50 (60) at smoke


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    out = tmp_path_factory.mktemp("record") / "runs"
    return out, run(out=out, stages=2, progress=False, **SMOKE_RUN)


def test_a_summary_holds_the_runs_hash_setting_metrics_and_curve(two_stages):
    out, result = two_stages
    stage2 = result.stages[1]
    s = record.run_summary(stage2.run_dir)
    metrics = read_json(stage2.run_dir / "metrics.json")
    assert s["run_hash"] == stage2.run_hash == stage2.run_dir.name and s["stage"] == 2
    assert s["key"] == read_json(stage2.run_dir / "config.json")["key"]
    assert s["setting"]["dataset"] == "synth-objects" and s["setting"]["seed"] == 0 and s["setting"]["scale"] == "smoke"
    assert s["metrics"]["val_miou"] == pytest.approx(metrics["val"]["miou"])
    assert s["metrics"]["val_miou_teacher"] == pytest.approx(stage2.val_miou_teacher)
    assert s["metrics"]["val_miou_student"] == pytest.approx(stage2.val_miou_student)
    assert set(s["metrics"]["per_class_iou"]) == set(metrics["class_names"])
    rows = list(csv.DictReader((stage2.run_dir / "curves.csv").open()))
    assert s["curve"]["step"] == [int(r["step"]) for r in rows]          # every logged step, in order
    evaluated = [v for v in s["curve"]["val_miou"] if v is not None]
    assert evaluated and evaluated[-1] == pytest.approx(metrics["last"]["miou"])
    json.dumps(s, allow_nan=False)   # plain JSON: no NaN


def test_write_summaries_indexes_finished_runs_and_skips_unfinished(two_stages, tmp_path):
    out, result = two_stages
    unfinished = out / "0000000000000000"
    unfinished.mkdir()
    try:
        into = tmp_path / "figures" / pf.SUMMARIES
        written = record.write_summaries([r.run_dir for r in result.stages] + [unfinished], into)
        assert sorted(p.stem for p in written) == sorted(r.run_hash for r in result.stages)
        index = list(csv.DictReader((into / "index.csv").open()))
        assert [(r["run_hash"], r["stage"]) for r in index] == [(r.run_hash, str(r.stage)) for r in result.stages]
        assert float(index[0]["val_miou"]) == pytest.approx(result.stages[0].val_miou)
        # a later regeneration (another seed) adds to the record; the earlier summaries stay
        (into / "ffffffffffffffff.json").write_text(json.dumps({**record.run_summary(result.stages[0].run_dir),
                                                                "run_hash": "ffffffffffffffff"}))
        record.write_summaries([result.stages[1].run_dir], into)
        assert len(list(csv.DictReader((into / "index.csv").open()))) == 3
        with pytest.raises(FileNotFoundError, match="0000000000000000"):
            record.run_summary(unfinished)
    finally:
        unfinished.rmdir()


def test_planned_run_dirs_are_the_stage_folders_a_run_trains(two_stages):
    out, result = two_stages
    dirs = record.planned_run_dirs([{**SMOKE_RUN, "stages": 2}, {**SMOKE_RUN, "stages": 1}], out)
    assert dirs == [r.run_dir for r in result.stages]   # stage 1 shared: listed once


def test_paper_figures_writes_the_summaries_of_every_planned_run(two_stages, tmp_path, monkeypatch):
    out, result = two_stages
    monkeypatch.setattr(pf, "execute", lambda name, *a, **k: (Path(name), False))
    figures = tmp_path / "fig"
    pf.build("smoke", [0], figures, tmp_path / "build", out, only=["stage2"],
             extra={"stage2": {"dataset": "synth-objects", "labels": 60}}, progress=False)
    assert sorted(p.stem for p in (figures / pf.SUMMARIES).glob("*.json")) == sorted(r.run_hash for r in result.stages)


def test_the_record_scale_gives_every_seed_to_the_headline_and_tables_and_one_to_the_rest(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pf, "execute", lambda name, params, *a, **k: (seen.setdefault(name, params), False))
    monkeypatch.setattr(pf, "planned_runs", lambda *a, **k: [])
    pf.build("cpu", [0, 1, 2], tmp_path / "fig", tmp_path / "build", tmp_path / "runs",
             only=["headline", "table2", "table5", "fig2", "lambda_curve"], progress=False)
    assert seen["headline"]["seeds"] == seen["table2"]["seeds"] == seen["table5"]["seeds"] == [0, 1, 2]
    assert seen["fig2"]["seeds"] == [0] and seen["lambda_curve"]["seeds"] == [0]
    assert all("max_seeds" not in p for p in seen.values())
    assert seen["table5"]["datasets"] == ["synth-street"]
    assert pf.default_figures_dir("cpu") == "figures/cpu" and pf.default_figures_dir("quick") == "figures/quick"


def test_the_summaries_folder_is_committed_not_ignored_as_a_run_cache(tmp_path):
    """The run cache (`runs/`) is git-ignored; the summaries beside the figures must not be."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    path = f"figures/cpu/{pf.SUMMARIES}/0123456789abcdef.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
    assert not ignored, f"{path} is git-ignored: the record's summaries would never be committed"
    assert subprocess.run(["git", "check-ignore", "-q", "runs/0123456789abcdef/metrics.json"], cwd=ROOT).returncode == 0


def test_a_tampered_curve_is_an_error_naming_the_file_line_and_column(two_stages, tmp_path):
    import shutil

    out, result = two_stages
    copy = tmp_path / result.stages[0].run_hash
    shutil.copytree(result.stages[0].run_dir, copy)
    lines = (copy / "curves.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("loss")] = "__import__('os')"
    (copy / "curves.csv").write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"curves\.csv, line 2: loss is .*not a number"):
        record.run_summary(copy)


def test_the_summaries_index_has_a_column_per_switch():
    from selftrain_lib.methods import SWITCHES

    assert {s.key for s in SWITCHES} <= set(record.INDEX_COLUMNS)


def test_a_run_trained_before_a_switch_existed_reads_as_that_switch_on(two_stages, tmp_path):
    """A new switch stays out of the run key at its default (Switch.in_key_when_on), so a run
    trained before it existed is reused: its config.json lacks the key, and the summary and
    list_runs say on (what the run computed), not None; a value saved is kept."""
    import shutil

    from selftrain_lib import results
    from selftrain_lib.runs import atomic_write_json

    out, result = two_stages
    runs = tmp_path / "runs"
    copy = runs / result.stages[1].run_hash
    shutil.copytree(result.stages[1].run_dir, copy)
    saved = read_json(copy / "config.json")
    del saved["config"]["sa"]          # as if sa were added after this run trained
    saved["config"]["cr"] = False      # (a value saved is what the summary says)
    atomic_write_json(copy / "config.json", saved)
    setting = record.run_summary(copy)["setting"]
    assert setting["sa"] is True and setting["cr"] is False and setting["t2"] is True
    assert list(setting) == list(record.SETTING_KEYS)
    row = results.list_runs(runs).iloc[0]
    assert row["sa"] == True and row["cr"] == False  # noqa: E712 (numpy bools)
