"""A run cache that is safe to share (issue 24): a planted checkpoint never runs code, an error or
a clean-up never deletes what the project did not write, a tampered finished run is not reused,
and a damaged cache file or a full disk is an error naming the file."""
from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from selftrain_lib.config import load_config
from selftrain_lib.runs import clean_interrupted_writes, config_hash, read_pseudo_mask
from selftrain_lib.stage import run_stage
from selftrain_lib.train.run_key import stage_run_key


def _config(**kw):
    return load_config("synth-street", "smoke", **{"stage1_steps": 2, **kw})


def _run_dir(out, config):
    return out / config_hash(stage_run_key(config, 1, None))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished smoke Stage 1 run (2 steps); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("finished")
    return run_stage(_config(), 1, out=out, progress=False)


def _copy(finished, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(finished.run_dir, out / finished.run_hash, symlinks=True)
    return out, out / finished.run_hash


# ------------------------------------------------------------------------------------------
# item 1: a planted checkpoint never runs code; item 13: an incompatible one is set aside
# ------------------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling calls os.mkdir(marker): code from the file
        return os.mkdir, (self.marker,)


@pytest.mark.slow
def test_a_planted_checkpoint_never_runs_code(tmp_path, capsys):
    config = _config()
    run_dir = _run_dir(tmp_path, config)
    run_dir.mkdir()
    marker = tmp_path / "payload-ran"
    torch.save({"step": 1, "model": _Payload(marker)}, run_dir / "checkpoint.pt")
    result = run_stage(config, 1, out=tmp_path, progress=False)
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"{run_dir / 'checkpoint.pt'}: unreadable checkpoint" in err and "never unpickled" in err
    assert len(list(run_dir.glob("checkpoint.pt.corrupt-*"))) == 1
    assert not result.reused and result.metrics["steps"] == 2


@pytest.mark.slow
def test_an_incompatible_checkpoint_is_set_aside_and_the_stage_trains_from_step_0(tmp_path, finished, capsys):
    config = _config()
    run_dir = _run_dir(tmp_path, config)
    run_dir.mkdir()
    model = torch.load(finished.run_dir / "model.pt", weights_only=True)
    wrong = {k: torch.zeros(tuple(s + 1 for s in v.shape)) for k, v in model.items()}  # readable, other shapes
    torch.save({"step": 1, "model": wrong, "optimizer": {}, "teacher": None, "rows": [], "sums": {}, "elapsed": 1.0},
               run_dir / "checkpoint.pt")
    result = run_stage(config, 1, out=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert f"{run_dir / 'checkpoint.pt'}: checkpoint does not fit this run (RuntimeError" in err
    assert len(list(run_dir.glob("checkpoint.pt.incompatible-*"))) == 1
    a = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], model[k]) for k in a)  # trained from step 0, as the first time


@pytest.mark.slow
def test_a_checkpoint_with_other_optimiser_moments_is_set_aside(tmp_path, interrupt_at_step, capsys):
    config = _config(stage1_steps=4, checkpoint_every=2)
    crash = interrupt_at_step(3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, 1, out=tmp_path / "runs", progress=False)
    crash.restore()
    ckpt_path = _run_dir(tmp_path / "runs", config) / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    for state in ckpt["optimizer"]["state"].values():
        state["exp_avg"] = torch.zeros(state["exp_avg"].numel() + 1)
    torch.save(ckpt, ckpt_path)
    result = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert "checkpoint does not fit this run (ValueError: optimizer state 'exp_avg' of shape" in capsys.readouterr().err
    reference = run_stage(config, 1, out=tmp_path / "ref", progress=False)
    a = torch.load(result.run_dir / "model.pt", weights_only=True)
    b = torch.load(reference.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_checkpoint_past_the_last_step_is_set_aside(tmp_path, capsys):
    config = _config()
    run_dir = _run_dir(tmp_path, config)
    run_dir.mkdir()
    torch.save({"step": 10 ** 9, "model": {}, "optimizer": {}, "teacher": None, "rows": [], "sums": {},
                "elapsed": 1.0}, run_dir / "checkpoint.pt")
    assert run_stage(config, 1, out=tmp_path, progress=False).metrics["steps"] == 2
    assert "unusable checkpoint (step 1000000000 is not a step of this run (0..2))" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# item 3: an error never deletes a folder this attempt did not make
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_error_after_a_stale_run_was_set_aside_keeps_its_folder(tmp_path, finished, monkeypatch):
    from selftrain_lib import stage as stage_mod

    out, run_dir = _copy(finished, tmp_path)
    next(iter((run_dir / "pseudo_masks").glob("*.png"))).unlink()  # metrics.json is set aside: trained again

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(stage_mod, "compute_losses", broken)
    with pytest.raises(RuntimeError, match="boom"):
        run_stage(_config(), 1, out=out, progress=False)
    assert (run_dir / "model.pt").is_file() and len(list((run_dir / "pseudo_masks").glob("*.png"))) == 95
    assert len(list(run_dir.glob("metrics.json.incomplete-*"))) == 1
    assert (run_dir / "error.txt").read_text() == "RuntimeError: boom\n"


@pytest.mark.slow
def test_an_error_in_a_linked_run_folder_keeps_its_files(tmp_path, monkeypatch):
    from selftrain_lib import stage as stage_mod

    config = _config()
    target = tmp_path / "mine"
    (target / ".git").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (tmp_path / "runs").mkdir()
    _run_dir(tmp_path / "runs", config).symlink_to(target)
    monkeypatch.setattr(stage_mod, "compute_losses", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert (target / ".git").is_dir() and (target / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------
# item 4: the clean-up of interrupted writes removes only what the project wrote
# ------------------------------------------------------------------------------------------

def test_cleaning_interrupted_writes_keeps_other_dot_entries(tmp_path):
    target = tmp_path / "repo"
    (target / ".git").mkdir(parents=True)
    (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (target / ".env").write_text("SECRET=1\n")
    (target / ".checkpoint.pt.notes").write_text("mine")  # a dot-name, but not the writers'
    (target / ".selftrain-tmp.checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"x")
    (target / ".selftrain-tmp.pseudo_masks.a1b2c3d4").mkdir()
    (target / ".metrics.json.k2j3ab_9.tmp").write_bytes(b"x")  # an older version's leftover
    link = tmp_path / "run"
    link.symlink_to(target)
    removed = clean_interrupted_writes(link)
    assert sorted(p.name for p in removed) == [".metrics.json.k2j3ab_9.tmp", ".selftrain-tmp.checkpoint.pt.a1b2c3d4.tmp",
                                               ".selftrain-tmp.pseudo_masks.a1b2c3d4"]
    assert sorted(p.name for p in target.iterdir()) == [".checkpoint.pt.notes", ".env", ".git"]
    assert (target / ".git" / "HEAD").is_file()


def test_temporary_files_carry_the_projects_prefix(tmp_path, monkeypatch):
    from selftrain_lib import runs

    seen = []
    real = runs.os.replace
    monkeypatch.setattr(runs.os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real(a, b))[1])
    runs.atomic_write_text(tmp_path / "x.json", "{}")
    with runs.atomic_directory(tmp_path / "pseudo_masks") as d:
        (d / "a.png").write_bytes(b"")
    assert len(seen) == 2 and all(n.startswith(runs.TMP_PREFIX) for n in seen)


# ------------------------------------------------------------------------------------------
# item 8: a tampered finished run is set aside (never deleted) and trained again
# ------------------------------------------------------------------------------------------

def _replace_model(run_dir):
    state = torch.load(run_dir / "model.pt", weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, run_dir / "model.pt")
    return "model.pt", "model.pt"


def _delete_config(run_dir):
    (run_dir / "config.json").unlink()
    return "config.json", None


def _edit_metric(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    m["val"]["miou"] = 0.99
    (run_dir / "metrics.json").write_text(json.dumps(m))
    return "metrics.json", None


def _empty_metrics(run_dir):
    (run_dir / "metrics.json").write_text("{}")
    return "metrics.json", None


def _edit_mask(run_dir):
    png = sorted((run_dir / "pseudo_masks").glob("*.png"))[3]
    Image.fromarray(np.zeros((64, 128), np.uint8), mode="L").save(png)
    return f"pseudo_masks/{png.name}", "pseudo_masks"


def _delete_manifest(run_dir):
    (run_dir / "manifest.json").unlink()
    return "manifest.json", None


def _manifest_names_an_outside_file(run_dir):
    victim = run_dir.parent.parent / "victim.txt"
    victim.write_text("mine")
    m = json.loads((run_dir / "manifest.json").read_text())
    m["sha256"]["../../victim.txt"] = "0" * 64
    (run_dir / "manifest.json").write_text(json.dumps(m))
    return "manifest.json", "manifest.json"


@pytest.mark.slow
@pytest.mark.parametrize("tamper", [_replace_model, _delete_config, _edit_metric, _empty_metrics, _edit_mask,
                                    _delete_manifest, _manifest_names_an_outside_file])
def test_a_tampered_run_is_set_aside_and_trained_again(tamper, tmp_path, finished, capsys):
    out, run_dir = _copy(finished, tmp_path)
    changed, aside = tamper(run_dir)
    again = run_stage(_config(), 1, out=out, progress=False)
    err = capsys.readouterr().err
    assert not again.reused
    assert f"warning: {run_dir / 'metrics.json'}: the run's files are not those it finished with" in err
    assert str(run_dir / changed) in err  # names the file that changed
    assert len(list(run_dir.glob("metrics.json.changed-*"))) == 1  # kept, renamed
    if aside is not None:
        assert len(list(run_dir.glob(f"{aside}.changed-*"))) == 1
    assert again.val_miou == finished.val_miou  # trained again: the same run
    assert run_stage(_config(), 1, out=out, progress=False).reused  # and now reused
    if tamper is _manifest_names_an_outside_file:
        assert (tmp_path / "victim.txt").read_text() == "mine"  # never touched


# ------------------------------------------------------------------------------------------
# item 13: damaged pseudo-masks and a full disk are errors naming the file
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (Image.new("L", (5, 4)), r"pseudo-mask size 5x4 \(WxH\) differs from its image 128x64"),
    (Image.new("RGB", (128, 64)), r"a pseudo-mask must be an 8-bit single-channel PNG \(mode L\), got mode RGB"),
    (Image.fromarray(np.full((64, 128), 200, np.uint8), mode="L"),
     r"pseudo-mask values \[200\] are not classes \[0, 9\) nor the ignore value 255"),
    (None, r"cannot read this pseudo-mask"),
])
def test_a_damaged_pseudo_mask_is_named(tmp_path, bad, message):
    png = tmp_path / "train_00003.png"
    if bad is None:
        png.write_text("not a png")
    else:
        bad.save(png)
    with pytest.raises(ValueError, match=rf"train_00003\.png: {message}"):
        read_pseudo_mask(png, (64, 128), 9, 255)


@pytest.mark.slow
def test_stage_2_names_a_damaged_pseudo_mask_before_training(tmp_path, finished, monkeypatch):
    from selftrain_lib import stage as stage_mod
    from selftrain_lib.train.run_folder import PseudoMasks

    masks = tmp_path / "pseudo_masks"
    shutil.copytree(finished.run_dir / "pseudo_masks", masks)
    Image.new("RGB", (128, 64)).save(masks / "train_00007.png")
    monkeypatch.setattr(stage_mod, "compute_losses", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"pseudo_masks/train_00007\.png: .* got mode RGB"):
        run_stage(_config(steps=1), 2, PseudoMasks(masks, finished.run_hash, 1), out=tmp_path / "runs",
                  progress=False)


def test_a_full_disk_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    from selftrain_lib import runs

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full)
    with pytest.raises(runs.DiskFullError, match=rf"writing {tmp_path / 'cache' / 'model.pt'} \(0.0 MiB\): "
                                                 r"[0-9.]+ MiB free there"):
        runs.atomic_torch_save(tmp_path / "cache" / "model.pt", {"w": torch.zeros(3)})
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary file left


@pytest.mark.slow
def test_a_full_disk_during_a_run_names_the_run_folder(tmp_path, monkeypatch):
    from selftrain_lib import runs

    config = _config()
    monkeypatch.setattr(runs.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(OSError, match=rf"no space left on the device writing {_run_dir(tmp_path, config)}/config\.json"):
        run_stage(config, 1, out=tmp_path, progress=False)


@pytest.mark.slow
def test_a_sweep_plans_a_tampered_run_again(tmp_path, finished, capsys):
    from selftrain_lib.sweep import plan

    out, run_dir = _copy(finished, tmp_path)
    runs = [dict(dataset="synth-street", scale="smoke", stage1_steps=2, stages=1)]
    assert plan(runs, out) == []  # finished and intact
    _edit_metric(run_dir)
    assert [j.run_hash for j in plan(runs, out)] == [finished.run_hash]
    assert f"{run_dir / 'metrics.json'} changed since the run finished" in capsys.readouterr().err


@pytest.mark.slow
def test_a_folder_where_the_run_writes_a_file_is_set_aside(tmp_path, capsys):
    config = _config()
    run_dir = _run_dir(tmp_path, config)
    (run_dir / "model.pt").mkdir(parents=True)
    (run_dir / "model.pt" / "keep.txt").write_text("mine")
    (run_dir / "checkpoint.pt").symlink_to(tmp_path / "elsewhere.pt")
    result = run_stage(config, 1, out=tmp_path, progress=False)
    assert (result.run_dir / "model.pt").is_file() and not result.reused
    (kept,) = run_dir.glob("model.pt.not-a-file-*")
    assert (kept / "keep.txt").read_text() == "mine"
    assert f"{run_dir / 'model.pt'}: the run writes a file here" in capsys.readouterr().err


def test_a_linked_train_log_or_tensorboard_folder_is_set_aside_not_written_through(tmp_path, capsys):
    """In a shared cache, links planted as ``train.log`` / ``tensorboard/`` would make the next
    user's run append to, and write event files into, whatever they point at."""
    config = _config()
    run_dir = _run_dir(tmp_path, config)
    victim = tmp_path / "victim"
    (victim / "tb").mkdir(parents=True)
    (victim / "notes.txt").write_text("mine\n")
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").symlink_to(victim / "notes.txt")
    (run_dir / "tensorboard").symlink_to(victim / "tb")
    run_stage(config, 1, out=tmp_path, progress=False)
    assert (victim / "notes.txt").read_text() == "mine\n" and not any((victim / "tb").iterdir())
    assert (run_dir / "train.log").is_file() and not (run_dir / "train.log").is_symlink()
    assert not (run_dir / "tensorboard").is_symlink()
    err = capsys.readouterr().err
    assert f"{run_dir / 'train.log'}: the run writes a file here" in err
    assert f"{run_dir / 'tensorboard'}: the run writes its TensorBoard events here" in err


def test_a_linked_run_folder_starting_afresh_sets_aside_what_it_would_overwrite(tmp_path, capsys):
    """A run folder linked into a folder of the user's: their config.json, model.pt, error.txt
    and pseudo_masks/ are set aside (renamed), never overwritten or replaced."""
    config = _config()
    target = tmp_path / "proj"
    (target / "pseudo_masks").mkdir(parents=True)
    for name in ("config.json", "model.pt", "error.txt", "pseudo_masks/mine.txt"):
        (target / name).write_text(f"my {name}")
    (tmp_path / "runs").mkdir()
    _run_dir(tmp_path / "runs", config).symlink_to(target)
    run_stage(config, 1, out=tmp_path / "runs", progress=False)
    for name in ("config.json", "model.pt", "error.txt"):
        (kept,) = target.glob(f"{name}.kept-*")
        assert kept.read_text() == f"my {name}"
    (kept,) = target.glob("pseudo_masks.kept-*")
    assert (kept / "mine.txt").read_text() == "my pseudo_masks/mine.txt"
    assert (target / "model.pt").read_bytes() != b"my model.pt" and (target / "metrics.json").is_file()
    assert "a linked run folder starting afresh holds this" in capsys.readouterr().err
