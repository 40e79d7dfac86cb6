"""End to end at smoke scale: three stages, the run cache, resume, and the hidden ground truth of U."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selftrain_lib
from selftrain_lib.config import load_config
from selftrain_lib.data import load_data
from selftrain_lib.pipeline import run
from selftrain_lib.stage import run_stage


def _weights(result):
    return torch.load(result.run_dir / "model.pt", weights_only=True)


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return out, selftrain_lib.run(dataset="synth-street", scale="smoke", stages=3, out=out, progress=False)


def test_three_stages_leave_complete_run_folders(smoke_runs):
    out, result = smoke_runs
    assert [r.stage for r in result.stages] == [1, 2, 3]
    hashes = [r.run_hash for r in result.stages]
    assert len(set(hashes)) == 3
    for r, parent in zip(result.stages, [None] + hashes[:2]):
        assert r.run_dir.parent == out and r.run_dir.name == r.run_hash
        assert r.metrics["pseudo_masks_from"] == parent
        for name in ("config.json", "metrics.json", "curves.csv", "model.pt", "val_samples.npz"):
            assert (r.run_dir / name).is_file(), name
        assert not (r.run_dir / "checkpoint.pt").exists()
        assert 0.0 <= r.val_miou <= 1.0 and 0.0 <= r.pseudo_miou <= 1.0
        assert "last step" in r.metrics["protocol"]
        pngs = sorted((r.run_dir / "pseudo_masks").glob("*.png"))
        assert len(pngs) == 96
        m = np.asarray(Image.open(pngs[0]))
        assert m.dtype == np.uint8 and m.shape == (64, 128) and m.max() < r.metrics["num_classes"]
        curves = r.curves()
        assert {"step", "loss", "loss_seg", "val_miou"} <= set(curves.columns)
        assert curves["step"].iloc[-1] == r.metrics["steps"]
        assert np.isfinite(curves["loss"]).all()
        saved = json.loads((r.run_dir / "config.json").read_text())
        assert saved["config"]["labels"] == 12 and saved["stage"] == r.stage
    stage2 = result.stages[1].curves()
    assert {"loss_con", "loss_pl"} <= set(stage2.columns) and stage2["loss_pl"].notna().all()
    assert list(out.glob("**/*.tmp")) == []
    split = out / "splits" / "synth-street_12_seed0.txt"
    assert len(split.read_text().split()) == 12
    summary = result.summary()
    assert set(summary["stages"]) == {"1", "2", "3"}


def test_finished_runs_are_reused(smoke_runs):
    out, first = smoke_runs
    again = run(dataset="synth-street", scale="smoke", stages=3, out=out, progress=False)
    assert all(r.reused for r in again.stages)
    assert [r.metrics for r in again.stages] == [r.metrics for r in first.stages]


def test_a_fourth_stage_uses_the_third_stage_masks(smoke_runs):
    out, first = smoke_runs
    four = run(dataset="synth-street", scale="smoke", stages=4, out=out, progress=False)
    assert [r.reused for r in four.stages] == [True, True, True, False]
    assert four.stages[3].metrics["pseudo_masks_from"] == first.stages[2].run_hash


def test_same_seed_same_numbers_other_seed_other_numbers(smoke_runs, tmp_path):
    _, first = smoke_runs
    again = run(dataset="synth-street", scale="smoke", stages=1, out=tmp_path / "a", progress=False)
    assert not again.stages[0].reused and _same_weights(again.stages[0], first.stages[0])
    other = run(dataset="synth-street", scale="smoke", stages=1, out=tmp_path / "b", progress=False, seed=1)
    assert not _same_weights(other.stages[0], first.stages[0])


def test_interrupted_run_resumes_to_the_same_weights(smoke_runs, tmp_path, interrupt_at_step):
    _, first = smoke_runs
    config = load_config("synth-street", "smoke")
    masks = first.stages[0].pseudo_masks
    reference = first.stages[1]  # stage 2, trained without interruption (teacher, branch, Adam state)

    crash = interrupt_at_step(5)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, 2, masks, out=tmp_path, progress=False)
    ckpt = tmp_path / reference.run_hash / "checkpoint.pt"
    assert ckpt.is_file() and torch.load(ckpt, weights_only=True)["step"] == 3
    assert not (tmp_path / reference.run_hash / "metrics.json").exists()
    crash.restore()
    resumed = run_stage(config, 2, masks, out=tmp_path, progress=False)
    assert not resumed.reused
    assert _same_weights(resumed, reference)
    assert resumed.curves()["loss"].tolist() == pytest.approx(reference.curves()["loss"].tolist())


def test_unlabelled_ground_truth_never_reaches_a_loss(smoke_runs, tmp_path):
    """Scrambling U's ground truth changes nothing that training computes, only the pseudo-mask score."""
    _, first = smoke_runs
    config = load_config("synth-street", "smoke")
    data = load_data(config)
    from selftrain_lib.stage import select_split

    split = select_split(config, data, tmp_path)
    scrambled = load_data(config)
    g = torch.Generator().manual_seed(123)
    u = split.unlabelled
    scrambled.train_masks[u] = torch.randint(0, data.info.num_classes, scrambled.train_masks[u].shape, generator=g, dtype=torch.uint8)
    assert torch.equal(scrambled.train_masks[split.labelled], data.train_masks[split.labelled])

    s1 = run_stage(config, 1, out=tmp_path / "s", progress=False, data=scrambled)
    s2 = run_stage(config, 2, s1.pseudo_masks, out=tmp_path / "s", progress=False, data=scrambled)
    for mine, ref in ((s1, first.stages[0]), (s2, first.stages[1])):
        assert _same_weights(mine, ref)
        assert mine.val_miou == ref.val_miou
        assert mine.pseudo_miou != ref.pseudo_miou  # the hidden truth is what it is measured against


def test_a_pipeline_reads_the_data_identity_once(smoke_runs, monkeypatch):
    """The run keys are computed once, in the pipeline, and passed down: the data's identity (which
    stats every file of a dataset read from files) is read once per pipeline run, not twice per stage."""
    from selftrain_lib.train import run_key

    out, first = smoke_runs
    calls = []
    real = run_key.data_identity
    monkeypatch.setattr(run_key, "data_identity", lambda config: calls.append(config.dataset) or real(config))
    again = run(dataset="synth-street", scale="smoke", stages=3, out=out, progress=False)
    assert calls == ["synth-street"]
    assert [r.run_hash for r in again.stages] == [r.run_hash for r in first.stages]


def test_the_cli_computes_the_run_keys_once(smoke_runs, monkeypatch, capsys):
    """``python -m selftrain_lib run`` names the run to resume on an interruption and trains the
    stages under the same keys: the data's identity is read once for the three stages (was: once
    for the interruption message, once more in the pipeline)."""
    from selftrain_lib.cli import main
    from selftrain_lib.train import run_key

    out, first = smoke_runs
    calls = []
    real = run_key.data_identity
    monkeypatch.setattr(run_key, "data_identity", lambda config: calls.append(config.dataset) or real(config))
    assert main(["run", "--dataset", "synth-street", "--scale", "smoke", "--stages", "3", "--out", str(out),
                 "--no-progress"]) == 0
    assert calls == ["synth-street"]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in printed] == [str(r.run_dir) for r in first.stages]
    assert all("(reused)" in line for line in printed)


def test_run_stages_refuses_keys_of_another_chain_length(smoke_runs):
    from selftrain_lib.pipeline import run_keys, run_stages

    out, _ = smoke_runs
    config = load_config("synth-street", "smoke")
    with pytest.raises(ValueError, match="keys: 2 run keys given for 3 stages"):
        run_stages(config, 3, out, progress=False, keys=run_keys(config, 2))


def test_run_stage_alone_finds_the_run_the_pipeline_keyed(smoke_runs):
    from selftrain_lib.train.run_key import stage_run_keys

    out, first = smoke_runs
    config = load_config("synth-street", "smoke")
    keys = stage_run_keys(config, 3)
    for k, key in ((2, None), (2, keys[1]), (3, keys[2])):
        result = run_stage(config, k, first.stages[k - 2].pseudo_masks, out=out, progress=False, key=key)
        assert result.reused and result.run_hash == first.stages[k - 1].run_hash


def test_a_run_key_of_another_stage_is_refused(smoke_runs):
    from selftrain_lib.train.run_key import stage_run_keys

    out, first = smoke_runs
    config = load_config("synth-street", "smoke")
    keys = stage_run_keys(config, 3)
    with pytest.raises(ValueError, match=rf"key: a run key of stage 1 after None .* given for stage 2 after "
                                         rf"{first.stages[0].run_hash}"):
        run_stage(config, 2, first.stages[0].pseudo_masks, out=out, progress=False, key=keys[0])
    with pytest.raises(ValueError, match=rf"key: a run key of stage 3 after {first.stages[1].run_hash} .* "
                                         rf"given for stage 3 after {first.stages[0].run_hash}"):
        run_stage(config, 3, first.stages[0].pseudo_masks, out=out, progress=False, key=keys[2])


def test_stage_two_needs_pseudo_masks():
    with pytest.raises(ValueError, match="pseudo-masks"):
        run_stage(load_config("synth-street", "smoke"), 2, None)


def test_cli_json_last_line(tmp_path):
    cmd = [sys.executable, "-m", "selftrain_lib", "run", "--dataset", "synth-objects", "--scale", "smoke",
           "--labels", "8", "--stages", "2", "--no-ema", "--lambda1", "0.3", "--out", str(tmp_path), "--json",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["stages"]) == {"1", "2"}
    s2 = summary["stages"]["2"]
    assert Path(s2["run_dir"]).is_dir() and 0 <= s2["val_miou"] <= 1 and 0 <= s2["pseudo_miou"] <= 1
    saved = json.loads((Path(s2["run_dir"]) / "config.json").read_text())["config"]
    assert saved["ema"] is False and saved["lambda1"] == 0.3 and saved["dataset"] == "synth-objects"


def test_cli_bad_value_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selftrain_lib", "run", "--scale", "smoke", "--lambda1", "-1",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "lambda1" in proc.stderr
