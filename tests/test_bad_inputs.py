"""Every bad input fails early through the command line: ``error: ...`` naming the key, file or
value, exit status 2, no traceback (issue 13, items 7 and 8). The README's "Reliability" table
lists these cases."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from test_real_data import FOLDER_YAML, make_folder

LEAVES = ["--dataset", "leaves", "--params", "{T}/leaves.yaml"]

# (what is wrong, arguments after `run --scale smoke --stages 1`, text the error must contain)
CASES = [
    ("--labels not a number", ["--labels", "abc"], "--labels: expected an integer, a fraction such as 1/30, or 'full', got 'abc'"),
    ("--labels negative", ["--labels", "-5"], "labels: -5 is not a label count of synth-street: give one of the paper's counts 100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2, scaled to the pool at smoke, or a count of the pool between 1 and 96"),
    ("--labels 0", ["--labels", "0"], "labels: 0 is not a label count of synth-street: give one of the paper's counts 100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2, scaled to the pool at smoke, or a count of the pool between 1 and 96"),
    ("--labels above the pool", ["--labels", "100000"], "labels: 100000 is not a label count of synth-street: give one of the paper's counts 100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2, scaled to the pool at smoke, or a count of the pool between 1 and 96"),
    ("--labels a fraction not the paper's", ["--labels", "1/7"], "labels: '1/7' is not a label count of synth-street: give one of the paper's counts 100, 375, 750, 1500 or 1/30, 1/8, 1/4, 1/2, scaled to the pool at smoke, or a count of the pool between 1 and 96"),
    ("--lambda1 inf", ["--lambda1", "inf"], "lambda1: expected a finite number, got inf"),
    ("--lambda1 nan", ["--lambda1", "nan"], "lambda1: expected a finite number, got nan"),
    ("--lambda1 negative", ["--lambda1", "-1"], "lambda1: must be >= 0"),
    ("--lambda2 not a number", ["--lambda2", "x"], "argument --lambda2: invalid float value: 'x'"),
    ("--seed negative", ["--seed", "-1"], "seed: must be >= 0, got -1"),
    ("--stages 0", ["--stages", "0"], "stages: must be >= 1, got 0"),
    ("--stages 2 for a baseline", ["--stages", "2", "--method", "mt-cutmix"], "stages: method 'mt-cutmix' is a single-stage"),
    ("--scale not a preset", ["--scale", "huge"], "scale: 'huge' is not a preset of synth-street.yaml"),
    ("--dataset unknown", ["--dataset", "nope"], "no parameter file"),
    ("--params missing", ["--params", "{T}/missing.yaml"], "missing.yaml"),
    ("--out is a file", ["--out", "{T}/outfile"], "--out: {T}/outfile is a file, not a folder"),
    ("--set labels beside --labels", ["--labels", "5", "--set", "labels=6"], "labels: given both as --labels and as --set"),
    ("--set scale", ["--set", "scale=paper"], "--set scale=...: give it as --scale"),
    ("--set unparsable YAML", ["--set", "crop_size=[64,"], "--set 'crop_size=[64,': the value is not valid YAML"),
    ("--set lr=.inf", ["--set", "lr=.inf"], "lr: expected a finite number, got inf"),
    ("--set lr=.nan", ["--set", "lr=.nan"], "lr: expected a finite number, got nan"),
    ("--set lr=1e999 (integer digits)", ["--set", "lr=" + "9" * 400], "lr: expected a finite number"),
    ("--set lr not a number", ["--set", "lr=abc"], "lr: expected a number, got 'abc'"),
    ("--set unknown key", ["--set", "nokey=1"], "unknown key 'nokey'"),
    ("--set without =", ["--set", "novalue"], "--set 'novalue': expected key=value"),
    ("--set integer key given 2.5", ["--set", "batch_size=2.5"], "batch_size: expected an integer, got 2.5"),
    ("--set crop larger than the images", ["--set", "crop_size=[1000,1000]"], "crop_size: [1000, 1000] does not fit"),
    ("--set ema_decays of the wrong length", ["--set", "ema_decays=[0.9]"], "ema_decays: needs one more value"),
    ("--set widths of the wrong length", ["--set", "widths=[8, 8]"], "widths: needs four positive channel widths"),
    ("--set num_workers negative", ["--set", "num_workers=-1"], "num_workers: must be >= 0"),
    ("--set device unknown", ["--set", "device=tpu"], "device: must be 'auto', 'cpu' or 'cuda[:i]', got 'tpu'"),
    ("--set device: a GPU that is not there", ["--set", "device=cuda:7"], "device: 'cuda:7'"),
    ("pretrained: no such file", ["--set", "pretrained={T}/nope.pt"], "pretrained: must be 'synthetic'"),
    ("pretrained: a text file", ["--set", "pretrained={T}/weights.txt"], "pretrained: {T}/weights.txt is not a readable PyTorch checkpoint"),
    ("pretrained: a pickle", ["--set", "pretrained={T}/pickle.pt"], "pretrained: {T}/pickle.pt is not a readable PyTorch checkpoint"),
    ("pretrained: truncated", ["--set", "pretrained={T}/trunc.pt"], "pretrained: {T}/trunc.pt is not a readable PyTorch checkpoint"),
    ("pretrained: another model's weights", ["--set", "pretrained={T}/other.pt"], "{T}/other.pt: checkpoint does not match the model"),
    ("split_file: no such file", ["--set", "split_file={T}/nope.txt"], "split_file: no such file {T}/nope.txt"),
    ("split_file: an unknown id", ["--labels", "2", "--set", "split_file={T}/split_unknown.txt"], "{T}/split_unknown.txt:2: unknown image id 'nope'"),
    ("split_file: empty", ["--set", "split_file={T}/split_empty.txt"], "{T}/split_empty.txt: the split lists no images"),
    ("split_file: an id twice", ["--labels", "2", "--set", "split_file={T}/split_dup.txt"], "{T}/split_dup.txt: an image id is listed twice"),
    ("split_file: binary", ["--set", "split_file={T}/split_bin.txt"], "split_file: {T}/split_bin.txt is not a text file"),
    ("split_file: another length than --labels", ["--labels", "5", "--set", "split_file={T}/split_dup.txt"],
     "split_file: {T}/split_dup.txt lists 2 image ids, but labels is 5"),
    ("YAML: a dataset name that leaves the cache", ["--params", "{T}/escape.yaml"], "dataset: '../../x' holds a '/'"),
    ("YAML: scales is a list", ["--params", "{T}/scales_list.yaml"], "{T}/scales_list.yaml: scales: expected a mapping"),
    ("YAML: not a mapping", ["--params", "{T}/list.yaml"], "{T}/list.yaml: expected a mapping of keys, got list"),
    ("YAML: syntax error", ["--params", "{T}/syntax.yaml"], "{T}/syntax.yaml: not valid YAML at line 2"),
    ("YAML: unknown key", ["--params", "{T}/unknown.yaml"], "{T}/unknown.yaml: unknown key 'labelz'"),
    ("YAML: a preset that is a string", ["--params", "{T}/scale_str.yaml"], "{T}/scale_str.yaml: scales.smoke: expected a mapping of keys, got 'fast'"),
    ("YAML: by_labels is a list", ["--params", "{T}/bylabels.yaml"], "{T}/bylabels.yaml: by_labels: expected a mapping"),
    ("folder dataset without data_root", LEAVES, "data_root: dataset 'leaves' is read from files"),
    ("--labels full, folder dataset without data_root", LEAVES + ["--labels", "full"], "labels: 'full' counts the train list of 'leaves'"),
    ("data_root: no such folder", LEAVES + ["--set", "data_root={T}/nowhere"], "data_root: no such folder {T}/nowhere"),
    ("train_list: no such file", LEAVES + ["--set", "data_root={T}/mine", "--set", "train_list=nope.txt"], "train_list: no such list file {T}/mine/nope.txt"),
    # issue 24, item 8: values that were silently changed
    ("--set labels=12.7 (not 12)", ["--set", "labels=12.7"], "--labels: expected an integer, a fraction such as 1/30, or 'full', got 12.7"),
    ("--set labels=[5]", ["--set", "labels=[5]"], "--labels: expected an integer, a fraction such as 1/30, or 'full', got [5]"),
    ("--set seed=1:30 (not YAML 1.1's base-60 90)", ["--set", "seed=1:30"], "seed: expected an integer, got '1:30'"),
    ("--set a key twice", ["--set", "lr=0.1", "--set", "lr=0.2"], "--set lr=...: given twice"),
    ("YAML: a key twice", ["--params", "{T}/dupkey.yaml"], "{T}/dupkey.yaml: not valid YAML at line 3, column 1: key 'labels' is given twice (lines 1 and 3)"),
    ("YAML: a key twice in a preset", ["--params", "{T}/dupkey_preset.yaml"], "{T}/dupkey_preset.yaml: not valid YAML at line 4, column 5: key 'steps' is given twice"),
    ("YAML: labels 12.7", ["--params", "{T}/labels127.yaml"], "labels: expected a whole number of labelled images or 'full', got 12.7 (in {T}/labels127.yaml)"),
    ("--dataset beside --params naming another", ["--dataset", "synth-objects", "--params", "{T}/leaves.yaml"],
     "dataset: 'synth-objects' was asked for (--dataset), but {T}/leaves.yaml sets dataset: 'leaves'"),
    ("data_root for a generated dataset", ["--set", "data_root={T}"], "data_root: '{T}' is given, but 'synth-street' is generated"),
    # issue 24, item 11: huge integers are named at configuration time
    ("--stages 100000000", ["--stages", "100000000"], "stages: must be <= 100, got 100000000"),
    ("--seed 10**20", ["--seed", str(10**20)], f"seed: must be <= 4,294,967,295, got {10**20}"),
    ("cutout_count 10**20", ["--set", f"cutout_count={10**20}"], f"cutout_count: must be <= 100, got {10**20}"),
    ("randaug_ops 10**20", ["--set", f"randaug_ops={10**20}"], f"randaug_ops: must be <= 100, got {10**20}"),
    ("num_threads 10**20", ["--set", f"num_threads={10**20}"], f"num_threads: must be <= 4,096, got {10**20}"),
    ("batch_size 10**20", ["--set", f"batch_size={10**20}"], f"batch_size: must be <= 65,536, got {10**20}"),
    ("pool_size 10**20", ["--set", f"pool_size={10**20}"], f"pool_size: must be <= 1,000,000, got {10**20}"),
    ("num_val_samples 10**20", ["--set", f"num_val_samples={10**20}"], f"num_val_samples: must be <= 10,000, got {10**20}"),
    ("steps 10**20", ["--set", f"steps={10**20}"], f"steps: must be <= {2**62:,}, got {10**20}"),
    ("crop_size of 10**20", ["--set", f"crop_size=[{10**20}, 8]"], f"crop_size: must be <= {2**62:,}, got {10**20}"),
    ("num_classes 300", ["--dataset", "leaves", "--params", "{T}/classes300.yaml"], "num_classes: must be in [1, 255]"),
]
# data folders with one defect each (built by the fixture): the error names the file
DATA_CASES = [
    ("data: a label value out of range (unlabelled image)", "badmask", "{T}/badmask/masks/img2.png: label values [7] are outside [0, 3)"),
    ("data: a truncated image", "truncimg", "{T}/truncimg/images/img1.png: cannot read this image file"),
    ("data: a text file as an image", "notimg", "{T}/notimg/images/img1.png: cannot read this image file"),
    ("data: a truncated mask", "truncmask", "{T}/truncmask/masks/img0.png: cannot read this mask file"),
    ("data: a missing mask", "nomask", "missing mask file {T}/nomask/masks/img1.png"),
    ("data: x.jpg beside x.png", "dupstem", "{T}/dupstem/images: images ['img1.jpg', 'img1.png'] share the id 'img1'"),
    ("data: val list overlapping the train list", "overlap", "are in both the train and the val set"),
    ("data: a mask of another size", "masksize", "{T}/masksize/masks/img1.png: mask size 3x3 differs"),
    ("data: an RGB mask", "rgbmask", "{T}/rgbmask/masks/img1.png: a mask must be a single-channel"),
    ("data: an empty train list", "emptylist", "{T}/emptylist/train.txt: the list names no images"),
    ("data: a binary train list", "binlist", "{T}/binlist/train.txt: not a text list of image ids"),
    ("data: an id with no image", "unknownid", "missing image file {T}/unknownid/images/img9.jpg"),
    ("data: a list id that leaves its folder", "escapeid", "{T}/escapeid/train.txt:2: image id '../../mine/images/img1' has"),
    ("data: an id with a tab", "tabid", "{T}/tabid/train.txt:1: image id 'img0\\tx' holds the invisible character U+0009"),
    ("data: a dangling symbolic link", "dangling", "image file {T}/dangling/images/img1.png is a symbolic link to"),
    ("data: a CMYK image", "cmyk", "{T}/cmyk/images/img1.jpg: image mode CMYK is not read"),
    ("data: a float image outside [0, 1]", "floatimg", "{T}/floatimg/images/img1.tif: a float image must hold values in [0, 1]"),
    ("data: a mask with an EXIF orientation", "exifmask", "{T}/exifmask/masks/img1.png: the mask carries an EXIF orientation (6)"),
]
CASES += [(name, LEAVES + ["--set", f"data_root={{T}}/{folder}"], text) for name, folder, text in DATA_CASES]


def _variant(root, name):
    d = root / name
    shutil.copytree(root / "mine", d)
    return d


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    from selftrain_lib.models import build_segmenter

    T = tmp_path_factory.mktemp("bad")
    make_folder(T / "mine")
    (T / "leaves.yaml").write_text(FOLDER_YAML)
    (T / "scales_list.yaml").write_text("scales:\n  - smoke\n")
    (T / "list.yaml").write_text("- 1\n- 2\n")
    (T / "syntax.yaml").write_text("labels: [1,\n")
    (T / "unknown.yaml").write_text("labelz: 3\nscales: {smoke: {}}\n")
    (T / "scale_str.yaml").write_text("scales:\n  smoke: fast\n")
    (T / "bylabels.yaml").write_text("by_labels: [1, 2]\nscales: {smoke: {}}\n")
    (T / "dupkey.yaml").write_text("labels: 5\nlr: 0.1\nlabels: 6\nscales: {smoke: {}}\n")
    (T / "dupkey_preset.yaml").write_text("scales:\n  smoke:\n    steps: 2\n    steps: 3\n")
    (T / "labels127.yaml").write_text("dataset: synth-street\nlabels: 12.7\nscales: {smoke: {}}\n")
    (T / "classes300.yaml").write_text(FOLDER_YAML.replace("num_classes: 3", "num_classes: 300"))
    (T / "weights.txt").write_text("hello")
    (T / "pickle.pt").write_bytes(pickle.dumps({"a": [1, 2]}))
    torch.save(build_segmenter("deeplabv2-small", 9, widths=(8, 8, 16, 16)).state_dict(), T / "good.pt")
    (T / "trunc.pt").write_bytes((T / "good.pt").read_bytes()[:2000])
    torch.save(build_segmenter("deeplabv2-small", 9, widths=(16, 32, 64, 128)).state_dict(), T / "other.pt")
    (T / "outfile").write_text("x")
    (T / "split_unknown.txt").write_text("train_00001\nnope\n")
    (T / "split_empty.txt").write_text("\n")
    (T / "split_dup.txt").write_text("train_00001\ntrain_00001\n")
    (T / "split_bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    d = _variant(T, "badmask")
    m = np.array(Image.open(d / "masks/img2.png"))
    m[1, 1] = 7
    Image.fromarray(m).save(d / "masks/img2.png")
    p = _variant(T, "truncimg") / "images/img1.png"
    p.write_bytes(p.read_bytes()[:60])
    (_variant(T, "notimg") / "images/img1.png").write_text("hello")
    p = _variant(T, "truncmask") / "masks/img0.png"
    p.write_bytes(p.read_bytes()[:40])
    (_variant(T, "nomask") / "masks/img1.png").unlink()
    d = _variant(T, "dupstem")
    Image.open(d / "images/img1.png").save(d / "images/img1.jpg")
    (_variant(T, "overlap") / "val.txt").write_text("img3\nimg0\n")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(_variant(T, "masksize") / "masks/img1.png")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(_variant(T, "rgbmask") / "masks/img1.png")
    (_variant(T, "emptylist") / "train.txt").write_text("# nothing\n")
    (_variant(T, "binlist") / "train.txt").write_bytes(b"\xff\xfe\x00")
    (_variant(T, "unknownid") / "train.txt").write_text("img0\nimg1\nimg9\n")
    (_variant(T, "escapeid") / "train.txt").write_text("img0\n../../mine/images/img1\n")
    (_variant(T, "tabid") / "train.txt").write_text("img0\tx\nimg1\n")
    d = _variant(T, "dangling")
    (d / "images/img1.png").unlink()
    (d / "images/img1.png").symlink_to(T / "gone.png")
    d = _variant(T, "cmyk")
    Image.open(d / "images/img1.png").convert("CMYK").save(d / "images/img1.jpg")
    (d / "images/img1.png").unlink()
    d = _variant(T, "floatimg")
    Image.fromarray(np.full((6, 8), 2.0, np.float32)).save(d / "images/img1.tif")
    (d / "images/img1.png").unlink()
    d = _variant(T, "exifmask")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(d / "masks/img1.png").save(d / "masks/img1.png", exif=exif)
    (T / "escape.yaml").write_text(FOLDER_YAML.replace("dataset: leaves", "dataset: ../../x"))
    return T


def _cli_args(T, tmp_path, args):
    args = [a.replace("{T}", T) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "runs")]
    return ["run", "--scale", "smoke", "--stages", "1", "--no-progress", *out, *args]


def _check(T, returncode, stderr, expected):
    assert returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert expected.replace("{T}", T) in "\n".join(stderr.strip().splitlines()[-5:]), stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(("error: ", "python -m selftrain_lib run: error: "))


@pytest.mark.parametrize("what,args,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(bad_files, tmp_path, capsys, monkeypatch, what, args, expected):
    """In this process (the command line's own ``main``): 52 interpreters starting torch would take
    minutes; the test below runs a sample through ``python -m selftrain_lib``."""
    from selftrain_lib.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # `device=cuda:7` on a GPU machine too
    try:
        code = main(_cli_args(str(bad_files), tmp_path, args))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    _check(str(bad_files), code, capsys.readouterr().err, expected)


THROUGH_PYTHON_M = ["--set unparsable YAML", "pretrained: truncated", "data: x.jpg beside x.png",
                    "--out is a file", "--lambda2 not a number"]


@pytest.mark.slow
@pytest.mark.parametrize("what,args,expected", [c for c in CASES if c[0] in THROUGH_PYTHON_M],
                         ids=THROUGH_PYTHON_M)
def test_bad_input_through_python_m(bad_files, tmp_path, what, args, expected):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "selftrain_lib", *_cli_args(str(bad_files), tmp_path, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    _check(str(bad_files), proc.returncode, proc.stderr, expected)


def test_at_least_thirty_kinds():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_an_unwritable_out_folder_is_named(tmp_path, monkeypatch):
    from selftrain_lib.cli import main

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission
    assert main(["run", "--scale", "smoke", "--out", str(tmp_path / "runs")]) == 2


def test_notebook_parameters_are_checked():
    """What papermill's ``-p seeds '"12"'`` and ``-p labels -5`` hand the experiment functions."""
    from selftrain_lib import experiments as ex

    with pytest.raises(ValueError, match=r"seeds: expected a list of integers such as \[0, 1, 2\], got '12'"):
        ex.label_grid("synth-street", seeds="12")
    with pytest.raises(ValueError, match=r"seeds: expected non-negative integers, got '1'"):
        ex.ablation_grid(seeds=["1"])
    with pytest.raises(ValueError, match=r"labels: expected a positive integer, a paper's fraction such as '1/30' or 'full', got -5"):
        ex.spec("synth-street", -5)
    with pytest.raises(ValueError, match=r"labels: expected a list of label counts"):
        ex.label_grid("synth-street", labels=100)
    assert ex.spec("synth-street", "full", stages=1).labels == "full"


def _last_lines(text: str, n: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def test_bench_steps_must_be_positive(capsys):
    from selftrain_lib.cli import main

    assert main(["bench", "--steps", "0", "--out", "unused"]) == 2
    assert "--steps: must be >= 1, got 0" in _last_lines(capsys.readouterr().err)


def test_out_and_figures_expand_the_home_folder(tmp_path, monkeypatch):
    """``--out '~/x'`` is ``$HOME/x``, not a folder named ``~`` in the working directory."""
    from selftrain_lib.paths import figures_dir, runs_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    assert runs_dir("~/x") == tmp_path / "x"
    assert figures_dir("~/f") == tmp_path / "f"


def test_stages_must_be_a_whole_number_in_the_python_api(tmp_path):
    from selftrain_lib import run

    for bad, text in ((2.5, "stages: expected a whole number of stages, got 2.5"),
                      (True, "stages: expected a whole number of stages, got True"),
                      ("3", "stages: expected a whole number of stages, got '3'"),
                      (101, "stages: must be <= 100, got 101")):
        with pytest.raises(ValueError, match=re.escape(text)):
            run(scale="smoke", stages=bad, out=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # nothing trained


def test_yaml_values_are_read_as_yaml_1_2():
    """Base 60 (``1:30``), 1.1's octal ``010`` and ``1_000`` are not numbers of a surprising value;
    ``3e-4`` is a number (YAML 1.1 reads it as a string)."""
    from selftrain_lib.config import load_yaml

    assert load_yaml("1:30") == "1:30"
    assert load_yaml("010") == 10
    assert load_yaml("1_000") == "1_000"
    assert load_yaml("3e-4") == 3e-4 and load_yaml("-.inf") == float("-inf")
    assert load_yaml("{a: 0x10, b: 0o10, c: [1, 2.5]}") == {"a": 16, "b": 8, "c": [1, 2.5]}


def test_a_params_file_names_its_dataset_when_none_is_given(bad_files, tmp_path):
    from selftrain_lib.pipeline import resolve_run

    config, stages = resolve_run(params=bad_files / "leaves.yaml", scale="smoke", data_root=str(bad_files / "mine"))
    assert config.dataset == "leaves" and stages == 3
