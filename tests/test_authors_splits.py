"""The authors' splits: the pickle reader (tools/authors_splits.py), the shipped id lists, the
``split`` key (random / authors / auto) and what a paper run trains on; best and last mIoU."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selftrain_lib import results
from selftrain_lib.cli import build_parser, run_kwargs
from selftrain_lib.config import ConfigError, load_config
from selftrain_lib.data import PAPER_LABEL_COUNTS, authors_split_file, load_data, read_split, split_source
from selftrain_lib.data.authors import SPLITS_DIR
from selftrain_lib.evaluate import best_and_last
from selftrain_lib.pipeline import resolve_run
from selftrain_lib.runs import split_file_ids
from selftrain_lib.stage import run_stage, select_split
from selftrain_lib.train.run_key import stage_hashes

SHA256 = {"cityscapes": "5fc17d191b88632bb2ccc68e5314d7fd04f149eb77b4a4f1c9c9ad8b982ecae8",
          "voc": "4e572847e864fcd1ecc1457c6413751abac38424e4bd40a9277d4f7afdc0c755"}


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("authors_splits")


# ------------------------------------------------------------------------------------------
# the reader: a pickle read opcode by opcode, never unpickled
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_reader_gives_the_pickled_permutation(tool, protocol):
    perm = np.random.RandomState(7).permutation(300).astype(np.int64)
    got = tool.read_permutation(pickle.dumps(perm, protocol=protocol))
    assert got.dtype == np.int64 and got.tolist() == perm.tolist()


def test_reader_handles_other_integer_widths_and_byte_orders(tool):
    perm = np.random.RandomState(1).permutation(50)
    for dtype in (">i8", "<i4", "<u2"):
        assert tool.read_permutation(pickle.dumps(perm.astype(dtype), protocol=4)).tolist() == perm.tolist()


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_reader_refuses_what_is_no_numpy_array(tool, capsys):
    with pytest.raises(ValueError, match=r"evil\.pkl: refers to \['builtins\.print'\]"):
        tool.read_permutation(pickle.dumps(_Evil(), protocol=4), "evil.pkl")
    assert capsys.readouterr().out == ""  # nothing was called
    with pytest.raises(ValueError, match="not a permutation of 0..2"):
        tool.read_permutation(pickle.dumps(np.array([0, 0, 1], np.int64), protocol=4), "dup.pkl")
    with pytest.raises(ValueError, match="bad.pkl: not a pickle stream"):
        tool.read_permutation(b"\x80\x04garbage", "bad.pkl")


def test_tool_writes_nested_lists_with_their_provenance(tool, tmp_path):
    names = [f"c{k % 3}/c{k % 3}_{k:06d}_000019" for k in range(2975)]
    (tmp_path / "train.txt").write_text("".join(f"{n}_leftImg8bit.png\n" for n in reversed(names)))
    perm = np.random.RandomState(3).permutation(2975).astype(np.int64)
    (tmp_path / "split.pkl").write_bytes(pickle.dumps(perm, protocol=2))
    assert tool.main(["--dataset", "cityscapes", "--pickle", str(tmp_path / "split.pkl"), "--names",
                      str(tmp_path / "train.txt"), "--source", "me/repo@abc:split.pkl", "--names-source",
                      "me/repo@abc:train.txt", "--out", str(tmp_path / "out")]) == 0
    ordered = sorted(names)  # the authors index the sorted names, whatever the list's order
    for n in (100, 372, 744, 1488):
        text = (tmp_path / "out" / f"cityscapes_{n}.txt").read_text()
        assert "me/repo@abc:split.pkl" in text and hashlib.sha256(pickle.dumps(perm, protocol=2)).hexdigest() in text
        ids = [line for line in text.splitlines() if not line.startswith("#")]
        assert ids == [ordered[i] for i in perm[:n]]
    with pytest.raises(ValueError, match="name list has 10 .* expected 2975"):
        tool.labelled_ids("cityscapes", perm, names[:10])


# ------------------------------------------------------------------------------------------
# the shipped lists
# ------------------------------------------------------------------------------------------

def _shipped(dataset, n):
    return split_file_ids(authors_split_file(dataset, n))


@pytest.mark.parametrize("dataset", ["cityscapes", "voc"])
def test_shipped_lists_have_the_paper_counts_are_unique_and_nested(dataset):
    counts = PAPER_LABEL_COUNTS[dataset]
    lists = [_shipped(dataset, n) for n in counts]
    assert [len(ids) for ids in lists] == list(counts)
    assert all(len(set(ids)) == len(ids) for ids in lists)
    assert all(small == big[:len(small)] for small, big in zip(lists, lists[1:]))  # nested, in the permutation's order
    header = authors_split_file(dataset, counts[0]).read_text().splitlines()[:3]
    assert any(SHA256[dataset] in line for line in header) and all(line.startswith("#") for line in header)
    assert SHA256[dataset] in (SPLITS_DIR / "PROVENANCE.md").read_text()


def test_shipped_lists_start_with_the_ids_of_the_permutation():
    # split_0.pkl starts 1899, 948, 1198 (Cityscapes) and 3458, 9682, 992 (VOC): the 1900th sorted
    # Cityscapes train name is in monchengladbach (aachen..krefeld hold 1,817 images), line 3459 of
    # AdvSemiSeg's train_aug.txt is 2008_006967
    assert _shipped("cityscapes", 100)[:3] == ["monchengladbach/monchengladbach_000000_035364",
                                               "dusseldorf/dusseldorf_000123_000019", "hamburg/hamburg_000000_029144"]
    assert _shipped("voc", 106)[:3] == ["2008_006967", "2011_000850", "2008_001551"]
    assert all(i.count("/") == 1 for i in _shipped("cityscapes", 1488))  # our ids: <city>/<stem>


# ------------------------------------------------------------------------------------------
# the split key
# ------------------------------------------------------------------------------------------

def test_paper_presets_use_the_authors_split_for_seed_0_only():
    for dataset, counts in PAPER_LABEL_COUNTS.items():
        for n in counts:
            c = load_config(dataset, "paper", labels=n)
            assert c.split == "auto" and split_source(c) == "authors"
            assert split_source(c.replace(seed=1)) == "random"  # the authors published one split
    assert split_source(load_config("cityscapes", "paper", labels=50)) == "random"  # not one of theirs
    assert split_source(load_config("synth-objects", "paper")) == "random"  # stand-ins: no authors' split
    assert split_source(load_config("voc", "smoke")) == "random"  # other presets as before
    assert split_source(load_config("voc", "smoke", labels=212, split="authors", seed=2)) == "authors"


def test_impossible_splits_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"split: the authors' split of voc has \[106, 212, 529, 1323\] .*labels=2"):
        load_config("voc", "smoke", split="authors")
    with pytest.raises(ConfigError, match="split: the authors published splits of .* not of 'synth-street'"):
        load_config("synth-street", "smoke", split="authors")
    with pytest.raises(ConfigError, match=r"split: must be one of \['random', 'authors', 'auto'\], got 'mine'"):
        load_config("synth-street", "smoke", split="mine")
    f = tmp_path / "s.txt"
    f.write_text("a\n")
    with pytest.raises(ConfigError, match="split: 'authors' and a split_file"):
        load_config("voc", "smoke", labels=106, split="authors", split_file=str(f))


def _fake_voc(root: Path, train_ids, val_ids=("2099_000001",)) -> Path:
    """A VOC layout of 16x16 images (one file each, hard-linked: thousands cost nothing)."""
    for d in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    image, mask = root / "proto.jpg", root / "proto.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    m = np.zeros((16, 16), np.uint8)
    m[:8] = 15
    Image.fromarray(m).save(mask)
    for i in (*train_ids, *val_ids):
        (root / "JPEGImages" / f"{i}.jpg").hardlink_to(image)
        (root / "SegmentationClassAug" / f"{i}.png").hardlink_to(mask)
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("".join(f"{i}\n" for i in sorted(train_ids)))
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in val_ids))
    return root


SMALL = ["model=deeplabv2-small", "widths=[8,8,16,16]", "pretrained=none", "stage1_steps=2", "batch_size=3",
         "crop_size=[16,16]", "cutout_size=8", "eval_every=1", "log_every=1", "num_val_samples=1", "eval_batch_size=1",
         "num_workers=0", "device=cpu", "checkpoint_every=2"]


def test_a_paper_run_on_voc_212_trains_on_the_authors_212_images(tmp_path):
    """`run --dataset voc --scale paper --labels 212` on a fake VOC layout holding the authors' 212
    images and 20 others labels the authors' 212; a seed-1 run draws its own."""
    authors = _shipped("voc", 212)
    root = _fake_voc(tmp_path / "voc", authors + [f"2099_{k:06d}" for k in range(10, 30)])
    argv = ["run", "--dataset", "voc", "--scale", "paper", "--labels", "212", "--set", f"data_root={root}"]
    config, stages = resolve_run(**run_kwargs(build_parser().parse_args(argv)))
    assert split_source(config) == "authors" and stages == 3
    data = load_data(config)
    labelled = select_split(config, data, tmp_path / "runs").labelled.tolist()
    assert sorted(data.train_ids[i] for i in labelled) == sorted(authors)
    seed1 = config.replace(seed=1)
    assert split_source(seed1) == "random"
    drawn = select_split(seed1, data, tmp_path / "runs").labelled.tolist()
    assert len(drawn) == 212 and sorted(data.train_ids[i] for i in drawn) != sorted(authors)


def test_a_trained_paper_stage_records_its_split_and_best_and_last(tmp_path):
    """Through a trained stage (the network shrunk to smoke size; the split is the paper preset's):
    the run folder's labelled ids are the authors' 106, metrics.json says so and holds the best and
    the last evaluation."""
    authors = _shipped("voc", 106)
    root = _fake_voc(tmp_path / "voc", authors + ["2099_000010", "2099_000011"])
    argv = ["run", "--dataset", "voc", "--scale", "paper", "--labels", "106", "--set", f"data_root={root}"]
    argv += [item for kv in SMALL for item in ("--set", kv)]
    config, _ = resolve_run(**run_kwargs(build_parser().parse_args(argv)))
    r = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert sorted(split_file_ids(r.run_dir / "labelled_ids.txt")) == sorted(authors)
    assert r.metrics["split"] == "authors" and r.metrics["labels"] == 106
    curves = pd.read_csv(r.run_dir / "curves.csv").dropna(subset=["val_miou"])
    assert len(curves) == 2 and r.metrics["reported"] == "last"
    assert r.metrics["last"] == {"miou": pytest.approx(r.metrics["val"]["miou"]), "step": 2}
    assert r.metrics["best"]["miou"] == pytest.approx(curves["val_miou"].max())
    assert r.metrics["best"]["step"] == int(curves.loc[curves["val_miou"].idxmax(), "step"])
    assert r.metrics["best_student"] == r.metrics["best"] and r.metrics["best_teacher"] is None  # Stage 1: no teacher
    assert r.miou("last") == r.val_miou and r.miou("best") == pytest.approx(r.metrics["best"]["miou"])
    assert r.summary()["best_step"] == r.metrics["best"]["step"]


def test_the_authors_split_enters_the_hash_by_its_ids(tmp_path):
    """A paper run with seed 0 on the authors' split is the run a split_file of the same ids names;
    seed 1 (drawn at random) keeps the hash it had before the key existed."""
    root = _fake_voc(tmp_path / "voc", _shipped("voc", 106) + ["2099_000010"])
    c = load_config("voc", "paper", labels=106, data_root=str(root))
    listed = tmp_path / "mine.txt"
    listed.write_text("".join(f"{i}\n" for i in reversed(_shipped("voc", 106))))
    assert stage_hashes(c, 2) == stage_hashes(c.replace(split="random", split_file=str(listed)), 2)
    assert stage_hashes(c, 1) != stage_hashes(c.replace(split="random"), 1)
    seed1 = c.replace(seed=1)
    assert stage_hashes(seed1, 2) == stage_hashes(seed1.replace(split="random"), 2)


def test_a_missing_authors_image_is_an_error_naming_the_list(tmp_path):
    root = _fake_voc(tmp_path / "voc", _shipped("voc", 106)[1:] + [f"2099_{k:06d}" for k in range(10, 20)])
    config = load_config("voc", "paper", labels=106, data_root=str(root))
    with pytest.raises(ValueError, match=r"voc_106\.txt:4: unknown image id '2008_006967'"):
        select_split(config, load_data(config), tmp_path / "runs")


# ------------------------------------------------------------------------------------------
# best and last
# ------------------------------------------------------------------------------------------

def test_best_and_last_of_curve_rows():
    rows = [{"step": 1}, {"step": 2, "val_miou": 0.3}, {"step": 3, "val_miou": 0.5}, {"step": 4, "val_miou": 0.5},
            {"step": 5, "val_miou": float("nan")}, {"step": 6, "val_miou": 0.4}]
    assert best_and_last(rows, "val_miou") == {"best": {"miou": 0.5, "step": 3}, "last": {"miou": 0.4, "step": 6}}
    assert best_and_last(rows, "val_miou_teacher") is None
    assert best_and_last([{"step": 2, "val_miou_teacher": ""}], "val_miou_teacher") is None  # a CSV's empty cell


def _result(tmp_path, name, last, best, step):
    from selftrain_lib.train.run_folder import StageResult

    metrics = {"stage": 1, "val": {"miou": last}, "pseudo_masks_unlabelled": {"miou": 0.1},
               "best": None if best is None else {"miou": best, "step": step}, "split": "authors"}
    return StageResult(stage=1, run_dir=tmp_path / name, run_hash=name, metrics=metrics)


def test_results_read_last_or_best(tmp_path):
    from types import SimpleNamespace

    from selftrain_lib.experiments import spec

    cfg = load_config("synth-street", "smoke")
    pairs = [(spec("synth-street", 100, seed=s), SimpleNamespace(config=cfg.replace(seed=s), stages=[r]))
             for s, r in enumerate([_result(tmp_path, "a", 0.40, 0.45, 200), _result(tmp_path, "b", 0.30, None, None)])]
    last = results.collect(pairs)
    assert last["val_miou"].tolist() == [0.40, 0.30] and (last["reported"] == "last").all()
    best = results.collect(pairs, which="best")
    assert best["val_miou"].iloc[0] == 0.45 and np.isnan(best["val_miou"].iloc[1])  # a run from before: NaN
    assert best["best_step"].iloc[0] == 200 and best["val_miou_last"].tolist() == [0.40, 0.30]
    assert last["split"].tolist() == ["authors", "authors"]
    with pytest.raises(ValueError, match=r"which: must be one of \['last', 'best'\]"):
        results.collect(pairs, which="max")
    assert "model of the last step" in results.caption("T", ["voc"], "paper", [0])
    assert "best of the evaluations during training" in results.caption("T", ["voc"], "paper", [0], which="best")
    assert results.reported_of(best) == "best" and results.reported_of(last) == "last"
