"""Pinned run hashes: a refactor must not change what identifies a cached run.

Cached runs are found by hash (``runs/<hash>/``). A change that alters a hash silently retrains
every table, or worse, makes two different computations share a folder. These values were
computed from the code of December; change one only together with a deliberate change of what that
run computes, and say so in the commit. Last change: the `quick` and `cpu` presets were re-designed
on the paper's ratios (600-image pool, 2 labelled of 8, frozen batch norm, scaled EMA decays, the
teacher evaluated; issue 12), so every run of those scales is a new run; then synth-street's
learning rate (2e-3) and synth-objects' Stage-1 steps (2,000) were chosen on Stage 1 against full
supervision (docs/cpu_scale.md), again new runs of every stage on both stand-ins; last,
synth-street's `quick` Stage 1 went to 2,000 steps as synth-objects' (gap to full supervision 9.3
at 1,000 steps on this machine, 11.7 at 2,000), so every synth-street `quick` run is new.

December 7: synth-objects re-designed (background + 5 shapes, 2-4 objects an image, its own
generator digest; `cpu` on a 1,500-image pool: docs/cpu_scale.md, "The decision"), so every
synth-objects run is new; synth-street's hashes and the pre-training's did not move.

Re-pinned once more, every hash at once, with nothing computed differently (RUN_FORMAT_VERSION 2):
issue 27: hash declared by readers, evaluation protocol included. The hand-kept key sets of
config.py gave way to the keys each piece of code declares it reads (the method, the model factory,
the data, the batches, the loop: selftrain_lib.train.run_key.stage_key), and the evaluation protocol
(selftrain_lib.evaluate.protocol) entered the run key. The mIoU of every run is what it was (a smoke
pipeline and a baseline, before and after, agree to the last digit); the pre-trained backbones keep
their recipe hashes (tests/test_shipped_weights.py). The properties the old sets kept are tested below.
"""
import dataclasses

import pytest

from selftrain_lib import methods
from selftrain_lib.config import Config, execution_keys, load_config, make_config
from selftrain_lib.pipeline import resolve_run
from selftrain_lib.runs import config_hash
from selftrain_lib.train.run_key import RUN_FORMAT_VERSION, stage_key, stage_run_key, stage_run_keys
from selftrain_lib.sweep import stage_hashes

PINNED = [
    (dict(dataset="synth-street", labels=20, scale="quick"),
     ["7625141f3566daa8", "1447bea14299b5ee", "edf0a106ccbdd52d"]),
    (dict(dataset="synth-objects", labels=12, scale="quick", lambda1=0.25, lambda2=0.25),
     ["aa83e52f5adfc0a6", "169ca7036ae89d14", "6f0c4b963de7dbb1"]),
    (dict(dataset="synth-street", labels=20, scale="quick", cr=False),      # an ablation shares Stage 1
     ["7625141f3566daa8", "de7dfbde840cb0a1", "4f96173e36e8827b"]),
    (dict(dataset="synth-street", labels=20, scale="quick", method="mt-cutmix"),
     ["db2fd3372543b995"]),
    (dict(dataset="synth-street", labels="full", scale="quick", stages=1),
     ["8b80e88ffa0e1e3f"]),
    (dict(dataset="synth-objects", labels=30, scale="quick", lambda1=1.25, lambda2=1.25),
     ["2be34e7d3ded4bb3", "0062e063f602cc5f", "249b6a79ebb7b3ad"]),
    (dict(dataset="synth-street", labels=20, scale="cpu"),
     ["e29d4dd80bdcca96", "a7993af7524ea5c2", "bc615b5061f30df4"]),
    (dict(dataset="synth-objects", labels=30, scale="cpu", lambda1=0.25, lambda2=0.25),
     ["aa3f8797e8813daf", "5069eb3b9410c5b5", "d72180d990e649f4"]),
]


@pytest.mark.parametrize("kwargs,expected", PINNED, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_run_hashes_are_pinned(kwargs, expected):
    config, stages = resolve_run(**kwargs)
    assert stage_hashes(config, stages) == expected


def test_the_format_version_is_the_deliberate_one():
    assert RUN_FORMAT_VERSION == 2  # bumping it re-pins every hash above: say why in this file's docstring


# a folder dataset, explicit precision: the keys only such configurations read
FOLDER = dict(dataset="leaves", num_classes=3, ignore_index=250, class_names=["a", "b", "c"],
              palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], resize=[64, 96], train_list="t.txt", val_list="v.txt",
              data_root="/anywhere", precision="fp32")


def _representatives():
    """(config, stage, world size) covering every method, stage, data kind and reader."""
    c = load_config("synth-street", "quick")
    folder = make_config({**c.to_dict(), **FOLDER, "pool_size": None, "val_size": None})
    yield from ((c, stage, 1) for stage in (1, 2, 3))
    yield from ((c.replace(method=m), 1, 1) for m in ("supervised", "mt-cutout", "mt-cutmix"))
    yield from ((folder, stage, 2) for stage in (1, 2, 3))
    for model in ("deeplabv2-r101", "deeplabv2-r101-caffe"):  # the keys of the other model factories
        yield c.replace(model=model, pretrained="none", freeze_bn=True), 1, 1
    # the switches out of the key at their default (Switch.in_key_when_on False) enter it when off
    yield c.replace(**{s.key: False for s in methods.SWITCHES if not s.in_key_when_on}), 3, 1


def test_every_config_field_is_read_by_a_stage_or_marked_execution_only():
    """No hand-kept list: each field is declared by the code that reads it (it then appears in some
    stage's key: the configuration part or the evaluation protocol), or its own metadata says it
    changes how a run executes, not what it computes (``EXECUTION``)."""
    fields = {f.name for f in dataclasses.fields(Config)}
    declared = set()
    for config, stage, world_size in _representatives():
        declared |= set(stage_key(config, stage, world_size))
        if config.num_classes is None:  # (a folder dataset's run key reads its files: the same protocol)
            declared |= set(stage_run_key(config, stage, None, world_size)["protocol"]) & fields
    assert declared <= fields
    assert fields - declared == execution_keys(), "declare the key where it is read, or mark it EXECUTION"
    assert not declared & execution_keys()
    assert execution_keys() == {"scale", "checkpoint_every", "eval_batch_size", "device", "num_threads", "compile",
                                "num_workers", "data_root", "cache_dir"}


def test_configs_that_differ_in_execution_keys_only_share_every_hash(tmp_path):
    c, _ = resolve_run("synth-street", labels=20, scale="quick")
    other = c.replace(device="cpu", num_threads=3, num_workers=2, compile=True, eval_batch_size=7,
                      checkpoint_every=11, cache_dir=str(tmp_path), scale="smoke")
    assert stage_hashes(other, 3) == stage_hashes(c, 3)
    assert stage_hashes(c.replace(precision="auto"), 3) == stage_hashes(c, 3)


@pytest.mark.parametrize("change, changed", [
    (dict(lr=1e-4), [1, 2, 3]),                      # the loop
    (dict(crop_size=[32, 32]), [1, 2, 3]),           # the batches' weak augmentation
    (dict(widths=[8, 16, 32, 64]), [1, 2, 3]),       # the model factory (and its pre-training)
    (dict(stage1_steps=7), [1, 2, 3]),               # the method at Stage 1 (later stages follow their parent)
    (dict(lambda1=0.1), [2, 3]),                     # the method at stages >= 2
    (dict(randaug_prob=0.5), [2, 3]),
    (dict(n2=False), [3]),                           # a switch from its first stage on
    (dict(eval_model="student"), [2, 3]),            # the evaluation protocol (Stage 1 has no teacher)
    (dict(precision="fp32"), [1, 2, 3]),             # explicit precision; "auto" follows the device
    (dict(cons_weight=0.1), []),                     # a baseline's key: not the three-stage method's
])
def test_a_changed_reader_key_changes_the_hash_of_the_stages_that_read_it(change, changed):
    c, _ = resolve_run("synth-street", labels=20, scale="quick")
    before, after = stage_hashes(c, 3), stage_hashes(c.replace(**change), 3)
    assert [k for k in (1, 2, 3) if before[k - 1] != after[k - 1]] == changed


def test_the_evaluation_protocol_is_in_the_hash(monkeypatch):
    """Evaluating otherwise (another protocol text, e.g. sliding windows) is another run, never an
    old run reused under the new caption."""
    import selftrain_lib.evaluate as evaluate

    c, _ = resolve_run("synth-street", labels=20, scale="quick")
    key = stage_run_key(c, 2, None)
    assert key["protocol"] == {"evaluation": evaluate.PROTOCOL, "eval_model": "teacher", "num_classes": 10,
                               "ignore_index": 255, "image_size": [64, 128]}
    before = stage_hashes(c, 1)
    monkeypatch.setattr(evaluate, "PROTOCOL", evaluate.PROTOCOL + "; sliding window")
    assert stage_hashes(c, 1) != before


def _sa_out_of_key_at_default(monkeypatch) -> None:
    """SWITCHES as if ``sa`` were a switch added after the others: ``in_key_when_on`` False."""
    from selftrain_lib.methods import three_stage

    switches = tuple(dataclasses.replace(s, in_key_when_on=False) if s.key == "sa" else s for s in methods.SWITCHES)
    monkeypatch.setattr(methods, "SWITCHES", switches)
    monkeypatch.setattr(three_stage, "SWITCHES", switches)


def test_a_switch_out_of_the_key_at_its_default_enters_it_only_when_off(monkeypatch):
    """A switch added after the first five (``Switch.in_key_when_on`` False) leaves every existing
    hash where it was: at its default (on) it is in no key, off it enters the key of the stages that
    read it (``"sa": False``), which then hashes as it always did."""
    c, _ = resolve_run("synth-street", labels=20, scale="quick")
    before = stage_run_keys(c, 3)
    before_off = stage_hashes(c.replace(sa=False), 3)
    _sa_out_of_key_at_default(monkeypatch)
    on = stage_run_keys(c, 3)
    assert ["sa" in key["config"] for key in on] == [False, False, False]
    assert [stage_key(c.replace(sa=False), k).get("sa") for k in (1, 2, 3)] == [None, False, False]
    # on: the key is the one before less "sa" (Stage 1's, without sa already, unchanged)
    assert on[0] == before[0]
    assert on[1] == {**before[1], "config": {k: v for k, v in before[1]["config"].items() if k != "sa"}}
    assert config_hash(on[1]) != config_hash(before[1])
    # off: the same hashes as with sa hashed at its default too
    assert stage_hashes(c.replace(sa=False), 3) == before_off


def test_the_switches_hashed_at_their_default_are_the_five_first():
    """Their keys were in every hash of stages >= 2 before Switch.in_key_when_on existed: keeping
    them there keeps the pins above (a new switch leaves the field False: no hash moves)."""
    assert [s.key for s in methods.SWITCHES if s.in_key_when_on] == ["cr", "t2", "sa", "n2", "ema"]
