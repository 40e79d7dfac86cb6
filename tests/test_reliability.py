"""Reliability (issue 13): the run cache never serves a stale or leaked result, and a bad input
fails early with an error naming the file, key or value."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from selftrain_lib.config import load_config
from selftrain_lib.train.run_key import stage_run_key
from selftrain_lib.runs import config_hash
from selftrain_lib.sweep import stage_hashes
from test_real_data import FOLDER_YAML, make_folder


def _leaves(tmp_path, root=None, **overrides):
    p = tmp_path / "leaves.yaml"
    p.write_text(FOLDER_YAML)
    root = root or make_folder(tmp_path / "mine")
    return load_config("leaves", "smoke", params=p, data_root=str(root), **overrides)


# ------------------------------------------------------------------------------------------
# 1. inputs hashed by content
# ------------------------------------------------------------------------------------------

def test_split_file_enters_the_hash_by_its_ids(tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("".join(f"train_{i:05d}\n" for i in range(12, 24)))
    config = load_config("synth-street", "smoke", split_file=str(split))  # 12 labels
    others = stage_hashes(config, 2)
    split.write_text("".join(f"train_{i:05d}\n" for i in range(12)))  # edited in place: same path
    twelve = stage_hashes(config, 2)
    assert twelve[0] != others[0] and twelve[1] != others[1]
    split.write_text("# reordered, with a comment\n" + "".join(f"train_{i:05d}\n" for i in reversed(range(12))))
    assert stage_hashes(config, 2) == twelve  # a split is a set of ids
    other = tmp_path / "elsewhere.txt"
    other.write_text(split.read_text())
    assert stage_hashes(config.replace(split_file=str(other)), 2) == twelve  # the path itself does not matter


def test_pretrained_file_enters_the_hash_by_its_digest(tmp_path):
    from selftrain_lib.models import build_segmenter

    config = load_config("synth-street", "smoke")
    weights = tmp_path / "w.pt"
    net = build_segmenter("deeplabv2-small", 9, widths=tuple(config.widths))
    torch.save(net.state_dict(), weights)
    first = stage_hashes(config.replace(pretrained=str(weights)), 1)
    torch.save({k: v + 1 for k, v in net.state_dict().items()}, weights)
    assert stage_hashes(config.replace(pretrained=str(weights)), 1) != first


def test_data_root_enters_the_hash_by_its_files(tmp_path):
    config = _leaves(tmp_path)
    first = stage_hashes(config, 1)
    assert stage_hashes(config, 1) == first  # deterministic
    other = make_folder(tmp_path / "other", h=6, w=8)  # another folder, same layout
    (other / "images" / "img1.png").write_bytes((other / "images" / "img2.png").read_bytes() + b"x")
    assert stage_hashes(config.replace(data_root=str(other)), 1) != first
    img = tmp_path / "mine" / "images" / "img0.png"
    later = time.time() + 10
    os.utime(img, (later, later))  # replaced in place (same size, new mtime)
    assert stage_hashes(config, 1) != first


def test_generator_digest_enters_generated_datasets_only(tmp_path, monkeypatch):
    from selftrain_lib.data.synthetic import spec

    street = load_config("synth-street", "smoke")
    leaves = _leaves(tmp_path)
    on_synthetic = leaves.replace(pretrained="synthetic")
    before = stage_hashes(street, 1), stage_hashes(leaves, 1), stage_hashes(on_synthetic, 1)
    monkeypatch.setattr(spec, "GENERATOR_DIGEST", "v9-edited")
    assert stage_hashes(street, 1) != before[0]
    assert stage_hashes(leaves, 1) == before[1]  # pretrained: none, a folder dataset
    # the synthetic pre-training is built by the generator: runs starting from it depend on it
    assert stage_hashes(on_synthetic, 1) != before[2]


@pytest.mark.slow
def test_labelled_ids_are_recorded_in_the_run(tmp_path):
    from selftrain_lib.stage import run_stage

    split = tmp_path / "split.txt"
    split.write_text("train_00005\ntrain_00001\n")
    config = load_config("synth-street", "smoke", split_file=str(split), labels=2, stage1_steps=1)
    result = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert (result.run_dir / "labelled_ids.txt").read_text() == "# 2 labelled of a pool of 96\ntrain_00001\ntrain_00005\n"


# ------------------------------------------------------------------------------------------
# 2. one process per run
# ------------------------------------------------------------------------------------------

_TRAIN_ONE = """
import json, sys
from selftrain_lib.config import load_config
from selftrain_lib.stage import run_stage
config = load_config("synth-street", "smoke", stage1_steps=150, eval_every=150, num_threads=1)
r = run_stage(config, 1, out=sys.argv[1], progress=False)
print(json.dumps({"reused": r.reused, "hash": r.run_hash}))
"""


@pytest.mark.slow
def test_two_processes_finishing_the_same_run(tmp_path):
    """Two processes start the same run at once: one trains, the other waits for it and reuses it."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN_ONE, str(tmp_path / "runs")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert results[0]["hash"] == results[1]["hash"]
    assert sorted(r["reused"] for r in results) == [False, True]  # trained once
    run_dir = tmp_path / "runs" / results[0]["hash"]
    assert len(list((run_dir / "pseudo_masks").glob("*.png"))) == 96


@pytest.mark.slow
def test_a_finished_run_with_missing_masks_is_trained_again(tmp_path):
    from selftrain_lib.stage import run_stage

    config = load_config("synth-street", "smoke", stage1_steps=2)
    first = run_stage(config, 1, out=tmp_path, progress=False)
    next(iter((first.run_dir / "pseudo_masks").glob("*.png"))).unlink()
    again = run_stage(config, 1, out=tmp_path, progress=False)
    assert not again.reused and len(list((again.run_dir / "pseudo_masks").glob("*.png"))) == 96
    assert len(list(first.run_dir.glob("metrics.json.incomplete-*"))) == 1
    assert run_stage(config, 1, out=tmp_path, progress=False).reused


# ------------------------------------------------------------------------------------------
# 3. non-finite values
# ------------------------------------------------------------------------------------------

def _float_keys():
    import typing

    from selftrain_lib.config import Config

    hints = typing.get_type_hints(Config)
    return sorted(k for k, t in hints.items() if t is float or typing.get_args(t)[:1] == (float,))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10 ** 400])
@pytest.mark.parametrize("key", _float_keys())
def test_non_finite_config_values_are_rejected(key, value):
    from selftrain_lib.config import Config, ConfigError

    default = getattr(Config, key)
    bad = value if not isinstance(default, tuple) else (value,) * len(default)
    with pytest.raises(ConfigError, match=rf"^{key}: expected a finite number"):
        load_config("synth-street", "smoke", **{key: bad})


def test_float_keys_cover_the_method_weights():
    assert {"lr", "lambda1", "lambda2", "ema_decays", "scale_range", "cons_weight"} <= set(_float_keys())


@pytest.mark.slow
def test_a_run_whose_loss_becomes_nan_stops_without_metrics(tmp_path, monkeypatch):
    from selftrain_lib import stage as stage_mod
    from selftrain_lib.stage import NonFiniteLossError, run_stage

    real = stage_mod.compute_losses
    calls = {"n": 0}

    def nan_from_the_third_step(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        if calls["n"] >= 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(stage_mod, "compute_losses", nan_from_the_third_step)
    config = load_config("synth-street", "smoke")
    with pytest.raises(NonFiniteLossError, match=r"stage 1 run .*non-finite at step 3 \(loss=nan\)"):
        run_stage(config, 1, out=tmp_path, progress=False)
    assert not list(tmp_path.glob("*/metrics.json")) and not list(tmp_path.glob("*/pseudo_masks"))
    assert not list(tmp_path.glob("*/checkpoint.pt"))  # checkpoint_every=3: checked before it was written


# ------------------------------------------------------------------------------------------
# 4. killing a parallel sweep
# ------------------------------------------------------------------------------------------

_SWEEP = """
import sys
from selftrain_lib.sweep import run_parallel
runs = [dict(dataset="synth-street", scale="smoke", seed=s, stages=1, stage1_steps=100000) for s in (0, 1)]
run_parallel(runs, out=sys.argv[1], jobs=2, progress=False)
"""


def _children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``, from /proc."""
    out = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(stat))
    return out


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_killing_a_parallel_sweep_ends_its_workers(tmp_path):
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    sweep = subprocess.Popen([sys.executable, "-c", _SWEEP, str(tmp_path / "runs")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "runs").glob("*/config.json"))) < 2:
            time.sleep(0.5)  # both workers are training
        workers = [p for p in _children(sweep.pid) if "spawn_main" in open(f"/proc/{p}/cmdline").read()]
        assert len(workers) == 2
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not [p for p in workers if _alive(p)]
    finally:
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if sweep.poll() is None:
            sweep.kill()


# ------------------------------------------------------------------------------------------
# 6. unreadable cache files are set aside and rebuilt
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_truncated_checkpoint_is_set_aside_and_the_stage_starts_again(tmp_path, interrupt_at_step, capsys):
    from selftrain_lib.stage import run_stage

    config = load_config("synth-street", "smoke")
    reference = run_stage(config, 1, out=tmp_path / "ref", progress=False)
    crash = interrupt_at_step(5)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, 1, out=tmp_path / "runs", progress=False)
    crash.restore()
    ckpt = tmp_path / "runs" / reference.run_hash / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a kill during a copy, a full disk
    result = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert f"{ckpt}: unreadable checkpoint" in capsys.readouterr().err
    assert len(list(ckpt.parent.glob("checkpoint.pt.corrupt-*"))) == 1 and not ckpt.exists()
    a = torch.load(result.run_dir / "model.pt", weights_only=True)
    b = torch.load(reference.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # trained again from step 0: the same weights


def test_a_truncated_cached_backbone_is_rebuilt(tmp_path, capsys):
    from selftrain_lib.pretrain import synthetic_backbone_state

    kwargs = dict(widths=(4, 4, 8, 8), steps=2, cache_dir=tmp_path, batch_size=4, num_images=16, progress=False)
    first = synthetic_backbone_state(**kwargs)
    (cached,) = (tmp_path / "pretrain").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:500])
    again = synthetic_backbone_state(**kwargs)
    assert f"{cached}: unreadable cached pre-trained backbone" in capsys.readouterr().err
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert torch.load(cached, weights_only=True)["backbone"].keys() == first.keys()  # rebuilt in place


def test_a_backbone_another_process_is_building_is_waited_for_and_read_not_built_twice(tmp_path, capsys):
    import threading

    from selftrain_lib.pretrain import synthetic_backbone_state
    from selftrain_lib.runs import file_lock

    kwargs = dict(widths=(4, 4, 8, 8), steps=2, cache_dir=tmp_path, batch_size=4, num_images=16, progress=False)
    synthetic_backbone_state(**kwargs)
    (cached,) = (tmp_path / "pretrain").glob("*.pt")
    built = torch.load(cached, weights_only=True)
    cached.unlink()
    marker = {k: torch.full_like(v, 7) if v.is_floating_point() else v for k, v in built["backbone"].items()}
    got = {}
    with file_lock(cached.with_name(cached.name + ".lock"), "test: the builder"):  # the builder holds it
        waiter = threading.Thread(target=lambda: got.update(synthetic_backbone_state(**kwargs)))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()  # waiting, not building its own
        torch.save({**built, "backbone": marker}, cached)  # what the builder writes
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert "another process is building it; waiting" in capsys.readouterr().err
    assert all(torch.equal(got[k], marker[k]) for k in marker)  # read the builder's, not rebuilt


# ------------------------------------------------------------------------------------------
# 9. litter and lost work
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_leftovers_of_interrupted_writes_are_removed_when_the_run_starts(tmp_path):
    from selftrain_lib.stage import run_stage

    config = load_config("synth-street", "smoke", stage1_steps=2)
    run_dir = tmp_path / config_hash(stage_run_key(config, 1, None))
    run_dir.mkdir()
    (run_dir / ".selftrain-tmp.checkpoint.pt.k2j3ab12.tmp").write_bytes(b"x" * 1000)  # a kill during atomic_torch_save
    (run_dir / ".selftrain-tmp.pseudo_masks.abc12345").mkdir()                     # ... during atomic_directory
    (run_dir / ".selftrain-tmp.pseudo_masks.abc12345" / "train_00000.png").write_bytes(b"")
    (run_dir / ".pseudo_masks.ab_12345").mkdir()  # ... an older version's
    (run_dir / ".env").write_text("KEEP=1\n")  # not the project's: kept
    run_stage(config, 1, out=tmp_path, progress=False)
    assert sorted(p.name for p in run_dir.glob(".*")) == [".env", ".lock"]


@pytest.mark.slow
def test_an_error_after_config_json_leaves_no_run_folder(tmp_path):
    from selftrain_lib.stage import run_stage

    split = tmp_path / "split.txt"
    split.write_text("train_00001\nnot_an_image\n")
    config = load_config("synth-street", "smoke", split_file=str(split), labels=2)
    with pytest.raises(ValueError, match=r"split\.txt:2: unknown image id 'not_an_image'"):
        run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert not list((tmp_path / "runs").glob("*/config.json"))


@pytest.mark.slow
def test_a_kill_in_the_final_pseudo_mask_pass_resumes_there(tmp_path, monkeypatch):
    from selftrain_lib import stage as stage_mod
    from selftrain_lib.stage import run_stage

    config = load_config("synth-street", "smoke", checkpoint_every=4)  # 6 steps: the last is not a multiple
    reference = run_stage(config, 1, out=tmp_path / "ref", progress=False)
    real_finish = stage_mod.finish_stage

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage_mod, "finish_stage", killed)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, 1, out=tmp_path / "runs", progress=False)
    ckpt = tmp_path / "runs" / reference.run_hash / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == 6
    calls = {"n": 0}
    real_losses = stage_mod.compute_losses

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(stage_mod, "finish_stage", real_finish)
    monkeypatch.setattr(stage_mod, "compute_losses", counted)
    resumed = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert calls["n"] == 0  # no step trained again
    a = torch.load(resumed.run_dir / "model.pt", weights_only=True)
    b = torch.load(reference.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.curves()["loss"].tolist() == pytest.approx(reference.curves()["loss"].tolist())


# ------------------------------------------------------------------------------------------
# 10. the umask is respected
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cache_files_follow_the_umask(tmp_path):
    from selftrain_lib.stage import run_stage

    old = os.umask(0o002)  # a cluster group's shared cache
    try:
        config = load_config("synth-street", "smoke", stage1_steps=2, cache_dir=str(tmp_path / "cache"))
        result = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    finally:
        os.umask(old)
    paths = [result.run_dir, *result.run_dir.rglob("*"), *(tmp_path / "cache").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in paths}
    wrong = {p: m for p, m in modes.items() if m != (oct(0o775) if (tmp_path / p).is_dir() else oct(0o664))}
    assert not wrong and any(p.endswith(".npz") for p in modes) and any(p.endswith("model.pt") for p in modes)


# ------------------------------------------------------------------------------------------
# 5 and 8. files are checked before training; duplicate ids and train/val overlap are errors
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_bad_unlabelled_mask_is_found_before_training(tmp_path, monkeypatch):
    from PIL import Image

    from selftrain_lib import stage as stage_mod
    from selftrain_lib.data.files import FileDataset
    from selftrain_lib.pipeline import run

    config = _leaves(tmp_path, cache_dir=str(tmp_path / "cache"))
    kwargs = dict(dataset="leaves", scale="smoke", params=tmp_path / "leaves.yaml", data_root=config.data_root,
                  cache_dir=config.cache_dir, stages=1, progress=False)
    checks = {"n": 0}
    real_check = FileDataset.check

    def counted(self, *args, **kw):
        checks["n"] += 1
        return real_check(self, *args, **kw)

    monkeypatch.setattr(FileDataset, "check", counted)
    run(out=tmp_path / "runs", **kwargs)
    run(out=tmp_path / "other-runs", **kwargs)  # same files: checked once (train and val)
    assert checks["n"] == 2 and len(list((tmp_path / "cache" / "checked").iterdir())) == 1

    mask = tmp_path / "mine" / "masks" / "img2.png"
    bad = np.array(Image.open(mask))
    bad[2, 2] = 7  # outside [0, 3) and not the ignore value 250; img2 is unlabelled with seed 0
    Image.fromarray(bad).save(mask)
    steps = {"n": 0}
    monkeypatch.setattr(stage_mod, "compute_losses", lambda *a, **k: steps.__setitem__("n", steps["n"] + 1))
    with pytest.raises(ValueError, match=r"img2\.png: label values \[7\]"):
        run(out=tmp_path / "runs", **kwargs, seed=3)
    assert steps["n"] == 0


def test_truncated_and_non_image_files_are_named(tmp_path):
    from selftrain_lib.data.folder import folder

    root = make_folder(tmp_path / "mine")
    img = root / "images" / "img1.png"
    img.write_bytes(img.read_bytes()[:60])
    (root / "masks" / "img0.png").write_text("not a png")
    data = folder(root, "train", num_classes=3, ignore_index=250)
    with pytest.raises(ValueError, match=r"img1\.png: cannot read this image file"):
        data.image(1)
    with pytest.raises(ValueError, match=r"masks/img0\.png: cannot read this mask file"):
        data.mask(0)


@pytest.mark.parametrize("layout", ["lists", "subfolders"])
def test_two_images_of_one_stem_are_an_error(tmp_path, layout):
    from PIL import Image

    from selftrain_lib.data.folder import folder

    root = make_folder(tmp_path / "mine", layout)
    sub = "" if layout == "lists" else "train"
    Image.open(root / "images" / sub / "img1.png").convert("RGB").save(root / "images" / sub / "img1.jpg")
    with pytest.raises(ValueError, match=r"images \['img1\.jpg', 'img1\.png'\] share the id 'img1'"):
        folder(root, "train", num_classes=3, ignore_index=250)


def test_a_val_list_overlapping_the_train_list_is_an_error(tmp_path):
    from selftrain_lib.data import load_data

    config = _leaves(tmp_path)
    (tmp_path / "mine" / "val.txt").write_text("img3\nimg1\n")
    with pytest.raises(ValueError, match=r"1 image\(s\) are in both the train and the val set .*\['img1'\]"):
        load_data(config)
    with pytest.raises(ValueError, match="in both the train and the val set"):
        stage_hashes(config, 1)  # found when the run hash is computed, before anything trains
