"""One record per dataset (selftrain_lib/data/records.py): the tables of dataset facts are reads of
the records, and a dataset registered with its own layout reaches the loader and the paper tables."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selftrain_lib import experiments as ex
from selftrain_lib import label_counts, results
from selftrain_lib.config import load_config
from selftrain_lib.data import DATASETS, PAPER_LABEL_COUNTS, load_data, open_files, records
from selftrain_lib.data.files import FileDataset
from selftrain_lib.data.records import DatasetInfo, DatasetRecord


def test_the_tables_of_dataset_facts_read_from_the_records_are_the_tables_they_replaced():
    # the literal tables of datasets.py, label_counts.py, experiments.py and results.py before the records
    assert list(DATASETS)[:4] == ["synth-street", "synth-objects", "cityscapes", "voc"]
    assert dict(PAPER_LABEL_COUNTS) == {"cityscapes": (100, 372, 744, 1488), "voc": (106, 212, 529, 1323)}
    assert dict(label_counts.STAND_INS) == {"synth-street": "cityscapes", "synth-objects": "voc"}
    assert dict(label_counts.LABEL_COUNTS) == {"synth-street": (100, 375, 750, 1500), "synth-objects": (30, 60, 150, 375),
                                               "cityscapes": (100, 372, 744, 1488), "voc": (106, 212, 529, 1323)}
    assert label_counts.FRACTIONS["synth-street"] == ("1/30", "1/8", "1/4", "1/2")
    assert label_counts.FRACTIONS["voc"] == ("1/100", "1/50", "1/20", "1/8")
    assert ex.DATASETS == ("synth-street", "synth-objects") and ex.REAL_DATASETS == ("cityscapes", "voc")
    assert dict(ex.PAPER_LABELS) == {
        "synth-street": {100: "100", 375: "372", 750: "744", 1500: "1488", "full": "2975"},
        "synth-objects": {30: "1/100", 60: "1/50", 150: "1/20", 375: "1/8", "full": "full"},
        "cityscapes": {100: "100", 372: "372", 744: "744", 1488: "1488", "full": "2975"},
        "voc": {106: "1/100", 212: "1/50", 529: "1/20", 1323: "1/8", "full": "full"}}
    assert dict(ex.PAPER_DATASET) == {"synth-street": "cityscapes", "synth-objects": "pascal_voc_aug",
                                      "cityscapes": "cityscapes", "voc": "pascal_voc_aug"}
    assert dict(ex.PAPER_DATASET_NAME) == {"synth-street": "Cityscapes", "synth-objects": "PASCAL VOC 2012",
                                           "cityscapes": "Cityscapes", "voc": "PASCAL VOC 2012"}
    assert dict(ex.ABLATION_LABELS) == {"synth-street": 100, "synth-objects": 60, "cityscapes": 100, "voc": 212}
    assert dict(results.PAPER_COLUMNS) == {
        "cityscapes": (("100", "1/30 (100)"), ("372", "1/8 (372)"), ("744", "1/4 (744)"), ("1488", "1/2 (1488)"),
                       ("2975", "full (2975)")),
        "pascal_voc_aug": (("1/100", "1/100"), ("1/50", "1/50"), ("1/20", "1/20"), ("1/8", "1/8"), ("full", "full"))}
    assert dict(results.PAPER_SHORT) == {"cityscapes": "Cityscapes", "pascal_voc_aug": "VOC"}
    assert dict(results.ABLATION_PAPER_LABELS) == {"cityscapes": "100", "pascal_voc_aug": "1/50"}
    # synth-objects' figure colours (not its generator's palette) come with its record
    assert DATASETS["synth-objects"].palette[0] == (205, 205, 205)


def test_a_dataset_name_registers_once():
    with pytest.raises(ValueError, match="'voc' is already registered"):
        records.register(DatasetRecord(DATASETS["voc"]))
    with pytest.raises(ValueError, match="paper or stands_for, not both"):
        records.register(DatasetRecord(DatasetInfo("x-both", ("a",), ((0, 0, 0),), (4, 4), 4, 4),
                                       paper=records.paper_of("voc"), stands_for="voc"))
    assert "x-both" not in records.RECORDS


# --- a dataset with its own layout: rgb/<id>.png, gt/<id>.png, split/<part>.txt -----------------

def _open_own_layout(config, info, root, part, list_file):
    ids = (root / "split" / f"{part}.txt").read_text().split()
    return FileDataset(name=info.name, ids=ids, image_paths=[root / "rgb" / f"{i}.png" for i in ids],
                       mask_paths=[root / "gt" / f"{i}.png" for i in ids], num_classes=info.num_classes,
                       ignore_index=info.ignore_index, resize=None)


@pytest.fixture
def own_layout():
    """``rec-street``: registered as a dataset module would register it, taken out again after the test."""
    info = DatasetInfo(name="rec-street", class_names=("road", "car"), palette=((128, 64, 128), (0, 0, 142)),
                       image_size=(8, 16), default_pool_size=12, default_val_size=2, format="rec-street")
    records.register(DatasetRecord(info, open=_open_own_layout, stands_for="cityscapes", counts=(2, 4, 6, 8)))
    yield "rec-street"
    records.RECORDS.pop("rec-street")
    DATASETS.pop("rec-street")


def _write_layout(root, n_train=12, n_val=2):
    rng = np.random.default_rng(0)
    for sub in ("rgb", "gt", "split"):
        (root / sub).mkdir(parents=True)
    ids = [f"f{i:02d}" for i in range(n_train + n_val)]
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)).save(root / "rgb" / f"{i}.png")
        Image.fromarray(rng.integers(0, 2, (8, 16), dtype=np.uint8), mode="L").save(root / "gt" / f"{i}.png")
    (root / "split" / "train.txt").write_text("\n".join(ids[:n_train]))
    (root / "split" / "val.txt").write_text("\n".join(ids[n_train:]))


PARAMS = """dataset: rec-street
labels: 2
lambda1: 0.5
lambda2: 0.5
scales:
  smoke:
    model: deeplabv2-small
    widths: [8, 8, 16, 16]
    pretrained: none
    crop_size: [8, 16]
"""


def test_a_registered_dataset_is_read_by_its_own_reader(own_layout, tmp_path):
    _write_layout(tmp_path / "data")
    (tmp_path / "rec-street.yaml").write_text(PARAMS)
    c = load_config(own_layout, "smoke", params=tmp_path / "rec-street.yaml", data_root=str(tmp_path / "data"))
    train = open_files(c, "train")
    assert train.ids[:2] == ["f00", "f01"] and len(train) == 12 and train.image(0).shape == (3, 8, 16)
    data = load_data(c)
    assert data.info.format == "rec-street" and data.pool_size == 12 and data.val.ids == ["f12", "f13"]


def test_a_registered_dataset_enters_the_papers_table_ii_beside_the_stand_in_it_stands_for(own_layout):
    assert label_counts.paper_counts(own_layout) == (2, 4, 6, 8) and ex.ABLATION_LABELS[own_layout] == 2
    assert label_counts.paper_count(own_layout, "1/8") == 4 and label_counts.paper_count(own_layout, "372") == 4
    base = {c: None for c in results.RUN_COLUMNS}
    rows = [{**base, "dataset": own_layout, "labels": n, "paper_labels": ex.PAPER_LABELS[own_layout][n],
             "labels_used": n, "variant": "full method", "method": "three-stage", "seed": 0, "stage": stage,
             "val_miou": v, "eval_model": "student"}
            for n in (2, 4) for stage, v in ((1, 0.40), (3, 0.46))]
    r = results.label_report(pd.DataFrame(rows, columns=results.RUN_COLUMNS), own_layout, "smoke", [0], "Table II")
    t = r["df"].set_index("method")
    assert t.loc["Ours (three-stage) · ours: Stages 1–3", "1/8 (372)"] == "46.00 | 62.82"   # ours | Table II's
    assert "Dataset: rec-street (stand-in for Cityscapes)" in r["caption_text"]
    assert "1/8 (372): 4 labelled images" in r["caption_text"]
    assert r["sections"] == []   # Table II only: no Tables III / IV


def test_a_dataset_module_beside_the_others_is_found_and_registers_itself(tmp_path, monkeypatch):
    """records.discover imports every module of a package (selftrain_lib.data does it for itself):
    a new loader file there is named nowhere else."""
    pkg = tmp_path / "more_data"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mine.py").write_text(
        "from selftrain_lib.data.records import DatasetInfo, DatasetRecord, register\n"
        "register(DatasetRecord(DatasetInfo('rec-found', ('a', 'b'), ((0, 0, 0), (9, 9, 9)), (4, 4), 8, 2, format='x'),"
        " stands_for='voc', counts=(1, 2, 3, 4)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        records.discover("more_data", [str(pkg)])
        assert DATASETS["rec-found"].format == "x" and label_counts.paper_counts("rec-found") == (1, 2, 3, 4)
        assert label_counts.fraction("rec-found", 2) == "1/50" and ex.PAPER_DATASET["rec-found"] == "pascal_voc_aug"
    finally:
        records.RECORDS.pop("rec-found", None)
        DATASETS.pop("rec-found", None)
        for name in ("more_data.mine", "more_data"):
            sys.modules.pop(name, None)
