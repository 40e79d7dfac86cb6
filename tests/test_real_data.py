"""Datasets read from files: Cityscapes, PASCAL VOC aug and folder layouts, built tiny in tmp_path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selftrain_lib.config import ConfigError, load_config
from selftrain_lib.train.run_key import stage_key
from selftrain_lib.data import (PAPER_LABEL_COUNTS, config_dataset, dataset_info, make_split, open_files, paper_splits,
                                read_split)
from selftrain_lib.data.cityscapes import cityscapes, label_map, train_classes
from selftrain_lib.data.files import read_id_list
from selftrain_lib.data.folder import folder
from selftrain_lib.data.voc import CLASS_NAMES, PALETTE, voc


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_cityscapes(root, h=8, w=16, cities=("aachen", "bremen"), per_city=2, split="train", label=None):
    for c in cities:
        for k in range(per_city):
            stem = f"{c}_{k:06d}_000019"
            _png(root / "leftImg8bit" / split / c / f"{stem}_leftImg8bit.png", _rgb(h, w, k))
            lab = np.full((h, w), 7, np.uint8) if label is None else label
            _png(root / "gtFine" / split / c / f"{stem}_gtFine_labelIds.png", lab)
    return root


def make_voc(root, ids=("2007_000032", "2007_000039", "2008_000002"), sizes=((10, 12), (7, 9), (12, 10))):
    for i, (h, w) in zip(ids, sizes):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(h, w)).save(root / "JPEGImages" / f"{i}.jpg")
        m = np.zeros((h, w), np.uint8)
        m[: h // 2] = 15
        m[0, 0] = 255
        _png(root / "SegmentationClassAug" / f"{i}.png", m)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in ids[:2]))
    (lists / "val.txt").write_text(f"{ids[2]}\n")
    return root


# ------------------------------------------------------------------------------------------
# Cityscapes
# ------------------------------------------------------------------------------------------

def test_cityscapes_label_ids_map_to_train_ids_with_ignore():
    lut = label_map()
    names, palette = train_classes()
    assert len(names) == len(palette) == 19 and names[0] == "road" and names[-1] == "bicycle"
    assert palette[0] == (128, 64, 128)
    expected = {7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13, 31: 16, 33: 18,
                0: 255, 1: 255, 4: 255, 6: 255, 9: 255, 14: 255, 29: 255, 30: 255, 255: 255}
    for label_id, train_id in expected.items():
        assert int(lut[label_id]) == train_id, label_id
    assert int(lut[40]) == -1  # not an id of the table


def test_cityscapes_layout_resize_and_mapping(tmp_path):
    h, w = 16, 32
    lab = np.zeros((h, w), np.uint8)
    lab[:, :8] = 7      # road -> 0
    lab[:, 8:16] = 26   # car -> 13
    lab[:, 16:24] = 4   # static -> ignore
    lab[:, 24:] = 33    # bicycle -> 18
    root = make_cityscapes(tmp_path / "cs", h, w, label=lab)
    ds = cityscapes(root, "train", resize=(8, 16))
    assert ds.ids == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019",
                      "bremen/bremen_000000_000019", "bremen/bremen_000001_000019"]
    img, mask = ds.image(0), ds.mask(0)
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 16)
    assert mask.dtype == torch.uint8 and mask.shape == (8, 16)
    assert mask[:, :4].unique().tolist() == [0] and mask[:, 4:8].unique().tolist() == [13]
    assert mask[:, 8:12].unique().tolist() == [255] and mask[:, 12:].unique().tolist() == [18]
    assert ds.size(0) == (8, 16)
    native = cityscapes(root, "train", resize=None)
    assert native.image(0).shape == (3, h, w) and native.mask(0)[0, 0] == 0
    ds.check()


def test_cityscapes_errors_name_the_file(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    missing = root / "gtFine" / "train" / "bremen" / "bremen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="bremen_000001_000019_gtFine_labelIds.png"):
        cityscapes(root, "train")
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/val"):
        cityscapes(root, "val")
    bad = make_cityscapes(tmp_path / "bad", label=np.full((8, 16), 40, np.uint8), cities=("ulm",), per_city=1)
    with pytest.raises(ValueError, match=r"ulm_000000_000019_gtFine_labelIds\.png.*\[40\]"):
        cityscapes(bad, "train").mask(0)
    empty = tmp_path / "empty" / "leftImg8bit" / "train"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match="no .*leftImg8bit.png"):
        cityscapes(tmp_path / "empty", "train")


# ------------------------------------------------------------------------------------------
# VOC
# ------------------------------------------------------------------------------------------

def test_voc_layout_lists_and_values(tmp_path):
    root = make_voc(tmp_path / "voc")
    train, val = voc(root, "train"), voc(root, "val")
    assert train.ids == ["2007_000032", "2007_000039"] and val.ids == ["2008_000002"]
    assert train.image(0).shape == (3, 10, 12) and train.image(1).shape == (3, 7, 9)  # own sizes
    m = train.mask(0)
    assert m.shape == (10, 12) and set(m.unique().tolist()) == {0, 15, 255}
    assert len(CLASS_NAMES) == len(PALETTE) == 21 and PALETTE[1] == (128, 0, 0) and PALETTE[15] == (192, 128, 128)
    # DeepLab-style pair lines and a configurable list path
    (tmp_path / "pairs.txt").write_text("/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n")
    assert voc(root, list_file=tmp_path / "pairs.txt").ids == ["2007_000039"]


def test_voc_errors_name_the_file(tmp_path):
    root = make_voc(tmp_path / "voc")
    _png(root / "SegmentationClassAug" / "2007_000039.png", np.full((7, 9), 21, np.uint8))
    with pytest.raises(ValueError, match=r"2007_000039\.png.*\[21\].*\[0, 21\)"):
        voc(root, "train").mask(1)
    _png(root / "SegmentationClassAug" / "2007_000039.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"2007_000039\.png: mask size 8x9 differs.*2007_000039\.jpg"):
        voc(root, "train").mask(1)
    (root / "JPEGImages" / "2007_000032.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image file .*2007_000032\.jpg"):
        voc(root, "train")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match=r"empty\.txt: the list names no images"):
        voc(root, list_file=tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match=r"missing list file .*nope\.txt"):
        voc(root, list_file="nope.txt")
    (tmp_path / "twice.txt").write_text("a\na\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_id_list(tmp_path / "twice.txt")


# ------------------------------------------------------------------------------------------
# folder datasets
# ------------------------------------------------------------------------------------------

def make_folder(root, layout="lists", n=4, h=6, w=8):
    for k in range(n):
        part = "train" if k < n - 1 else "val"
        sub = "" if layout == "lists" else part
        Image.fromarray(_rgb(h, w, k)).save(_mk(root / "images" / sub) / f"img{k}.png")
        m = np.full((h, w), k % 3, np.uint8)
        m[0] = 250
        _png(root / "masks" / sub / f"img{k}.png", m)
    if layout == "lists":
        (root / "train.txt").write_text("".join(f"img{k}\n" for k in range(n - 1)))
        (root / "val.txt").write_text(f"img{n - 1}\n")
    return root


def _mk(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.mark.parametrize("layout", ["lists", "subfolders"])
def test_folder_layouts(tmp_path, layout):
    root = make_folder(tmp_path / "mine", layout)
    train = folder(root, "train", num_classes=3, ignore_index=250)
    val = folder(root, "val", num_classes=3, ignore_index=250)
    assert train.ids == ["img0", "img1", "img2"] and val.ids == ["img3"]
    assert train.image(2).shape == (3, 6, 8)
    assert train.mask(2)[1:].unique().tolist() == [2] and train.mask(2)[0].unique().tolist() == [250]
    small = folder(root, "train", num_classes=3, ignore_index=250, resize=(3, 4))
    assert small.image(0).shape == (3, 3, 4) and small.mask(1).shape == (3, 4)
    with pytest.raises(ValueError, match=r"img1\.png.*\[1, 2\]|img2\.png.*\[2\]"):
        folder(root, "train", num_classes=2, ignore_index=250).check()
    with pytest.raises(ValueError, match=r"img0\.png.*\[250\]"):  # 250 is not the ignore value here
        folder(root, "train", num_classes=3).mask(0)


def test_folder_rgb_mask_and_missing_mask(tmp_path):
    root = make_folder(tmp_path / "mine")
    Image.fromarray(_rgb(6, 8)).save(root / "masks" / "img1.png")
    with pytest.raises(ValueError, match=r"img1\.png: a mask must be a single-channel"):
        folder(root, "train", num_classes=3, ignore_index=250).mask(1)
    (root / "masks" / "img0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask file .*img0\.png"):
        folder(root, "train", num_classes=3, ignore_index=250)
    with pytest.raises(FileNotFoundError, match="neither a list file"):
        folder(tmp_path / "nothing", "train")


# ------------------------------------------------------------------------------------------
# configuration, registry and splits
# ------------------------------------------------------------------------------------------

def test_registered_infos():
    cs, v = dataset_info("cityscapes"), dataset_info("voc")
    assert cs.num_classes == 19 and cs.image_size == (512, 1024) and cs.default_pool_size == 2975
    assert v.num_classes == 21 and v.default_pool_size == 10582 and v.default_val_size == 1449
    assert cs.palette[13] == (0, 0, 142) and v.class_names[0] == "background"


def test_paper_params_resolve(tmp_path):
    c = load_config("cityscapes", "paper", data_root=str(tmp_path))
    assert (c.model, c.pretrained, c.freeze_bn, c.lr, c.steps, c.stage1_steps) == \
        ("deeplabv2-r101", "imagenet", True, 3e-5, 60000, 60000)
    assert (c.batch_size, c.labelled_per_batch, c.crop_size, c.resize, c.lambda1, c.lambda2) == \
        (5, 1, (256, 512), (512, 1024), 0.5, 0.5)
    assert c.ema_decays == (0.99, 0.995, 0.9975, 0.999)
    assert [round(m * 60000) for m in c.ema_milestones] == [20000, 40000, 50000]
    assert load_config("cityscapes", "paper", labels=1488).labelled_per_batch == 3
    root = make_voc(tmp_path / "voc")
    expected = {106: (0.25, 1), 212: (0.25, 1), 529: (1.25, 1), 1323: (0.625, 2)}
    for labels, (lam, per_batch) in expected.items():
        v = load_config("voc", "paper", data_root=str(root), labels=labels)
        assert (v.lambda1, v.lambda2, v.labelled_per_batch, v.batch_size, v.crop_size) == \
            (lam, lam, per_batch, 10, (321, 321))
    assert load_config("voc", "paper", labels=1323, lambda1=1.0).lambda1 == 1.0  # overrides win
    assert PAPER_LABEL_COUNTS == {"cityscapes": (100, 372, 744, 1488), "voc": (106, 212, 529, 1323)}
    # the generated datasets' run ids do not hold the keys of datasets read from files
    assert "resize" not in stage_key(load_config("synth-street", "smoke"), 1)


def test_config_errors_name_the_key(tmp_path):
    from selftrain_lib.preflight import preflight

    # the files are checked before training, not by the configuration (issue 27: values only)
    with pytest.raises(ConfigError, match="data_root"):
        preflight(load_config("voc", "paper", data_root=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="train_list"):
        preflight(load_config("voc", "paper", data_root=str(tmp_path)))  # no ImageSets there
    with pytest.raises(ConfigError, match="resize"):
        load_config("synth-street", "smoke", resize=[8, 8])
    with pytest.raises(ConfigError, match="num_classes"):
        load_config("voc", "smoke", num_classes=3)
    with pytest.raises(ConfigError, match="crop_size"):
        load_config("cityscapes", "paper", resize=[128, 256])


FOLDER_YAML = """
dataset: leaves
num_classes: 3
ignore_index: 250
class_names: [background, leaf, spot]
palette: [[0, 0, 0], [0, 160, 0], [160, 80, 0]]
labels: 2
crop_size: [4, 4]
resize: [6, 8]
scales:
  smoke: {model: deeplabv2-small, widths: [4, 4, 8, 8], pretrained: none, stage1_steps: 1, steps: 1,
          batch_size: 2, labelled_per_batch: 1, cutout_size: 2}
"""


def test_folder_dataset_from_params_yaml(tmp_path):
    root = make_folder(tmp_path / "mine")
    p = tmp_path / "leaves.yaml"
    p.write_text(FOLDER_YAML)
    c = load_config("leaves", "smoke", params=p, data_root=str(root))
    info = config_dataset(c)  # declared by the configuration, not registered
    assert info.format == "folder" and info.num_classes == 3 and info.class_names[1] == "leaf"
    assert info.palette[1] == (0, 160, 0) and info.ignore_index == 250
    train, val = open_files(c, "train"), open_files(c, "val")
    assert train.ids == ["img0", "img1", "img2"] and val.ids == ["img3"] and train.image(0).shape == (3, 6, 8)
    split = make_split(len(train), c.labels, c.seed)
    assert read_split(paper_splits("voc", [f"x{i}" for i in range(1400)], tmp_path / "splits")[1323],
                      [f"x{i}" for i in range(1400)]).labelled.numel() == 1323
    assert split.labelled.numel() == 2
    # "full": the whole pool, counted from the train list (3 images here)
    assert load_config("leaves", "smoke", params=p, data_root=str(root), labels="full").labels == 3
    p.write_text(FOLDER_YAML.replace("class_names: [background, leaf, spot]", "class_names: [a, b]"))
    with pytest.raises(ConfigError, match="class_names"):
        load_config("leaves", "smoke", params=p)
    p.write_text(FOLDER_YAML.replace("ignore_index: 250", "ignore_index: 2"))
    with pytest.raises(ConfigError, match="ignore_index"):
        load_config("leaves", "smoke", params=p)
    p.write_text(FOLDER_YAML.replace("dataset: leaves", "dataset: voc"))
    with pytest.raises(ConfigError, match="num_classes.*built-in"):
        load_config("voc", "smoke", params=p)


def test_paper_splits_have_the_paper_counts(tmp_path):
    ids = [f"c/{i}" for i in range(2975)]
    files = paper_splits("cityscapes", ids, tmp_path, seed=3)
    assert sorted(files) == [100, 372, 744, 1488]
    for labels, f in files.items():
        assert read_split(f, ids).labelled.numel() == labels
    with pytest.raises(ValueError, match="dataset"):
        paper_splits("synth-street", ids, tmp_path)


# ------------------------------------------------------------------------------------------
# training on datasets read from files
# ------------------------------------------------------------------------------------------

def _street_label(h, w, k):
    lab = np.full((h, w), 7, np.uint8)   # road
    lab[: h // 3] = 23                   # sky
    lab[h // 3: h // 2, k % 3:] = 26     # car
    lab[-1] = 1                          # ego vehicle -> ignore
    return lab


def test_three_stages_on_fake_cityscapes(tmp_path):
    from selftrain_lib.stage import run_stage

    root = tmp_path / "cs"
    for k in range(6):
        make_cityscapes(root, 24, 48, cities=(f"c{k}",), per_city=1, label=_street_label(24, 48, k))
    for k in range(2):
        make_cityscapes(root, 24, 48, cities=(f"v{k}",), per_city=1, split="val", label=_street_label(24, 48, k))
    config = load_config("cityscapes", "smoke", data_root=str(root), resize=[16, 32], crop_size=[16, 16],
                         device="cpu", checkpoint_every=1, stage1_steps=2, steps=2)
    r1 = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    pm = r1.pseudo_masks
    assert (pm.directory / "c3" / "c3_000000_000019.png").is_file()
    assert Image.open(pm.directory / "c3" / "c3_000000_000019.png").size == (32, 16)
    assert 0 <= r1.val_miou <= 1 and r1.metrics["labels"] == 2
    assert r1.metrics["precision"] == "fp32" and r1.metrics["protocol"]  # the same metrics as in-memory runs
    r2 = run_stage(config, 2, pm, out=tmp_path / "runs", progress=False)
    r3 = run_stage(config, 3, r2.pseudo_masks, out=tmp_path / "runs", progress=False)
    assert r3.metrics["steps"] == 2 and np.load(r3.run_dir / "val_samples.npz")["prediction_0"].shape == (16, 32)

    # resume is the loop's, the same for both kinds of data: test_pipeline.py tests it
    from selftrain_lib.data import load_data, training_view
    from selftrain_lib.train.parts import build_stage_parts

    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    with pytest.raises(PermissionError):
        view.mask(int(make_split(data.pool_size, config.labels, config.seed).unlabelled[0]))
    batches = build_stage_parts(config, 2, view, pm.directory, 19, torch.device("cpu")).batches
    a, b = batches(1), batches(1)
    assert torch.equal(a.images, b.images) and torch.equal(a.pseudo, b.pseudo) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (3, 3, 16, 16) and a.labels.shape == (1, 16, 16)
    assert not torch.equal(batches(0).images, a.images)


def test_voc_variable_sizes_train_and_evaluate(tmp_path):
    from selftrain_lib.stage import run_stage

    root = make_voc(tmp_path / "voc", ids=tuple(f"im{k}" for k in range(6)),
                    sizes=((20, 24), (18, 30), (26, 20), (24, 24), (22, 28), (30, 22)))
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("im0\nim1\nim2\nim3\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("im4\nim5\n")
    config = load_config("voc", "smoke", data_root=str(root), device="cpu", crop_size=[24, 24], stage1_steps=1,
                         steps=1, scale_range=[0.5, 1.5])
    r1 = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert Image.open(r1.pseudo_masks.directory / "im1.png").size == (30, 18)
    r2 = run_stage(config, 2, r1.pseudo_masks, out=tmp_path / "runs", progress=False)
    assert r2.metrics["num_classes"] == 21


@pytest.mark.heavy
@pytest.mark.xdist_group("r101")   # one R101 at real sizes at a time: two side by side exhaust the memory
@pytest.mark.parametrize("dataset", ["cityscapes", "voc"])
def test_one_paper_step_of_r101_on_fake_data_of_the_real_sizes(tmp_path, dataset):
    """A smoke test, not a benchmark: one Stage-2 step of DeepLabv2-R101 with the paper's
    settings (Cityscapes: 1024x2048 images at 512x1024, crops 256x512, batch 5 = 1 + 4; VOC:
    ~500x375 images, crops 321x321, batch 10 = 1 + 9), teacher and auxiliary branch included."""
    from selftrain_lib.data import load_data, training_view
    from selftrain_lib.stage import train_step
    from selftrain_lib.train.parts import build_stage_parts

    if dataset == "cityscapes":
        root = tmp_path / "cs"
        for k in range(3):
            make_cityscapes(root, 1024, 2048, cities=(f"c{k}",), per_city=2)
        make_cityscapes(root, 1024, 2048, cities=("v",), per_city=1, split="val")
    else:
        ids = tuple(f"2007_{k:06d}" for k in range(12))
        root = make_voc(tmp_path / "voc", ids=ids, sizes=[(375, 500), (500, 375), (333, 500)] * 4)
        (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("".join(f"{i}\n" for i in ids[:11]))
        (root / "ImageSets" / "Segmentation" / "val.txt").write_text(f"{ids[11]}\n")  # not a training image
    # one loader worker (the paper scale has 8): the background path, without 8 forks on 2 cores
    config = load_config(dataset, "paper", data_root=str(root), pretrained="none", device="cpu", labels=2,
                         num_workers=1)
    data = load_data(config)
    split = make_split(data.pool_size, config.labels, config.seed)
    view = training_view(data, split)
    pseudo_dir = tmp_path / "pseudo"
    for i in range(len(view.ids)):  # stage-1 pseudo-masks: one PNG per pool image at its own size
        h, w = data.train.image(i).shape[-2:]
        path = pseudo_dir / f"{view.ids[i]}.png"
        _png(path, np.zeros((h, w), np.uint8))
    parts = build_stage_parts(config, 2, view, pseudo_dir, data.info.num_classes, torch.device("cpu"))
    batch = parts.batches(0)
    crop = (256, 512) if dataset == "cityscapes" else (321, 321)
    assert batch.images.shape == (config.batch_size, 3, *crop) and config.batch_size == (5 if dataset == "cityscapes" else 10)
    assert batch.labels.shape == (config.labelled_per_batch, *crop) and config.labelled_per_batch == 1
    losses = train_step(parts.model, parts.teacher, parts.optimizer, batch, parts.method, data.info.ignore_index,
                        parts.ema_decay(0), parts.precision, parts.scaler)
    assert {"loss_seg", "loss_con", "loss_pl"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.heavy
def test_paper_figures_on_real_dataset_layouts(tmp_path):
    """`make paper-figures CITYSCAPES=… VOC=…`: the notebooks run on the real datasets in place of
    their stand-ins (tiny fake layouts here), write the tables with the paper's cells, and skip a
    notebook whose dataset was not given."""
    import pandas as pd

    from selftrain_lib import paper_figures as pf

    cs = tmp_path / "cs"
    for k in range(6):
        make_cityscapes(cs, 24, 48, cities=(f"c{k}",), per_city=1, label=_street_label(24, 48, k))
    for k in range(2):
        make_cityscapes(cs, 24, 48, cities=(f"v{k}",), per_city=1, split="val", label=_street_label(24, 48, k))
    voc_root = make_voc(tmp_path / "voc", ids=tuple(f"im{k}" for k in range(6)),
                        sizes=((20, 24), (18, 30), (26, 20), (24, 24), (22, 28), (30, 22)))
    (voc_root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("im0\nim1\nim2\nim3\n")
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").write_text("im4\nim5\n")
    figures = tmp_path / "figures"
    done = pf.build("smoke", [0], figures, tmp_path / "build", tmp_path / "runs", only=["table2", "table3_4", "fig4_5"],
                    extra={"table2": {"labels": [100]}, "table3_4": {"labels": [212]},
                           "*": {"baselines": ["mt-cutmix"]}},
                    progress=False, jobs=2, data={"cityscapes": str(cs), "voc": str(voc_root)})
    assert [ran for _, _, ran in done] == [True, True, True]
    t2 = pd.read_csv(figures / "table2.csv")
    assert set(t2["labels (paper)"].astype(str)) >= {"100", "2975"}
    assert {"Supervised (= Stage 1)", "CutMix (mean teacher)", "Ours (three-stage)"} <= set(t2["method"])
    assert t2["published (Table II)"].notna().any()
    assert "cityscapes;" in (figures / "table2.md").read_text() and "stand-in" not in (figures / "table2.md").read_text()
    t34 = pd.read_csv(figures / "table3_4.csv")
    assert "1/50" in set(t34["labels (paper)"].astype(str))
    for d in ("cityscapes", "voc"):
        assert (figures / f"fig4_5_{d}.png").stat().st_size > 0
    # only VOC given: the Cityscapes notebook is skipped, not run on its stand-in
    done = pf.build("smoke", [0], figures, tmp_path / "build2", tmp_path / "runs", only=["table2"], progress=False,
                    data={"voc": str(voc_root)})
    assert done[0][2] is False and not (tmp_path / "build2" / "table2.ipynb").exists()
    with pytest.raises(ValueError, match="unknown datasets.*kitti"):
        pf.build("smoke", [0], figures, tmp_path / "build3", tmp_path / "runs", only=["table2"], progress=False,
                 data={"kitti": str(cs)})


@pytest.mark.parametrize("method", ["mt-cutout", "mt-cutmix"])
def test_mean_teacher_baselines_on_a_file_dataset(tmp_path, method):
    """The baselines' batches from files: Sub-batch 1 from L∪U with the map of pixels inside the
    image (crop padding is outside) and one box per image; then one run trains and evaluates."""
    from selftrain_lib.data import load_data, training_view
    from selftrain_lib.pipeline import run
    from selftrain_lib.methods import build as build_method
    from selftrain_lib.train import BatchSource

    root = make_voc(tmp_path / "voc", ids=tuple(f"im{k}" for k in range(6)),
                    sizes=((20, 24), (18, 30), (26, 20), (24, 24), (22, 28), (30, 22)))
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("im0\nim1\nim2\nim3\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("im4\nim5\n")
    config = load_config("voc", "smoke", data_root=str(root), device="cpu", crop_size=[32, 32], stage1_steps=1,
                         scale_range=[1.0, 1.0], method=method, batch_size=4, labelled_per_batch=1)
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, 1, 0))
    batch = BatchSource(build_method(config, 1), view, None, config, 1, torch.device("cpu"))(0)
    assert batch.images.shape == (4, 3, 32, 32) and batch.labels.shape == (1, 32, 32)
    assert batch.valid.dtype == torch.bool and batch.valid.shape == (3, 32, 32)
    # images are at most 30 px on a side and not rescaled: every 32x32 crop holds padding, and image pixels
    assert (~batch.valid).any(dim=(1, 2)).all() and batch.valid.any(dim=(1, 2)).all()
    assert batch.boxes.shape == (3, 4)
    result = run(dataset="voc", scale="smoke", data_root=str(root), method=method, out=tmp_path / "runs",
                 progress=False, crop_size=[24, 24])
    assert len(result.stages) == 1 and 0.0 <= result.final.val_miou <= 1.0


def test_loader_workers_give_the_batches_of_the_main_process(tmp_path):
    """Reading ahead in worker processes changes nothing: the same batches at every step, also
    after the loop jumps (resume)."""
    from selftrain_lib.data import load_data, training_view
    import dataclasses

    from selftrain_lib.methods import build as build_method
    from selftrain_lib.train import BatchSource

    root = make_voc(tmp_path / "voc", ids=tuple(f"im{k}" for k in range(6)),
                    sizes=((20, 24), (18, 30), (26, 20), (24, 24), (22, 28), (30, 22)))
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("im0\nim1\nim2\nim3\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("im4\nim5\n")  # not training images
    pseudo_dir = tmp_path / "pseudo"
    for k, (h, w) in enumerate(((20, 24), (18, 30), (26, 20), (24, 24))):
        _png(pseudo_dir / f"im{k}.png", np.full((h, w), k % 2, np.uint8))
    for stage, method in ((2, "three-stage"), (1, "mt-cutmix"), (1, "three-stage")):
        base = load_config("voc", "smoke", data_root=str(root), device="cpu", crop_size=[16, 16], method=method,
                           batch_size=3, labelled_per_batch=1)
        data = load_data(base)
        view = training_view(data, make_split(data.pool_size, 2, 0))
        pseudo = pseudo_dir if stage == 2 else None
        plain = BatchSource(build_method(base, stage), view, pseudo, base, stage, torch.device("cpu"))
        ahead = BatchSource(build_method(base, stage), view, pseudo, dataclasses.replace(base, num_workers=2), stage,
                            torch.device("cpu"))
        for step in (0, 1, 2, 7, 8, 3):
            a, b = plain(step), ahead(step)
            for key in ("images", "labels", "pseudo", "valid", "boxes"):
                x, y = getattr(a, key), getattr(b, key)
                assert (x is None and y is None) or torch.equal(x, y), (stage, method, step, key)
