import json

import pytest

from selftrain_lib.config import Config, ConfigError, load_config, make_config
from selftrain_lib.train.run_key import stage_key


def test_presets_resolve_and_yaml_overrides_defaults():
    quick = load_config("synth-street", "quick")
    smoke = load_config("synth-street", "smoke")
    assert quick.scale == "quick" and smoke.scale == "smoke"
    assert quick.crop_size == (64, 96)          # from the YAML top level
    assert smoke.stage1_steps < quick.stage1_steps
    paper = load_config("synth-objects", "paper")
    assert paper.model == "deeplabv2-r101" and paper.lr == 3e-5 and paper.batch_size == 10
    assert paper.labelled_per_batch == 1 and paper.freeze_bn


def test_keyword_overrides_win():
    c = load_config("synth-street", "smoke", lambda1=0.25, cr=False, crop_size=[32, 32])
    assert c.lambda1 == 0.25 and c.cr is False and c.crop_size == (32, 32)


def test_labels_full_is_the_pool():
    c = load_config("synth-street", "smoke", labels="full")
    assert c.labels == c.pool_size == 96


@pytest.mark.parametrize("overrides, key", [
    ({"lamda1": 0.5}, "lamda1"),                      # unknown key
    ({"lambda1": -0.1}, "lambda1"),                   # λ < 0
    ({"lambda2": "half"}, "lambda2"),                 # wrong type
    ({"labels": 10_000}, "labels"),                   # more labels than images
    ({"crop_size": [65, 96]}, "crop_size"),           # crop larger than the image
    ({"crop_size": [64]}, "crop_size"),
    ({"output_stride": 16}, "output_stride"),
    ({"model": "deeplabv2-r101", "pretrained": "none", "output_stride": 4}, "output_stride"),
    ({"labelled_per_batch": 8}, "labelled_per_batch"),
    ({"cr": "yes"}, "cr"),
    ({"steps": 0}, "steps"),
    ({"ema_decays": [0.9, 1.5, 0.9, 0.9]}, "ema_decays"),
    ({"model": "unet"}, "model"),
    ({"pretrained": " "}, "pretrained"),
    ({"device": "tpu"}, "device"),
    ({"randaug_prob": 1.5}, "randaug_prob"),
    ({"cutout_count": -1}, "cutout_count"),
    ({"randaug_style": "fixmatch"}, "randaug_style"),
    ({"randaug_style": "authors", "randaug_magnitude": 3}, "randaug_magnitude"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config("synth-street", "quick", **overrides)


def test_a_saved_config_loads_after_its_files_moved_and_preflight_names_them(tmp_path):
    """Values only in ``make_config`` (issue 27): a config.json whose data root, split file and
    checkpoint are gone reads back; :func:`preflight` names each missing file by its key."""
    from selftrain_lib.preflight import preflight

    split, ckpt = tmp_path / "split.txt", tmp_path / "w.pt"
    split.write_text("train_00001\ntrain_00002\n")
    ckpt.write_bytes(b"")
    c = load_config("synth-street", "smoke", split_file=str(split), labels=2, pretrained=str(ckpt))
    preflight(c)
    split.unlink()
    ckpt.unlink()
    saved = json.loads(json.dumps(c.to_dict(), default=list))
    assert make_config(saved) == c
    with pytest.raises(ConfigError, match=f"^split_file: no such file {split}$"):
        preflight(c)
    with pytest.raises(ConfigError, match=r"^pretrained: must be 'synthetic', 'imagenet', 'none' or an existing "
                                          r"checkpoint file, got '/no/such\.pt'$"):
        preflight(c.replace(split_file=None, labels=12, pretrained="/no/such.pt"))
    moved = load_config("voc", "smoke", data_root=str(tmp_path / "gone"), train_list="t.txt")
    with pytest.raises(ConfigError, match=f"^data_root: no such folder {tmp_path / 'gone'}$"):
        preflight(moved)
    (tmp_path / "gone").mkdir()
    with pytest.raises(ConfigError, match=f"^train_list: no such list file {tmp_path / 'gone' / 't.txt'}$"):
        preflight(moved)
    with pytest.raises(ConfigError, match="^data_root: dataset 'voc' is read from files; set data_root"):
        preflight(moved.replace(data_root=None))


def test_a_folder_dataset_is_declared_not_registered():
    """``make_config`` registers nothing: two configurations may declare two datasets of one name,
    each resolved from its own keys (``data.config_dataset``)."""
    from selftrain_lib.data import DATASETS, config_dataset

    before = dict(DATASETS)
    a = make_config({"dataset": "leaves", "num_classes": 3, "ignore_index": 250, "crop_size": [16, 16],
                     "class_names": ["bg", "leaf", "spot"]})
    b = a.replace(num_classes=2, class_names=None)
    assert DATASETS == before and "leaves" not in DATASETS
    assert config_dataset(a).class_names == ("bg", "leaf", "spot") and config_dataset(a).ignore_index == 250
    assert config_dataset(b).num_classes == 2 and config_dataset(b).format == "folder"
    with pytest.raises(ConfigError, match="^dataset: unknown dataset 'leaves'"):
        a.replace(num_classes=None, class_names=None, ignore_index=255)
    with pytest.raises(ConfigError, match="^dataset: '../x' holds a '/'"):
        a.replace(dataset="../x")


def test_unknown_scale_and_dataset():
    with pytest.raises(ConfigError, match="scale"):
        load_config("synth-street", "huge")
    with pytest.raises(ConfigError, match="dataset"):
        load_config("cityscapes-but-typo", "quick")


def test_bad_yaml_key_names_file_and_key(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("dataset: synth-street\nbatchsize: 4\nscales: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*batchsize"):
        load_config("synth-street", "quick", params=p)


def test_round_trip_through_json():
    c = load_config("synth-objects", "quick", seed=3)
    again = make_config(json.loads(json.dumps(c.to_dict(), default=list)))
    assert again == c


def test_stage1_key_ignores_stage2_settings():
    c = load_config("synth-street", "quick")
    ablated = c.replace(cr=False, lambda1=2.0, sa=False)
    assert stage_key(c, 1) == stage_key(ablated, 1)      # ablations share Stage 1
    assert stage_key(c, 2) != stage_key(ablated, 2)
    assert stage_key(c, 2) == stage_key(c.replace(n2=False), 2)
    assert stage_key(c, 3) != stage_key(c.replace(n2=False), 3)
    assert stage_key(c, 1) == stage_key(c.replace(device="cpu", eval_batch_size=7), 1)


def test_config_is_plain_frozen_data():
    c = Config()
    with pytest.raises(Exception):
        c.lr = 1.0


def test_strong_augmentation_keys_enter_the_hash_of_stages_two_on():
    """randaug_prob / randaug_style / cutout_count are read by the method from Stage 2 on (issue 27:
    at their defaults too, since the format bump); the authors' setting (the paper presets) changes
    Stage 2's id, never Stage 1's."""
    c = load_config("synth-street", "quick")
    assert not {"randaug_prob", "randaug_style", "cutout_count"} & set(stage_key(c, 1))
    for stage in (2, 3):
        assert {"randaug_prob", "randaug_style", "cutout_count"} <= set(stage_key(c, stage))
    authors = c.replace(randaug_ops=3, randaug_prob=0.5, randaug_style="authors", randaug_magnitude=30,
                        cutout_count=3)
    assert stage_key(authors, 1) == stage_key(c, 1)
    key = stage_key(authors, 2)
    assert (key["randaug_prob"], key["randaug_style"], key["cutout_count"]) == (0.5, "authors", 3)
    paper = load_config("synth-objects", "paper")
    assert (paper.randaug_ops, paper.randaug_prob, paper.randaug_style, paper.randaug_magnitude,
            paper.cutout_count) == (3, 0.5, "authors", 30.0, 3)
