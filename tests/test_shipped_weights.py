"""The synthetic backbones shipped with the package: present, holding their recipes, used as is."""
import subprocess
import sys

import pytest
import torch

from selftrain_lib import pretrain
from selftrain_lib.config import load_config
from selftrain_lib.runs import config_hash


def test_every_shipped_preset_has_its_backbone_with_its_recipe():
    recipes = pretrain.shipped_recipes()
    # quick (output stride 8) and cpu (4); synth-objects shares synth-street's backbones
    assert sorted(k["output_stride"] for k in recipes.values()) == [4, 8]
    assert pretrain.check_shipped() == []
    for name, key in recipes.items():
        payload = torch.load(pretrain.SHIPPED_DIR / name, map_location="cpu", weights_only=True)
        assert payload["key"] == key and name == f"{config_hash(key)}.pt"
        assert payload["train_accuracy_last_100_steps"] > 0.5  # it learned the pre-training task
    assert sorted(p.name for p in pretrain.SHIPPED_DIR.glob("*.pt")) == sorted(recipes)  # nothing stale


@pytest.mark.parametrize("scale", ["quick", "cpu"])
def test_a_shipped_preset_trains_no_backbone(scale, tmp_path, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the shipped backbone should have been used")

    monkeypatch.setattr(pretrain, "_build_backbone", no_build)
    config = load_config("synth-street", scale, cache_dir=str(tmp_path))
    state = pretrain.synthetic_state(config)
    net_state = pretrain.build_segmenter("deeplabv2-small", 2, widths=tuple(config.widths),
                                         output_stride=config.output_stride).backbone.state_dict()
    assert state.keys() == net_state.keys()
    assert not (tmp_path / "pretrain").exists()  # nothing built, nothing cached


TINY = dict(widths=(4, 4, 8, 8), steps=3, batch_size=4, num_images=16)


def test_build_shipped_writes_the_recipes_removes_stale_and_is_deterministic(tmp_path, monkeypatch):
    key = pretrain.backbone_key(**TINY)
    name = f"{config_hash(key)}.pt"
    monkeypatch.setattr(pretrain, "shipped_recipes", lambda: {name: key})
    (tmp_path / "0000000000000000.pt").write_bytes(b"an old recipe")
    (tmp_path / "README.md").write_text("kept")
    (tmp_path / "best_model.pt").write_bytes(b"a user's checkpoint")
    [path] = pretrain.build_shipped(tmp_path, progress=False)  # not the package's folder: removes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "README.md", "best_model.pt",
                                                                 "0000000000000000.pt"])
    [path] = pretrain.build_shipped(tmp_path, progress=False, prune=True)
    assert path == tmp_path / name and pretrain.check_shipped(tmp_path) == []
    # pruning removes only recipe-named files: a user's file in the folder is never deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "README.md", "best_model.pt"])
    first = torch.load(path, weights_only=True)["backbone"]
    path.unlink()
    pretrain.build_shipped(tmp_path, progress=False)
    second = torch.load(path, weights_only=True)["backbone"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_shipped_file_holding_another_recipe_is_an_error_naming_it(tmp_path, monkeypatch):
    key = pretrain.backbone_key(**TINY)
    other = dict(key, steps=4)
    path = tmp_path / f"{config_hash(key)}.pt"
    torch.save({"backbone": {}, "key": other}, path)
    monkeypatch.setattr(pretrain, "SHIPPED_DIR", tmp_path)
    with pytest.raises(RuntimeError, match=rf"{path.name}: shipped backbone's recipe .* python -m selftrain_lib pretrain"):
        pretrain.synthetic_backbone_state(cache_dir=tmp_path / "cache", progress=False, **TINY)
    monkeypatch.setattr(pretrain, "shipped_recipes", lambda: {path.name: key})
    assert pretrain.check_shipped(tmp_path) == [f"{path}: holds another recipe than {key}"]


def test_pretrain_check_command():
    done = subprocess.run([sys.executable, "-m", "selftrain_lib", "pretrain", "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "2 shipped backbones" in done.stdout
