"""The baselines (selftrain_lib/methods/mean_teacher.py): box masks, mixing and the confidence threshold on
constructed inputs, the run hashes, and one smoke-scale run of each method."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import selftrain_lib
from selftrain_lib.methods import mean_teacher as bl
from selftrain_lib.config import ConfigError, load_config
from selftrain_lib.runs import config_hash
from selftrain_lib.stage import run_stage
from selftrain_lib.train.run_key import stage_run_key


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------
# boxes
# ------------------------------------------------------------------------------------------

def test_boxes_lie_inside_the_image_with_the_drawn_area():
    boxes = bl.sample_boxes(500, 40, 60, (0.5, 0.5), _gen())
    y0, x0, y1, x1 = boxes.unbind(1)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y1 <= 40).all() and (x1 <= 60).all()
    area = ((y1 - y0) * (x1 - x0)).double() / (40 * 60)
    assert area.mean().item() == pytest.approx(0.5, abs=0.03)     # rounding to whole pixels only
    assert not torch.equal(boxes[0], boxes[1])                     # random position and aspect ratio
    empty = bl.sample_boxes(8, 40, 60, (0.0, 0.0), _gen())
    assert ((empty[:, 2] - empty[:, 0]) * (empty[:, 3] - empty[:, 1]) == 0).all()
    assert torch.equal(bl.sample_boxes(4, 40, 60, (0, 1), _gen(3)), bl.sample_boxes(4, 40, 60, (0, 1), _gen(3)))


def test_box_mask_is_one_exactly_inside_the_box():
    m = bl.box_mask(torch.tensor([[1, 2, 3, 5], [0, 0, 0, 0]]), 4, 6)
    expected = torch.zeros(2, 4, 6)
    expected[0, 1:3, 2:5] = 1
    assert torch.equal(m, expected)


# ------------------------------------------------------------------------------------------
# Cutout and CutMix on constructed inputs
# ------------------------------------------------------------------------------------------

def test_cutout_erases_exactly_the_box():
    x = torch.rand(2, 3, 8, 10) + 0.1                              # no zero pixel before erasing
    boxes = torch.tensor([[2, 3, 5, 7], [0, 0, 8, 1]])
    erased, kept = bl.CutoutMask().apply(x, boxes)
    inside = bl.box_mask(boxes, 8, 10).bool()
    assert torch.equal(erased == 0, inside[:, None].expand_as(x))  # erased pixels are exactly the box
    assert torch.equal(erased[~inside[:, None].expand_as(x)], x[~inside[:, None].expand_as(x)])
    assert torch.equal(kept, (~inside).float())                    # the loss region is what was kept


def test_cutmix_mixes_exactly_the_box_and_the_teacher_targets_with_the_same_mask():
    cm = bl.CutMixMask()
    x = torch.arange(3).float().view(3, 1, 1, 1).expand(3, 3, 6, 8).clone()   # image i is constant i
    boxes = torch.tensor([[1, 2, 4, 6], [0, 0, 6, 4], [2, 2, 3, 3]])
    m = bl.box_mask(boxes, 6, 8)
    mixed = cm.mix(x, cm.partners(x), m)
    for i in range(3):
        partner = (i - 1) % 3
        inside = m[i].bool()
        assert (mixed[i][:, inside] == partner).all() and (mixed[i][:, ~inside] == i).all()
    # teacher probabilities: image i predicts class i everywhere; mixed with the same mask
    prob = F.one_hot(torch.arange(3).view(3, 1, 1).expand(3, 6, 8), 3).permute(0, 3, 1, 2).float()
    target = cm.mix(prob, cm.partners(prob), m).argmax(1)
    image_source = mixed[:, 0].long()
    assert torch.equal(target, image_source)                       # each pixel's target comes from its image
    # integer masks mix the same way
    ids = torch.arange(3).view(3, 1, 1).expand(3, 6, 8)
    assert torch.equal(cm.mix(ids, cm.partners(ids), m), image_source)


# ------------------------------------------------------------------------------------------
# the consistency loss and its confidence threshold
# ------------------------------------------------------------------------------------------

def _probs(conf_map):
    """Two-class probabilities whose max is ``conf_map`` (B, H, W)."""
    return torch.stack([conf_map, 1 - conf_map], 1)


def test_confidence_threshold_masks_the_right_pixels():
    conf = torch.tensor([[[0.99, 0.50], [0.97, 0.96]]])
    assert torch.equal(bl.confidence_mask(_probs(conf), 0.97), torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))


def test_consistency_loss_counts_confident_pixels_in_the_region():
    teacher = _probs(torch.tensor([[[0.99, 0.50], [0.98, 0.60]]]))
    student = torch.zeros(1, 2, 2, 2)                              # softmax 0.5 / 0.5 everywhere
    dist = bl.squared_prob_distance(student, teacher)
    assert dist[0, 0, 0].item() == pytest.approx(2 * 0.49 ** 2)
    region = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    per_pixel, rate = bl.consistency_loss(student, teacher, region, 0.97, conf_per_pixel=True)
    assert rate.item() == pytest.approx(0.5)
    assert per_pixel.item() == pytest.approx(dist[0, 0, 0].item() / 4)   # only (0,0): confident and in the region
    scaled, _ = bl.consistency_loss(student, teacher, region, 0.97, conf_per_pixel=False)
    assert scaled.item() == pytest.approx(0.5 * (dist * region).mean().item())  # French et al.'s default
    off, rate_off = bl.consistency_loss(student, teacher, region, 0.0)
    assert off.item() == pytest.approx((dist * region).mean().item()) and rate_off.item() == 1.0


def test_consistency_loss_is_zero_when_the_student_agrees():
    teacher = _probs(torch.full((2, 3, 3), 0.99))
    logits = torch.log(teacher)
    loss, _ = bl.consistency_loss(logits, teacher, torch.ones(2, 3, 3), 0.97)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# configuration and run hashes
# ------------------------------------------------------------------------------------------

def test_method_in_the_hash_and_supervised_shares_stage_one():
    c = load_config("synth-street", "smoke")
    h = {m: config_hash(stage_run_key(c.replace(method=m), 1, None))
         for m in ("three-stage", "supervised", "mt-cutout", "mt-cutmix")}
    assert h["three-stage"] == h["supervised"]
    assert len({h["three-stage"], h["mt-cutout"], h["mt-cutmix"]}) == 3
    # three-stage runs do not read the baseline keys: their hashes do not move
    for stage in (1, 2):
        assert stage_run_key(c.replace(cons_weight=0.3, cutmix_area=(0.2, 0.4)), stage, None) == \
            stage_run_key(c, stage, None)
    # a baseline's hash moves with what it reads, not with the other baseline's box
    cut = c.replace(method="mt-cutmix")
    assert config_hash(stage_run_key(cut.replace(cutout_area=(0.1, 0.2)), 1, None)) == h["mt-cutmix"]
    assert config_hash(stage_run_key(cut.replace(cutmix_area=(0.25, 0.5)), 1, None)) != h["mt-cutmix"]
    assert config_hash(stage_run_key(cut.replace(conf_threshold=0.9), 1, None)) != h["mt-cutmix"]


def test_bad_baseline_settings_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match="method"):
        load_config("synth-street", "smoke", method="fixmatch")
    with pytest.raises(ConfigError, match="conf_threshold"):
        load_config("synth-street", "smoke", conf_threshold=1.5)
    with pytest.raises(ConfigError, match="cutmix_area"):
        load_config("synth-street", "smoke", cutmix_area=[0.6, 0.4])
    with pytest.raises(ConfigError, match="labelled_per_batch"):
        load_config("synth-street", "smoke", method="mt-cutmix", batch_size=3, labelled_per_batch=2)
    with pytest.raises(ValueError, match="single-stage"):
        selftrain_lib.run(dataset="synth-street", scale="smoke", method="mt-cutout", stages=2, out="unused")
    with pytest.raises(ValueError, match="single-stage"):
        run_stage(load_config("synth-street", "smoke", method="mt-cutmix"), 2, None)


# ------------------------------------------------------------------------------------------
# one smoke-scale run of each method
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["supervised", "mt-cutout", "mt-cutmix"])
def test_smoke_run_of_each_method_writes_results_and_reuses_them(method, tmp_path):
    kw = dict(dataset="synth-objects", scale="smoke", out=tmp_path, progress=False, method=method)
    if method != "supervised":
        kw["conf_threshold"] = 0.0   # an untrained teacher is never 97 % sure: let the loss act
    first = selftrain_lib.run(**kw)
    assert len(first.stages) == 1 and not first.stages[0].reused
    r = first.stages[0]
    assert r.metrics["stage"] == 1 and r.metrics["steps"] == first.config.stage1_steps
    for name in ("config.json", "metrics.json", "curves.csv", "model.pt", "val_samples.npz"):
        assert (r.run_dir / name).is_file(), name
    saved = json.loads((r.run_dir / "config.json").read_text())["config"]
    assert saved["method"] == method
    curves = r.curves()
    assert np.isfinite(curves["loss"]).all() and np.isfinite(curves["loss_seg"]).all()
    if method == "supervised":
        assert curves["loss_con"].isna().all()
        stage1 = selftrain_lib.run(dataset="synth-objects", scale="smoke", out=tmp_path, progress=False, stages=1)
        assert stage1.stages[0].reused and stage1.stages[0].run_dir == r.run_dir   # one run, one hash
    else:
        assert np.isfinite(curves["loss_con"]).all() and (curves["loss_con"] > 0).all()
        assert (curves["ema_decay"] == 0.99).all() and (curves["conf_rate"] == 1.0).all()
    again = selftrain_lib.run(**kw)
    assert again.stages[0].reused and again.stages[0].metrics == r.metrics
    assert 0.0 <= r.val_miou <= 1.0 and not math.isnan(r.val_miou)


def test_baseline_consistency_changes_training_and_threshold_is_applied(tmp_path):
    base = dict(dataset="synth-objects", scale="smoke", out=tmp_path, progress=False)
    a = selftrain_lib.run(method="mt-cutmix", **base).stages[0]
    assert (a.curves()["conf_rate"] < 1.0).all()                  # 0.97 on an untrained teacher
    sup = selftrain_lib.run(method="supervised", **base).stages[0]
    wa = torch.load(a.run_dir / "model.pt", weights_only=True)
    ws = torch.load(sup.run_dir / "model.pt", weights_only=True)
    assert any(not torch.equal(wa[k], ws[k]) for k in wa)          # other batches: Sub-batch 1 from L∪U


def test_cli_method_flag(tmp_path):
    cmd = [sys.executable, "-m", "selftrain_lib", "run", "--dataset", "synth-objects", "--scale", "smoke",
           "--method", "mt-cutout", "--out", str(tmp_path), "--json", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["method"] == "mt-cutout" and set(summary["stages"]) == {"1"}
