"""The benchmark's measurements, on the small model at smoke sizes on the CPU (the GPU ladder
runs the same functions with DeepLabv2-R101; it is not a test of speed)."""
import dataclasses

import pytest
import torch

from selftrain_lib import bench
from selftrain_lib.config import load_config
from selftrain_lib.data import load_data, make_split, training_view


@pytest.fixture(scope="module")
def smoke():
    config = load_config("synth-street", "smoke", device="cpu")
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    return config, view, data.train_masks.clone(), data.info.num_classes


def test_time_steps_reports_throughput_draw_share_and_flops(smoke):
    config, view, pseudo, classes = smoke
    r = bench.time_steps(config, view, pseudo, classes, torch.device("cpu"), steps=2, stage=2, warmup=1, flops=True)
    assert r["images_per_second"] == pytest.approx(config.batch_size / r["seconds_per_step"])
    assert 0.0 < r["draw_share"] < 1.0
    assert r["flops_per_step"] > 0 and r["mfu"] is None          # no peak known for a CPU
    assert r["labelled_per_batch"] == config.labelled_per_batch and r["precision"] == "fp32"


def test_flops_grow_with_the_batch(smoke):
    config, view, _, classes = smoke
    counts = []
    for batch in (2, 4):
        cfg = dataclasses.replace(config, batch_size=batch)
        draw, step, _ = bench._step_fn(cfg, view, None, classes, torch.device("cpu"), stage=1)
        counts.append(bench.count_flops(draw, step))
    assert counts[1] == pytest.approx(2 * counts[0], rel=0.02)


def test_ladder_on_the_cpu_is_the_plain_step_only(smoke):
    config, view, pseudo, classes = smoke
    ladder = bench.optimisation_ladder(config, view, pseudo, classes, torch.device("cpu"), steps=1, stage=2)
    assert list(ladder) == ["fp32 plain"] and ladder["fp32 plain"]["speedup_vs_fp32_plain"] == 1.0


def test_pseudo_mask_pass_extrapolates_its_rate(smoke):
    config, *_ = smoke
    r = bench.pseudo_mask_pass(config, 9, torch.device("cpu"), images=3, size=(20, 30), total=30)
    assert r["seconds"] > 0 and r["seconds_for_30_images"] == pytest.approx(r["seconds"] * 10)


def test_paper_settings_follow_method_md():
    config, view, pseudo, classes = bench.paper_config("cityscapes", "cpu")
    assert tuple(config.crop_size) == (256, 512) and config.batch_size == 5 and config.labelled_per_batch == 1
    assert config.model == "deeplabv2-r101" and classes == 19 and view.images.shape[2:] == (272, 528)
    config, *_ = bench.paper_config("voc", "cpu")
    assert tuple(config.crop_size) == (321, 321) and config.batch_size == 10
    assert bench.peak_flops(torch.device("cpu")) is None


def test_sharing_reports_each_process_and_the_total():
    rows = bench.bench_sharing(steps=1, scale="smoke", layouts=((2, 1),))
    [row] = rows
    batch = load_config("synth-street", "smoke").batch_size
    assert row["processes"] == 2 and row["threads_each"] == 1 and len(row["seconds_per_step"]) == 2
    assert all(t > 0 for t in row["seconds_per_step"])
    assert row["images_per_second_total"] == pytest.approx(sum(batch / t for t in row["seconds_per_step"]), rel=0.02)
