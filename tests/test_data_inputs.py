"""Inputs read from files that were silently wrong or left their folder (issue 24, items 2, 5, 7, 13):
ids and dataset names that leave their folder, images by bit depth and EXIF orientation, a split
file whose length is not the label count, camera file names, dangling links, BOMs and spaces."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from selftrain_lib.config import load_config
from selftrain_lib.data import DatasetInfo, read_split, register_dataset
from selftrain_lib.data.files import FileDataset, read_id_list
from selftrain_lib.data.folder import folder
from test_real_data import FOLDER_YAML, make_folder

LEAVES_SMOKE = ["run", "--scale", "smoke", "--stages", "1", "--no-progress", "--dataset", "leaves"]


def _grey(path, values, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values, mode=mode).save(path) if mode else Image.fromarray(values).save(path)
    return path


def _one(tmp_path, image_name="img0.png"):
    """A one-image FileDataset reading ``images/<image_name>`` and ``masks/img0.png`` (6x8, class 1)."""
    image = tmp_path / "images" / image_name
    mask = _grey(tmp_path / "masks" / "img0.png", np.ones((6, 8), np.uint8))
    return FileDataset(name="t", ids=["img0"], image_paths=[image], mask_paths=[mask], num_classes=3)


def _cli(args, monkeypatch):
    from selftrain_lib.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return main(args)


# ------------------------------------------------------------------------------------------
# item 2: nothing is written outside its folder
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line,problem", [
    ("../../elsewhere/a", "'..' part: it would leave its folder"),
    ("sub/../../a", "'..' part"),
    ("/etc/passwd", "is an absolute path"),
    ("a\\..\\..\\b", "holds a backslash"),
    ("a\x00b", "U+0000"),
    ("a\tb", "U+0009"),
    ("img1\ufeff", "U+FEFF"),
])
def test_a_list_id_that_leaves_its_folder_is_an_error_naming_the_line(tmp_path, line, problem):
    root = make_folder(tmp_path / "mine")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(root / "images/img0.png", tmp_path / "elsewhere/a.png")  # so today's reader finds an image
    (root / "train.txt").write_text(f"img0\n# comment\n{line}\n")
    with pytest.raises(ValueError, match=rf"train\.txt:3: image id .* {_re(problem)}"):
        folder(root, "train", num_classes=3, ignore_index=250)


def _re(text):
    import re

    return re.escape(text)


def test_an_escaping_id_never_overwrites_a_file_outside_the_run(tmp_path, monkeypatch, capsys):
    """On the code before issue 24 this trained, and the pseudo-mask writer overwrote ``victim.png``
    (``<run>/.pseudo_masks.X/../../../../victim.png``): an image outside the data and the cache."""
    root = make_folder(tmp_path / "a/b/mine")
    victim = _grey(tmp_path / "victim.png", np.full((6, 8), 2, np.uint8))  # images/../../../../victim.png
    before = victim.read_bytes()
    (root / "train.txt").write_text("img0\nimg1\n../../../../victim\n")
    (tmp_path / "leaves.yaml").write_text(FOLDER_YAML)
    code = _cli([*LEAVES_SMOKE, "--params", str(tmp_path / "leaves.yaml"), "--out", str(tmp_path / "cache/runs"),
                 "--set", f"data_root={root}", "--set", f"cache_dir={tmp_path / 'cache'}"], monkeypatch)
    assert victim.read_bytes() == before, "the pseudo-mask writer overwrote a file outside the run"
    assert code == 2
    assert f"{root}/train.txt:3: image id '../../../../victim' has an empty, '.' or '..' part" in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("*.png"))


def test_a_dataset_name_that_leaves_the_cache_is_an_error(tmp_path, monkeypatch, capsys):
    """``dataset: ../../x`` in a params YAML: before issue 24 the split file went to
    ``<out>/splits/../../x_2_seed0.txt`` and the checked-marker to ``<cache>/checked/../../x_<hash>``."""
    root = make_folder(tmp_path / "mine")
    params = tmp_path / "x.yaml"
    params.write_text(FOLDER_YAML.replace("dataset: leaves", "dataset: ../../x"))
    code = _cli(["run", "--scale", "smoke", "--stages", "1", "--no-progress", "--params",
                 str(params), "--out", str(tmp_path / "o/runs"), "--set", f"data_root={root}",
                 "--set", f"cache_dir={tmp_path / 'c/cache'}"], monkeypatch)
    assert not [str(p) for p in tmp_path.rglob("x_*")]  # x_2_seed0.txt, x_<hash> beside the cache
    assert code == 2
    assert "error: dataset: '../../x' holds a '/'" in capsys.readouterr().err
    for name in ("..", ".", "a\\b", "a\x00b", "", " x"):
        with pytest.raises(ValueError, match=r"^dataset: "):
            register_dataset(DatasetInfo(name=name, class_names=("a",), palette=((0, 0, 0),), image_size=(4, 4),
                                         default_pool_size=0, default_val_size=0, format="folder"))


def test_ids_with_subfolders_stay_allowed(tmp_path):
    """``city/x`` ids (Cityscapes', a folder dataset's subfolders) name files inside the folder."""
    root = make_folder(tmp_path / "mine")
    for kind in ("images", "masks"):
        (root / kind / "sub").mkdir()
        shutil.move(root / kind / "img1.png", root / kind / "sub/img1.png")
    (root / "train.txt").write_text("img0\nsub/img1\n")
    data = folder(root, "train", num_classes=3, ignore_index=250)
    assert data.ids == ["img0", "sub/img1"] and data.image_paths[1] == root / "images/sub/img1.png"


# ------------------------------------------------------------------------------------------
# item 5: bit depth, float images, EXIF orientation, unsupported modes
# ------------------------------------------------------------------------------------------

def test_16_bit_grey_is_scaled_by_its_high_byte(tmp_path, capsys):
    """Pillow's own conversion clips at 255 (every 12-bit value above 255 became 255: a handful of
    values survived). Read as 16-bit: ``v >> 8``, as Pillow reads 16-bit RGB PNGs."""
    values = np.array([0, 255, 256, 1000, 2000, 3000, 4095, 65535] * 6, np.uint16).reshape(6, 8)
    _grey(tmp_path / "images/img0.png", values)
    data = _one(tmp_path)
    assert Image.open(data.image_paths[0]).mode == "I;16"
    out = data.image(0)
    assert out.shape == (3, 6, 8) and out.dtype == torch.uint8
    assert torch.equal(out[0], torch.from_numpy((values >> 8).astype(np.uint8)))
    assert torch.equal(out[0], out[2])
    # 12-bit data stored unscaled: read alike, and the check says it is dark
    _grey(tmp_path / "images/img0.png", (values % 4096).astype(np.uint16))
    data = _one(tmp_path)
    assert int(data.image(0).max()) == 15
    data.check()
    assert "16-bit image with values up to 4095 only (12-bit data?)" in capsys.readouterr().err


def test_float_tiff_in_0_1_is_scaled_and_outside_is_refused(tmp_path):
    values = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(values).save(_mkdir(tmp_path / "images") / "img0.tif")
    data = _one(tmp_path, "img0.tif")
    assert Image.open(data.image_paths[0]).mode == "F"
    assert torch.equal(data.image(0)[1], torch.from_numpy(np.rint(values * 255).astype(np.uint8)))
    Image.fromarray(values * 300).save(tmp_path / "images/img0.tif")
    with pytest.raises(ValueError, match=r"img0\.tif: a float image must hold values in \[0, 1\], found 0\.\.300"):
        _one(tmp_path, "img0.tif").image(0)
    values[0, 0] = np.nan
    Image.fromarray(values).save(tmp_path / "images/img0.tif")
    with pytest.raises(ValueError, match=r"img0\.tif: a float image .* NaN"):
        _one(tmp_path, "img0.tif").check()


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.mark.parametrize("mode", ["CMYK", "LAB", "I"])
def test_unsupported_image_modes_are_refused_naming_the_file(tmp_path, mode):
    im = Image.new(mode, (8, 6))
    path = _mkdir(tmp_path / "images") / ("img0.tif" if mode != "CMYK" else "img0.jpg")
    im.save(path)
    data = _one(tmp_path, path.name)
    with pytest.raises(ValueError, match=rf"{_re(str(path))}: image mode {mode} is not read"):
        data.image(0)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_orientation_turns_images_never_masks(tmp_path):
    shown = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # 8x6 as stored; orientation 6 turns it back
    stored.save(_mkdir(tmp_path / "images") / "img0.png", exif=_exif(6))
    data = _one(tmp_path)  # mask 6x8: drawn on the image as shown
    assert data.size(0) == (6, 8)
    assert torch.equal(data.image(0), torch.from_numpy(shown).permute(2, 0, 1))
    assert data.mask(0).shape == (6, 8)
    # a mask drawn on the pixels as stored (8x6) is named, with its image, not turned
    _grey(tmp_path / "masks/img0.png", np.ones((8, 6), np.uint8))
    data = FileDataset(name="t", ids=["img0"], image_paths=[tmp_path / "images/img0.png"],
                       mask_paths=[tmp_path / "masks/img0.png"], num_classes=3)
    with pytest.raises(ValueError, match=r"masks/img0\.png: mask size 8x6 differs from its image .*images/img0\.png "
                                         r"\(6x8 as shown, turned by its EXIF orientation 6; masks are never turned\)"):
        data.mask(0)
    # a mask that carries an orientation itself is refused rather than turned
    Image.fromarray(np.ones((6, 8), np.uint8)).save(tmp_path / "masks/img0.png", exif=_exif(3))
    with pytest.raises(ValueError, match=r"masks/img0\.png: the mask carries an EXIF orientation \(3\)"):
        data.mask(0)


def test_a_square_exif_rotated_jpeg_is_turned(tmp_path):
    """Square: the sizes agree either way, so before issue 24 the image was silently misaligned."""
    shown = np.zeros((8, 8, 3), np.uint8)
    shown[:2] = 255  # a white band at the top, as shown
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_180).save(
        _mkdir(tmp_path / "images") / "img0.jpg", exif=_exif(3), quality=95)
    _grey(tmp_path / "masks/img0.png", np.ones((8, 8), np.uint8))
    data = FileDataset(name="t", ids=["img0"], image_paths=[tmp_path / "images/img0.jpg"],
                       mask_paths=[tmp_path / "masks/img0.png"], num_classes=3)
    image = data.image(0).float()
    assert image[:, :2].mean() > 200 and image[:, 3:].mean() < 50


# ------------------------------------------------------------------------------------------
# item 7: a split file is as long as the label count
# ------------------------------------------------------------------------------------------

def test_a_split_file_of_another_length_than_labels_is_an_error_before_training(tmp_path):
    from selftrain_lib.preflight import preflight
    from selftrain_lib.stage import run_stage
    from selftrain_lib.train.run_key import stage_hashes

    split = tmp_path / "split.txt"
    split.write_text("train_00001\ntrain_00002\n")
    config = load_config("synth-street", "smoke", split_file=str(split), labels=50)
    with pytest.raises(ValueError, match=rf"split_file: {_re(str(split))} lists 2 image ids, but labels is 50"):
        preflight(config)  # the files' checks before training (issue 27: no longer in the run key)
    with pytest.raises(ValueError, match="lists 2 image ids, but labels is 50"):
        run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder
    assert len(stage_hashes(config.replace(labels=2), 1)) == 1


# ------------------------------------------------------------------------------------------
# item 13: camera names, dangling links, BOMs, spaces
# ------------------------------------------------------------------------------------------

def test_camera_file_names_resolve_in_any_case(tmp_path):
    root = make_folder(tmp_path / "mine")
    os.rename(root / "images/img0.png", root / "images/IMG_0.PNG")
    os.rename(root / "masks/img0.png", root / "masks/IMG_0.PNG")
    Image.open(root / "images/img1.png").save(root / "images/IMG_1.JPG")
    os.remove(root / "images/img1.png")
    os.rename(root / "masks/img1.png", root / "masks/IMG_1.png")
    (root / "train.txt").write_text("IMG_0\nIMG_1.JPG\nimg2\n")  # an id, or the file's name
    data = folder(root, "train", num_classes=3, ignore_index=250)
    assert data.ids == ["IMG_0", "IMG_1", "img2"]
    assert [p.name for p in data.image_paths] == ["IMG_0.PNG", "IMG_1.JPG", "img2.png"]
    assert [p.name for p in data.mask_paths] == ["IMG_0.PNG", "IMG_1.png", "img2.png"]
    data.check()
    # the subfolder layout finds them too
    sub = make_folder(tmp_path / "sub", "subfolders")
    os.rename(sub / "images/train/img0.png", sub / "images/train/IMG_0.JPEG")
    os.rename(sub / "masks/train/img0.png", sub / "masks/train/IMG_0.png")
    assert "IMG_0" in folder(sub, "train", num_classes=3, ignore_index=250).ids
    Image.open(sub / "images/train/img1.png").save(sub / "images/train/img1.JPG")
    with pytest.raises(ValueError, match=r"images \['img1\.JPG', 'img1\.png'\] share the id 'img1'"):
        folder(sub, "train", num_classes=3, ignore_index=250)


def test_a_dangling_symlink_is_named(tmp_path):
    root = make_folder(tmp_path / "mine")
    os.remove(root / "images/img1.png")
    os.symlink(tmp_path / "gone.png", root / "images/img1.png")
    with pytest.raises(FileNotFoundError, match=rf"image file {_re(str(root))}/images/img1\.png is a symbolic link "
                                                rf"to {_re(str(tmp_path))}/gone\.png, which does not exist"):
        folder(root, "train", num_classes=3, ignore_index=250)
    sub = make_folder(tmp_path / "sub", "subfolders")
    os.remove(sub / "masks/train/img2.png")
    os.symlink("nowhere.png", sub / "masks/train/img2.png")
    with pytest.raises(FileNotFoundError, match=r"mask file .*masks/train/img2\.png is a symbolic link to nowhere\.png"):
        folder(sub, "train", num_classes=3, ignore_index=250)


def test_list_files_with_a_bom_crlf_and_spaces(tmp_path):
    """A BOM, CRLF line ends and spaces around an id are dropped; a space inside an id is part of it."""
    root = make_folder(tmp_path / "mine")
    os.rename(root / "images/img2.png", root / "images/my img.png")
    os.rename(root / "masks/img2.png", root / "masks/my img.png")
    (root / "train.txt").write_bytes("\ufeffimg0 \r\n  img1\t\r\nmy img\r\n".encode())
    assert read_id_list(root / "train.txt") == ["img0", "img1", "my img"]
    data = folder(root, "train", num_classes=3, ignore_index=250)
    assert data.image_paths[2].name == "my img.png"
    (root / "train.txt").write_text("img0\nimg1\nimg0\n")
    with pytest.raises(ValueError, match=r"train\.txt:3: image id 'img0' is listed twice \(first on line 1\)"):
        read_id_list(root / "train.txt")
    split = tmp_path / "split.txt"
    split.write_bytes("\ufeffimg1\r\nimg0 \r\n".encode())
    assert read_split(split, ["img0", "img1", "my img"]).labelled.tolist() == [0, 1]


def test_a_folder_datasets_files_are_fingerprinted_once_per_command(tmp_path, monkeypatch):
    """The run key holds the files' fingerprint (a stat of every file); the check before training
    takes it from there (issue 27: it stat'ed every file a second time)."""
    from selftrain_lib.data import datasets

    root = make_folder(tmp_path / "leaves")
    (tmp_path / "leaves.yaml").write_text(FOLDER_YAML)
    calls = []
    real = datasets.data_fingerprint
    monkeypatch.setattr(datasets, "data_fingerprint", lambda config: calls.append(1) or real(config))
    code = _cli([*LEAVES_SMOKE, "--params", str(tmp_path / "leaves.yaml"),
                 "--out", str(tmp_path / "cache/runs"), "--set", f"data_root={root}",
                 "--set", f"cache_dir={tmp_path / 'cache'}"], monkeypatch)
    assert code == 0
    assert len(calls) == 1
    assert len(list((tmp_path / "cache" / "checked").iterdir())) == 1  # and the files were checked
