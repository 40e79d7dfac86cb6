"""One meaning of a label count (issue 23, item 4): ``--labels``, the notebooks' ``labels``, titles
and the explorer take the paper's count (or fraction), with the count used beside it; the run
hash keeps the count used; an old pool count still runs what it ran, with a notice; a count that
fits neither is an error naming the valid counts."""
from __future__ import annotations

import types

import pytest

from selftrain_lib import experiments as ex
from selftrain_lib import explore, label_counts
from selftrain_lib.cli import build_parser, main, run_kwargs
from selftrain_lib.config import load_config
from selftrain_lib.pipeline import resolve_run
from selftrain_lib.sweep import stage_hashes

from test_notebooks import _derived


def _cli(*argv):
    args = build_parser().parse_args(["run", *argv])
    kwargs = run_kwargs(args)
    return kwargs, args.label_choice


def test_one_scaling_function_serves_the_grids_and_the_lambda_table():
    assert label_counts.scale_count(100, 600, 3000) == 20
    assert label_counts.scale_count(100, 3000, 3000) == 100          # the default pool: as it is
    assert label_counts.scale_count(30, 96, 3000, minimum=2) == 2     # at least a batch's labelled share
    assert ex.scaled_labels("synth-objects", 150, "quick") == label_counts.scale_count(150, 600, 3000) == 30
    # by_labels is looked up through the same function: 30 of quick's 600 is 1/20 (row 150, λ 5/4)
    assert load_config("synth-objects", "quick", labels=30).lambda1 == 1.25
    assert load_config("synth-objects", "quick", labels=60).lambda1 == 0.25   # 60 of 600 stands for no row


@pytest.mark.parametrize("argv,used,text", [
    (["--labels", "100"], 20, "100 labels (20 used of quick's 600-image pool)"),
    (["--labels", "1/30"], 20, "100 labels (20 used of quick's 600-image pool)"),
    (["--labels", "372"], 75, "375 labels (75 used of quick's 600-image pool)"),        # Cityscapes' own number
    (["--labels", "1500", "--scale", "cpu"], 300, "1500 labels (300 used of cpu's 600-image pool)"),
    (["--dataset", "synth-objects", "--labels", "60"], 12, "60 labels (1/50, 12 used of quick's 600-image pool)"),
    (["--dataset", "synth-objects", "--labels", "1/50"], 12, "60 labels (1/50, 12 used of quick's 600-image pool)"),
    (["--dataset", "synth-objects", "--labels", "212"], 12, "60 labels (1/50, 12 used of quick's 600-image pool)"),
    (["--labels", "100", "--scale", "smoke"], 3, "100 labels (3 used of smoke's 96-image pool)"),
    (["--labels", "100", "--scale", "paper"], 100, "100 labels"),
    ([], 20, "100 labels (20 used of quick's 600-image pool)"),        # the params file's own count, named so
    (["--labels", "full"], "full", "full supervision (600 labels)"),
])
def test_cli_takes_the_papers_count_and_uses_its_share_of_the_pool(argv, used, text):
    kwargs, choice = _cli(*argv)
    assert kwargs["labels"] == used and choice.used == used and not choice.notice
    assert choice.text(kwargs["scale"]) == text


def test_cli_and_notebooks_train_the_same_run_for_the_same_count():
    for dataset, n in (("synth-street", 100), ("synth-objects", 60), ("synth-objects", 150)):
        kwargs, _ = _cli("--dataset", dataset, "--labels", str(n), "--scale", "quick")
        from_cli, _ = resolve_run(**kwargs)
        from_grid, _ = resolve_run(**ex.spec(dataset, n).run_kwargs("quick"))
        assert from_cli == from_grid, (dataset, n)


def test_the_run_hash_keeps_the_count_used():
    """``--labels 100`` at quick is the pinned run of 20 labels (tests/test_run_hashes.py)."""
    config, stages = resolve_run(**_cli("--dataset", "synth-street", "--labels", "100", "--scale", "quick")[0])
    assert config.labels == 20
    assert stage_hashes(config, stages) == ["7625141f3566daa8", "1447bea14299b5ee", "edf0a106ccbdd52d"]


def test_an_old_pool_count_runs_what_it_ran_before_with_a_notice():
    kwargs, choice = _cli("--dataset", "synth-street", "--labels", "20", "--scale", "quick")
    assert kwargs["labels"] == 20                                  # the same run (and hash) as before
    assert choice.notice == ("note: --labels 20 is not a paper count of synth-street, so it counts images of the "
                             "600-image pool at quick, as --labels did before it took the paper's counts; it is "
                             "the paper's 100 here: type --labels 100")
    assert choice.text("quick") == "100 labels (20 used of quick's 600-image pool)"
    kwargs, choice = _cli("--labels", "21")
    assert kwargs["labels"] == 21
    assert "it stands for none of the paper's counts 100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2" in choice.notice
    assert choice.text("quick") == "21 labels used of quick's 600-image pool"


@pytest.mark.parametrize("value", ["700", "1/7", "-5", "0"])
def test_a_count_neither_the_papers_nor_the_pools_is_an_error_naming_the_valid_counts(value):
    with pytest.raises(ValueError) as err:
        _cli("--labels", value)
    assert str(err.value) == (
        f"labels: {int(value) if value.lstrip('-').isdigit() else repr(value)} is not a label count of synth-street: "
        "give one of the paper's counts 100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2, scaled to the pool at quick, "
        "or a count of the pool between 1 and 600, or 'full'")


def test_the_command_line_prints_the_count_and_the_notice(monkeypatch, capsys, tmp_path):
    """What ``run`` prints before training (training itself is replaced: nothing trains)."""
    import selftrain_lib.pipeline as pipeline

    seen = {}

    def fake_run_stages(config, stages, out, progress=True, keys=None):
        seen["labels"] = config.labels
        return types.SimpleNamespace(stages=[], config=config, summary=lambda: {})

    monkeypatch.setattr(pipeline, "run_stages", fake_run_stages)
    assert main(["run", "--labels", "20", "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert seen["labels"] == 20
    assert err[0].startswith("note: --labels 20 is not a paper count of synth-street")
    assert err[1] == "synth-street · 100 labels (20 used of quick's 600-image pool)"
    assert main(["run", "--labels", "full", "--stages", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().err.splitlines() == ["synth-street · full supervision (600 labels)"]


def test_titles_name_the_papers_count_and_the_count_used():
    assert ex.label_text("synth-street", 100, "quick") == "100 labels (20 used)"
    assert ex.label_text("synth-objects", 60, "quick") == "60 labels (1/50, 12 used)"
    assert ex.label_text("synth-street", 100, "paper") == "100 labels"
    assert ex.label_text("synth-street", "full", "quick") == "full supervision"
    assert ex.spec("synth-street", "1/30").labels == 100
    assert ex.spec("synth-street", 100).describe("quick").startswith("synth-street · 100 labels (20 used at quick)")
    from selftrain_lib.results import setting_text   # the notebooks' figure titles and captions

    assert setting_text([("synth-street", 20, "100"), ("synth-objects", 12, "1/50")], "quick", [0]) == (
        "synth-street (Cityscapes stand-in), 100 labels (20 used); synth-objects (PASCAL VOC 2012 stand-in), "
        "labels 1/50 (12 used); scale quick; 1 seed [0]")
    assert setting_text([("synth-street", 600, "2975")], "quick", [0]).startswith(
        "synth-street (Cityscapes stand-in), full supervision (600 images)")
    with pytest.raises(ValueError, match=r"labels: '1/7' is not one of synth-street's paper counts or fractions "
                                         r"\(100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2\)"):
        ex.spec("synth-street", "1/7")


def test_notebooks_take_the_papers_fraction(tmp_path):
    space = _derived("stage1", tmp_path, labels="1/30")
    assert space["spec"].labels == 100 and space["spec"].run_kwargs("quick")["labels"] == 20


def _row(labels, stage=1, method="three-stage", pool_size=600, dataset="synth-street", **kw):
    return types.SimpleNamespace(dataset=dataset, labels=labels, pool_size=pool_size, seed=0, method=method,
                                 stage=stage, lambda1=0.5, scale="quick", **kw)


def test_the_explorer_names_full_supervision_and_the_papers_count():
    assert explore.run_label(_row(600)) == "synth-street · full supervision · seed 0 · stage 1 (quick)"
    assert explore.run_label(_row(96, pool_size=96)).startswith("synth-street · full supervision · seed 0 · stage 1")
    assert explore.run_label(_row(20, stage=3)) == \
        "synth-street · 100 labels (20 used) · seed 0 · three-stage λ=0.5 · stage 3 (quick)"
    assert explore.run_label(_row(12, dataset="synth-objects", method="mt-cutmix")) == \
        "synth-objects · 60 labels (1/50, 12 used) · seed 0 · mt-cutmix · stage 1 (quick)"
    assert explore.row_title(_row(21), True) == "three-stage\n21 labels used · seed 0\nlabelled"
    assert explore.labels_text("synth-street", 100, None) == "100 labels"      # the paper scale: 3,000 images
    assert explore.labels_text("voc", 212, None) == "212 labels (1/50)"          # read from files: not scaled
