"""The run hash is declared by the code that reads each key (selftrain_lib.train.run_key.stage_key):
check the declarations against what training reads.

Smoke-scale stages (the three stages and each baseline on generated data, the three stages on a
folder dataset read from files) train with a configuration that records every field the code reads. A field read while a stage trains must be in the stage's declared key or be
marked EXECUTION; a field declared must be read. The exceptions are listed below, each with its
reason, and the fields read but in no key are changed in a second run of the stage, which must
give the same key and the same weights. One exception follows a rule, not a list: a switch whose row
says ``in_key_when_on=False`` (selftrain_lib.methods.Switch) is in no key at its default (on), where
it computes what the code computed before the switch existed; off, it is in the key as any field.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from selftrain_lib import methods
from selftrain_lib.config import Config, execution_keys, load_config
from selftrain_lib.stage import run_stage
from selftrain_lib.train.run_key import stage_key, stage_run_key, stage_run_keys

# one pytest-xdist worker runs this module: the module fixture (every run trained with its reads
# recorded, in this process) is trained once, not once per worker
pytestmark = pytest.mark.xdist_group("declared_reads")

FIELDS = frozenset(f.name for f in fields(Config))
_READS: list[dict[str, str]] = []  # one record per stage training now: field -> where it was first read


class RecordingConfig(Config):
    """A :class:`Config` that notes each field the code reads while a stage trains. Copies of the
    whole record (``to_dict``, ``dataclasses.asdict`` for config.json, ``==``, ``repr``) read every
    field and decide nothing: they are not counted."""

    def __getattribute__(self, name: str):
        if _READS and name in FIELDS and name not in _READS[-1]:
            caller = sys._getframe(1)
            code = caller.f_code
            if not (code.co_filename.endswith("dataclasses.py") or code.co_filename == "<string>"
                    or code.co_name == "to_dict"):
                _READS[-1][name] = f"{code.co_filename.rsplit('selftrain_lib/', 1)[-1]}:{caller.f_lineno}"
        return object.__getattribute__(self, name)


# Read while any stage trains, in no key, changing nothing the stage computes
UNHASHED_READS = {
    "precision": "'auto' resolves by the device (no part of a hash, as device); an explicit one is "
                 "declared (run_key.loop_reads)",
    "sync_bn": "acts only when several processes train; declared then (run_key.loop_reads)",
    "num_classes": "None for a registered dataset: config_dataset reads it to tell a folder dataset, "
                   "whose num_classes is declared (data.datasets.FILE_READS)",
    "eval_model": "in the run key's evaluation protocol, as the network it resolves to (Method.evaluated)",
}

# Read at one stage only to be kept for later stages (the method is built from the whole
# configuration), or read and unused there: changed in test_unhashed_reads_change_nothing
_METHOD_KEYS = {"cr": False, "t2": False, "sa": False, "ema": False, "lambda1": 0.1, "lambda2": 0.2,
                "randaug_ops": 1, "randaug_magnitude": 15.0, "randaug_prob": 0.5, "randaug_style": "authors",
                "cutout_size": 8, "cutout_count": 3, "strong_aug_input": "normalised-uint8",
                "ema_decays": (0.9, 0.95, 0.97, 0.98), "ema_milestones": (0.25, 0.5, 0.75),
                "ema_reference_steps": 100}
UNUSED_READS = {
    # ThreeStage.__init__ reads the keys of stages >= 2 at every stage; Stage 1 trains on L alone
    # and its model has no auxiliary branch (so no conv6 for branch_init)
    ("three-stage", 1): {**_METHOD_KEYS, "branch_init": "normal-0.01"},
    ("supervised", 1): {**_METHOD_KEYS, "branch_init": "normal-0.01"},
    ("three-stage", 3): {"branch_init": "normal-0.01"},  # g~ (one private block) has no conv6
    ("mt-cutout", 1): {"branch_init": "normal-0.01"},  # the baselines' model has no auxiliary branch
    ("mt-cutmix", 1): {"branch_init": "normal-0.01"},
}

# Declared and not read, with the reason
DECLARED_UNREAD = {
    # generated data carries the registered dataset's ignore_index (validate requires the same
    # value); data_reads declares it for every dataset. Three-stage reads it in its augmentation.
    ("mt-cutout", 1): {"ignore_index"},
    ("mt-cutmix", 1): {"ignore_index"},
    # the Cityscapes reader's alone; validate keeps it at its default for every other dataset, and
    # data.datasets.FILE_READS declares it for every dataset read from files
    **{("folder", k): {"resize_filter"} for k in (1, 2, 3)},
}

# run -> (method, stages, dataset): the generated data, and a folder dataset read from files
# (the data's keys differ: data.datasets.FILE_READS)
RUNS = {"three-stage": ("three-stage", 3, "synth-street"), "supervised": ("supervised", 1, "synth-street"),
        "mt-cutout": ("mt-cutout", 1, "synth-street"), "mt-cutmix": ("mt-cutmix", 1, "synth-street"),
        "folder": ("three-stage", 3, "folder")}
STAGES = [(run, k) for run, (_, n, _) in RUNS.items() for k in range(1, n + 1)]
# fast: a few steps, yet a mid-stage evaluation, log line and checkpoint
FAST = dict(stage1_steps=4, steps=4, eval_every=2, log_every=2, checkpoint_every=2)
# a folder dataset of 8 images (6 train, 2 val), 3 classes, resized on reading
FOLDER = dict(num_classes=3, ignore_index=250, class_names=("background", "leaf", "spot"),
              palette=((0, 0, 0), (0, 160, 0), (160, 80, 0)), train_list="train.txt", val_list="val.txt",
              resize=(16, 16), crop_size=(8, 8), cutout_size=4, labels=2, split="random", pool_size=None,
              val_size=None)


def _folder(root):
    rng = np.random.default_rng(0)
    for k in range(8):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "images" / f"img{k}.png")
        mask = rng.integers(0, 3, (20, 24)).astype(np.uint8)
        mask[0] = 250
        Image.fromarray(mask).save(root / "masks" / f"img{k}.png")
    (root / "train.txt").write_text("".join(f"img{k}\n" for k in range(6)))
    (root / "val.txt").write_text("img6\nimg7\n")
    return root


def _config(run: str, root=None, **changes) -> RecordingConfig:
    method, _, dataset = RUNS[run]
    if dataset == "folder":
        changes = {**FOLDER, "data_root": str(root), **changes}
        dataset = "leaves"
    config = load_config("synth-street", "smoke", method=method, **FAST).replace(dataset=dataset, **changes)
    return RecordingConfig(**config.to_dict())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Each run's stages trained with reads recorded: {(run, stage): (config, key, reads, result, previous)}."""
    out = tmp_path_factory.mktemp("runs")
    root = _folder(tmp_path_factory.mktemp("leaves"))
    found = {}
    for run, (_, stages, _) in RUNS.items():
        config = _config(run, root)
        keys = stage_run_keys(config, stages)  # not recorded: computing a key reads what it declares
        previous = None
        for k, key in enumerate(keys, start=1):
            _READS.append({})
            try:  # each stage loads the data itself: its reads are the stage's
                result = run_stage(config, k, previous, out=out / run, progress=False, key=key)
            finally:
                reads = _READS.pop()
            assert not result.reused
            found[run, k] = (config, key, reads, result, previous)
            previous = result.pseudo_masks
    return found, root


def switches_on_out_of_key(config: Config) -> set[str]:
    """The switches ``config`` may read without declaring them: those out of the run key at their
    default (``Switch.in_key_when_on`` False, derived from ``methods.SWITCHES``) while at it (on)."""
    return {s.key for s in methods.SWITCHES if not s.in_key_when_on and getattr(config, s.key) is True}


def undeclared_reads(config: Config, key: dict, reads: dict[str, str], method: str, stage: int) -> dict[str, str]:
    """The fields of ``reads`` (field -> where read) that the stage's run key ``key`` does not
    declare and no exception allows."""
    declared = set(key["config"])  # Config fields ("method" names the method, as the field does)
    allowed = (declared | execution_keys() | set(UNHASHED_READS) | set(UNUSED_READS.get((method, stage), ()))
               | switches_on_out_of_key(config))
    return {f: reads[f] for f in sorted(set(reads) - allowed)}


@pytest.mark.parametrize("run,stage", STAGES)
def test_every_field_read_is_declared_and_every_declared_field_is_read(recorded, run, stage):
    config, key, reads, _, _ = recorded[0][run, stage]
    method = RUNS[run][0]
    declared = set(key["config"])
    undeclared = undeclared_reads(config, key, reads, method, stage)
    assert not undeclared, f"{method} stage {stage} reads fields its run key does not declare: {undeclared}"
    unread = sorted(declared & FIELDS - set(reads) - DECLARED_UNREAD.get((run, stage), set()))
    assert not unread, f"{method} stage {stage} declares fields it never reads: {unread}"
    # the exceptions are still exceptions: an entry the code outgrew is dropped from the lists
    stale = sorted(set(UNUSED_READS.get((method, stage), ())) - set(reads))
    assert not stale, f"{method} stage {stage}: listed as read and unused, but not read: {stale}"
    assert not (DECLARED_UNREAD.get((run, stage), set()) & set(reads))


def _weights(result):
    return torch.load(result.run_dir / "model.pt", weights_only=True)


@pytest.mark.parametrize("run,stage", [(r, k) for r, k in STAGES if (RUNS[r][0], k) in UNUSED_READS])
def test_unhashed_reads_change_nothing(recorded, tmp_path, run, stage):
    """The fields read but in no key, changed together: the same key, and the stage trains the same
    weights to the same validation mIoU."""
    found, root = recorded
    config, key, _, result, previous = found[run, stage]
    method = RUNS[run][0]
    other = {"eval_model": "teacher" if config.eval_model == "student" else "student"} if stage == 1 and \
        method in ("three-stage", "supervised") else {}  # Stage 1 has no teacher: the student is evaluated
    changed = _config(run, root, **UNUSED_READS[method, stage], sync_bn=True, **other)
    assert stage_run_key(changed, stage, previous) == key
    again = run_stage(changed, stage, previous, out=tmp_path, progress=False, key=key)
    assert not again.reused and again.val_miou == result.val_miou
    mine, ref = _weights(again), _weights(result)
    assert mine.keys() == ref.keys() and all(torch.equal(mine[k], ref[k]) for k in ref)


def _sa_out_of_key_at_default(monkeypatch) -> None:
    """SWITCHES as if ``sa`` were a switch added after the others (``in_key_when_on`` False)."""
    from selftrain_lib.methods import three_stage

    switches = tuple(dataclasses.replace(s, in_key_when_on=False) if s.key == "sa" else s for s in methods.SWITCHES)
    monkeypatch.setattr(methods, "SWITCHES", switches)
    monkeypatch.setattr(three_stage, "SWITCHES", switches)


def test_a_switch_read_outside_the_key_is_allowed_only_when_its_row_says_so_and_it_is_on(monkeypatch):
    """The rule, on a read of ``sa`` that a key lacking it does not declare (no training: the key
    and the reads are given)."""
    on = load_config("synth-street", "smoke")
    off = on.replace(sa=False)
    key = {"config": {k: v for k, v in stage_key(on, 2).items() if k != "sa"}}
    reads = {"sa": "methods/three_stage.py:1", "lambda1": "methods/three_stage.py:2"}
    # the real SWITCHES: sa is hashed at its default too, so reading it undeclared is an error
    before = switches_on_out_of_key(on)  # (the switches added after the five first: their own rows)
    assert "sa" not in before
    assert undeclared_reads(on, key, reads, "three-stage", 2) == {"sa": "methods/three_stage.py:1"}
    _sa_out_of_key_at_default(monkeypatch)
    assert switches_on_out_of_key(on) == before | {"sa"} and switches_on_out_of_key(off) == before
    assert undeclared_reads(on, key, reads, "three-stage", 2) == {}
    # off, the switch must be declared: an undeclared read of it is an error
    assert undeclared_reads(off, key, reads, "three-stage", 2) == {"sa": "methods/three_stage.py:1"}
    # and the method declares it then, as it does not at its default
    assert stage_key(off, 2)["sa"] is False and "sa" not in stage_key(on, 2)
    # a field that is no switch gets no such exception
    assert undeclared_reads(on, {"config": {}}, {"lr": "x:1"}, "three-stage", 2) == {"lr": "x:1"}
