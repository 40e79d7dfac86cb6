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
        kept = (into / f"{result.stages[1].run_hash}.json")
        kept.write_text(kept.read_text().replace('"stage": 2', '"stage": 2 ', 1))   # as if trained on another CPU
        assert record.write_summaries([result.stages[1].run_dir], into) == []      # the record only grows
        assert '"stage": 2 ' in kept.read_text()
        assert len(list(csv.DictReader((into / "index.csv").open()))) == 3
        # trained again on another machine than the record's: kept, and its own summary beside the record
        kept.write_text(json.dumps({**json.loads(kept.read_text()), "machine": "another CPU"}))
        again = record.write_summaries([result.stages[1].run_dir], into)
        here = record.machine_folder(record.machine_name())
        assert again == [into / record.RETRAINED / here / kept.name]
        assert json.loads(again[0].read_text())["machine"] == record.machine_name()
        assert json.loads(kept.read_text())["machine"] == "another CPU"           # the record's stays
        assert record.write_summaries([result.stages[1].run_dir], into) == []      # once
        assert len(list(csv.DictReader((into / "index.csv").open()))) == 3        # the index is the record's
        assert record.machine_folder("AMD EPYC 7B13 64-Core") == "AMD-EPYC-7B13-64-Core"
        assert record.machine_folder(None) == record.machine_folder("") == "unknown"
        assert record.machine_folder("../x") == "x"
        kept.write_text("[]")                         # a summary tampered with: an error naming it, not a crash
        with pytest.raises(ValueError, match=kept.name):
            record.write_summaries([result.stages[1].run_dir], into)
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


def test_the_record_scale_gives_every_seed_to_the_headline_tables_and_lambda_and_one_to_figs_2_4_5(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pf, "execute", lambda name, params, *a, **k: (seen.setdefault(name, params), False))
    monkeypatch.setattr(pf, "planned_runs", lambda *a, **k: [])
    pf.build("cpu", [0, 1, 2], tmp_path / "fig", tmp_path / "build", tmp_path / "runs",
             only=["headline", "table2", "table5", "table6", "fig2", "fig3", "fig4_5", "lambda_curve"], progress=False)
    for name in ("headline", "table2", "table5", "table6", "fig3", "lambda_curve"):
        assert seen[name]["seeds"] == [0, 1, 2], name
    assert seen["fig2"]["seeds"] == seen["fig4_5"]["seeds"] == [0]
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


# ------------------------------------------------------------------------------------------
# the record in place of the run cache (run_grid(record=...), make paper-figures FROM_RECORD=1)
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A two-stage grid run trained in one cache, its summaries in a record folder, and the same
    grid read from the record into an empty cache."""
    from selftrain_lib import experiments as ex

    root = tmp_path_factory.mktemp("recorded")
    specs = [ex.spec("synth-objects", 60, seed=0, stages=2)]
    trained = ex.run_grid(specs, "smoke", root / "trained", progress=False)
    folder = root / "figures" / pf.SUMMARIES
    record.write_summaries([r.run_dir for r in trained.pairs[0][1].stages], folder)
    read = ex.run_grid(specs, "smoke", root / "empty", progress=False, record=folder)
    return root, specs, trained, read, folder


def test_a_run_the_cache_lacks_is_read_from_the_record_with_the_numbers_it_trained(recorded):
    from selftrain_lib import results

    root, specs, trained, read, folder = recorded
    stages = read.pairs[0][1].stages
    assert all(isinstance(r, record.RecordedStage) for r in stages)
    assert not (root / "empty").exists() or not any((root / "empty").glob("*/metrics.json"))   # nothing trained
    assert [r.run_hash for r in stages] == [r.run_hash for r in trained.pairs[0][1].stages]
    # every number a table reads from a run: the same from the record as from the cache
    columns = ["stage", "labels_used", "val_miou", "val_miou_student", "val_miou_teacher", "pseudo_miou",
               "val_miou_best", "best_step", "eval_model", "train_time_s", "lambda1", "sa"]
    ours, theirs = results.collect(read.pairs, "smoke"), results.collect(trained.pairs, "smoke")
    assert ours[columns].equals(theirs[columns])
    per_class = results.per_class(read.pairs)
    assert per_class.equals(results.per_class(trained.pairs))
    curve = stages[1].curves()
    assert list(curve["step"]) == list(trained.pairs[0][1].stages[1].curves()["step"])


def test_a_recorded_stage_has_no_model_or_pseudo_masks_and_says_so(recorded):
    _, _, _, read, folder = recorded
    stage = read.pairs[0][1].stages[0]
    with pytest.raises(FileNotFoundError, match=f"{stage.run_hash}.*summary.*no model"):
        stage.load_model()
    with pytest.raises(FileNotFoundError, match="no pseudo-masks"):
        stage.pseudo_masks


def test_a_partly_recorded_run_is_trained_whole(recorded, tmp_path):
    """Stage 2 needs Stage 1's pseudo-masks, which no summary holds: a run whose record lacks a
    stage is trained from Stage 1, into the cache."""
    from selftrain_lib import experiments as ex

    _, specs, trained, _, folder = recorded
    partial = tmp_path / "partial"
    partial.mkdir()
    first = trained.pairs[0][1].stages[0].run_hash
    (partial / f"{first}.json").write_text((folder / f"{first}.json").read_text())
    again = ex.run_grid(specs, "smoke", tmp_path / "runs", progress=False, record=partial)
    stages = again.pairs[0][1].stages
    assert not any(isinstance(r, record.RecordedStage) for r in stages)
    assert all((tmp_path / "runs" / r.run_hash / "metrics.json").is_file() for r in stages)
    assert [r.val_miou for r in stages] == [r.val_miou for r in trained.pairs[0][1].stages]   # determinism


def test_runs_that_share_their_stage_1_come_from_one_source(recorded, tmp_path):
    """A tree (runs with one Stage 1) is read from the record only when it holds every run of it:
    the full method from the record beside a variant trained here would compare two machines. Where
    the record holds the tree, it wins over the cache (the committed numbers stay the record's)."""
    from selftrain_lib import experiments as ex

    root, specs, trained, _, folder = recorded
    variant = ex.spec("synth-objects", 60, seed=0, stages=2, lambda1=0.5, lambda2=0.5)
    both = ex.run_grid(specs + [variant], "smoke", root / "trained", progress=False, record=folder)
    assert not any(isinstance(r, record.RecordedStage) for _, res in both for r in res.stages)
    assert both.pairs[0][1].stages[0].run_hash == both.pairs[1][1].stages[0].run_hash   # one tree
    alone = ex.run_grid(specs, "smoke", root / "trained", progress=False, record=folder)   # the cache has it too
    assert all(isinstance(r, record.RecordedStage) for r in alone.pairs[0][1].stages)
    other_seed = ex.spec("synth-objects", 60, seed=1, stages=1)   # another tree: its own source
    assert [r is None for r in record.recorded_results(
        list(ex.grid_run_kwargs(specs + [other_seed], "smoke").values()), folder)] == [False, True]


def test_a_summary_filed_under_another_runs_hash_or_edited_key_is_an_error(recorded, tmp_path):
    _, specs, trained, _, folder = recorded
    first, second = (r.run_hash for r in trained.pairs[0][1].stages)
    summary = read_json(folder / f"{first}.json")
    (tmp_path / f"{second}.json").write_text(json.dumps(summary))          # Stage 1's summary as Stage 2's
    with pytest.raises(ValueError, match=f"{second}.json: its run key hashes to {first}, not to the run {second}"):
        record.recorded_stage(tmp_path / f"{second}.json", second)
    summary["key"]["config"]["seed"] = 1                                      # an edited key
    (tmp_path / f"{first}.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=f"{first}.json: its run key hashes to"):
        record.recorded_stage(tmp_path / f"{first}.json", first)
    summary = read_json(folder / f"{second}.json")
    (tmp_path / f"{second}.json").write_text(json.dumps({**summary, "stage": 1}))   # stage outside the key edited
    with pytest.raises(ValueError, match=f"{second}.json: its stage \\(1\\) is not its run key's \\(2\\)"):
        record.recorded_stage(tmp_path / f"{second}.json", second)
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="x.json: not a run summary"):
        record.read_summary(tmp_path / "x.json")


def test_paper_figures_from_record_trains_only_what_the_record_lacks(recorded, tmp_path, monkeypatch):
    """--from-record: the notebooks that declare `record` get the scale's summaries folder, and
    the pool trains none of the runs they read from it; other notebooks train theirs."""
    root, specs, trained, _, folder = recorded
    seen, pooled = {}, []
    monkeypatch.setattr(pf, "execute", lambda name, params, *a, **k: (seen.setdefault(name, params), False))
    monkeypatch.setattr("selftrain_lib.sweep.run_parallel", lambda runs, **k: pooled.extend(runs))
    extra = {"pseudo_stages": {"datasets": ["synth-objects"], "stages": 2},
             "stage2": {"dataset": "synth-objects", "labels": 60}}
    pf.build("smoke", [0], root / "figures", tmp_path / "build", tmp_path / "runs", only=["pseudo_stages", "stage2"],
             extra=extra, progress=False, jobs=2, from_record=True)
    assert seen["pseudo_stages"]["record"] == str(folder.resolve()) and "record" not in seen["stage2"]
    # the same run in both: read from the record by the notebook that can, trained for the one that shows its model
    from_record = pf.planned_runs(pf.NOTEBOOK_DIR / "pseudo_stages.ipynb", seen["pseudo_stages"])
    needs_model = pf.planned_runs(pf.NOTEBOOK_DIR / "stage2.ipynb", seen["stage2"])
    assert from_record == needs_model and all(record.recorded_results(from_record, folder))
    assert pooled == needs_model
    with pytest.raises(pf.UsageError, match="holds no run summaries"):
        pf.build("smoke", [0], tmp_path / "nofigures", tmp_path / "build", tmp_path / "runs", only=["headline"],
                 progress=False, from_record=True)


def test_a_tree_recorded_on_two_machines_is_not_read_from_the_record(recorded, tmp_path):
    """A summary names the CPU that wrote it; a tree whose summaries name two (a variant trained on
    another machine beside the record's full method) is trained, not read as a mix of machines."""
    import shutil

    from selftrain_lib import experiments as ex

    _, specs, trained, _, folder = recorded
    copy = tmp_path / "record"
    shutil.copytree(folder, copy)
    runs = list(ex.grid_run_kwargs(specs, "smoke").values())
    assert record.recorded_results(runs, copy)[0] is not None
    second = copy / f"{trained.pairs[0][1].stages[1].run_hash}.json"
    summary = read_json(second)
    assert summary["machine"] == record.machine_name() and summary["machine"]
    second.write_text(json.dumps({**summary, "machine": "another CPU"}))
    assert record.recorded_results(runs, copy) == [None]


def test_a_tree_mixed_in_the_record_is_read_from_one_machines_retrained_summaries(recorded, tmp_path):
    """Where the record's summaries of a tree name two machines, the tree is read from one machine:
    its summaries in the record together with those of the runs it trained again
    (``retrained/<machine>/``), never a stage of a third machine; without such a machine it is trained."""
    import shutil

    from selftrain_lib import experiments as ex

    _, specs, trained, _, folder = recorded
    copy = tmp_path / "record"
    shutil.copytree(folder, copy)
    runs = list(ex.grid_run_kwargs(specs, "smoke").values())
    first, second = (copy / f"{r.run_hash}.json" for r in trained.pairs[0][1].stages)
    summary = read_json(second)
    second.write_text(json.dumps({**summary, "machine": "another CPU"}))    # the record: two machines
    assert record.recorded_results(runs, copy) == [None]
    third = copy / record.RETRAINED / record.machine_folder("a third CPU")
    third.mkdir(parents=True)
    (third / first.name).write_text(json.dumps({**read_json(first), "machine": "a third CPU"}))
    assert record.recorded_results(runs, copy) == [None]                    # stage 2 has no third-CPU summary
    other = copy / record.RETRAINED / record.machine_folder("another CPU")
    other.mkdir(parents=True)
    (other / first.name).write_text(json.dumps({**read_json(first), "machine": "another CPU", "metrics": {
        **read_json(first)["metrics"], "val_miou": 0.125}}))
    [result] = record.recorded_results(runs, copy)
    assert [Path(s.run_dir) for s in result.stages] == [other / first.name, second]
    assert result.stages[0].val_miou == 0.125                               # stage 1 as that machine had it
    (other / first.name).write_text(json.dumps({**read_json(other / first.name), "machine": "a third CPU"}))
    assert record.recorded_results(runs, copy) == [None]                    # a folder holding another machine's
