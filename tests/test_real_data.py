"""Real-dataset loaders on tiny fake datasets in each real layout (offline, written with PIL)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selftrain_lib.data.files import (VOC_CLASSES, cityscapes_classes, cityscapes_label_map, load_cityscapes,
                                      load_folder, load_voc, read_id_list, voc_palette)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    for split, city, n in (("train", "aachen", 2), ("train", "bochum", 1), ("val", "lindau", 1)):
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb(32, 64, k))
            ids = np.zeros((32, 64), np.uint8)
            ids[:, :16] = 7      # road -> 0
            ids[:, 16:32] = 26   # car -> 13
            ids[:, 32:48] = 0    # unlabeled -> ignore
            ids[:, 48:] = 24     # person -> 11
            _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    return root


def test_cityscapes_maps_label_ids_to_train_ids_and_resizes(cityscapes):
    ds = load_cityscapes(cityscapes, "train", resize=(16, 32))
    assert len(ds) == 3 and ds.ids[0] == "aachen_000000_000019"
    assert ds.image(0).shape == (3, 16, 32)
    m = ds.mask(0)
    assert m.shape == (16, 32)
    assert m[:, :8].unique().tolist() == [0] and m[:, 8:16].unique().tolist() == [13]
    assert m[:, 16:24].unique().tolist() == [255] and m[:, 24:].unique().tolist() == [11]
    names, palette = cityscapes_classes()
    assert len(names) == 19 and names[0] == "road" and palette[0] == (128, 64, 128)
    table = cityscapes_label_map()
    assert table[7] == 0 and table[33] == 18 and table[0] == 255


def test_cityscapes_missing_mask_is_named(cityscapes):
    victim = next((cityscapes / "gtFine" / "train" / "bochum").glob("*.png"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        load_cityscapes(cityscapes, "train")


def test_cityscapes_missing_split_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        load_cityscapes(tmp_path, "train")


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    for k, i in enumerate(ids):
        root.joinpath("JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(20 + k, 30, k)).save(root / "JPEGImages" / f"{i}.jpg")
        m = np.zeros((20 + k, 30), np.uint8)
        m[5:10, 5:10] = 15
        m[0, :] = 255
        _png(root / "SegmentationClassAug" / f"{i}.png", m)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train_aug.txt").write_text("\n".join(ids[:2]) + "\n")
    (sets / "val.txt").write_text(f"/JPEGImages/{ids[2]}.jpg /SegmentationClassAug/{ids[2]}.png\n")
    return root, ids


def test_voc_reads_lists_and_variable_sizes(voc):
    root, ids = voc
    train, val = load_voc(root, "train"), load_voc(root, "val")
    assert train.ids == ids[:2] and val.ids == ids[2:]
    assert train.image(1).shape == (3, 21, 30) and val.mask(0).shape == (22, 30)
    assert set(train.mask(0).unique().tolist()) == {0, 15, 255}
    assert len(VOC_CLASSES) == 21 and voc_palette()[1] == (128, 0, 0) and voc_palette()[15] == (192, 128, 128)


def test_voc_errors_name_the_file(voc, tmp_path):
    root, ids = voc
    bad = np.full((20, 30), 40, np.uint8)  # class 40 does not exist
    _png(root / "SegmentationClassAug" / f"{ids[0]}.png", bad)
    with pytest.raises(ValueError, match=rf"{ids[0]}\.png: unknown label value\(s\) \[40\]"):
        load_voc(root, "train").mask(0)
    _png(root / "SegmentationClassAug" / f"{ids[1]}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=rf"{ids[1]}\.png: mask size \(5, 5\) differs"):
        load_voc(root, "train").mask(1)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="empty.txt: the list names no images"):
        load_voc(root, "train", lists={"train": str(empty)})
    (root / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ids[0]}.jpg"):
        load_voc(root, "train")


def test_folder_dataset_with_lists_and_with_split_folders(tmp_path):
    listed = tmp_path / "listed"
    for i in ("a", "b"):
        _png(listed / "images" / f"{i}.png", _rgb(8, 8))
        _png(listed / "masks" / f"{i}.png", np.full((8, 8), 2, np.uint8))
    (listed / "train.txt").write_text("a\nb\n")
    ds = load_folder(listed, "train", num_classes=3)
    assert ds.ids == ["a", "b"] and ds.mask(1).unique().tolist() == [2]
    with pytest.raises(ValueError, match=r"b\.png: unknown label value\(s\) \[2\]"):
        load_folder(listed, "train", num_classes=2).mask(1)

    split = tmp_path / "split"
    _png(split / "val" / "images" / "x.png", _rgb(6, 9))
    _png(split / "val" / "masks" / "x.png", np.zeros((6, 9), np.uint8))
    assert load_folder(split, "val", num_classes=1).image(0).shape == (3, 6, 9)
    with pytest.raises(FileNotFoundError, match="neither a list train.txt"):
        load_folder(split, "train", num_classes=1)


def test_read_id_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_id_list(tmp_path / "nope.txt")
