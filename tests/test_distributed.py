"""Data-parallel training (selftrain_lib.distributed): 2 processes with gloo on the CPU under
torchrun, at smoke scale, against the invariants of the single-process run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from selftrain_lib.config import load_config
from selftrain_lib.data import load_data, make_split, training_view
from selftrain_lib.distributed import SINGLE, World
from selftrain_lib.pipeline import run
from selftrain_lib.methods import build as build_method
from selftrain_lib.train import BatchSource

ROOT = Path(__file__).resolve().parent.parent


def _torchrun(out: Path, stages: int, method: str = "three-stage", *more: str, crash_at: int = 0) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CRASH_AT_CALL": str(crash_at)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out), str(stages), method, *more]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if crash_at:
        assert proc.returncode != 0
        return []
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_runs(shared_folder):
    """Two stages on two ranks, run once for the whole test run (``make test``'s workers share it):
    the run folders and what each rank recorded, ``(out, [rank 0's, rank 1's])``; tests only read them."""
    out = shared_folder("ddp-runs", lambda folder: _torchrun(folder, stages=2))
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ranks_keep_identical_weights_and_ema_teacher_every_step(ddp_runs):
    _, (r0, r1) = ddp_runs
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["weights"]) == len(r1["weights"]) > 0
    assert r0["weights"] == r1["weights"]            # student and EMA teacher, bit for bit, after every step
    assert all(math.isfinite(v) for v in r0["losses"] + r1["losses"])


def test_each_rank_draws_its_own_batches(ddp_runs):
    _, (r0, r1) = ddp_runs
    assert all(a != b for a, b in zip(r0["batches"], r1["batches"]))


def test_only_rank_zero_writes_and_every_rank_returns_the_same_run(ddp_runs):
    out, (r0, r1) = ddp_runs
    assert r1["writes"] == [] and any(p.endswith("metrics.json") for p in r0["writes"])
    assert r0["hashes"] == r1["hashes"] and r0["val_miou"] == r1["val_miou"]
    for h in r0["hashes"]:
        run_dir = out / h
        assert (run_dir / "metrics.json").is_file() and (run_dir / "pseudo_masks").is_dir()
        assert len(list((run_dir / "pseudo_masks").glob("*.png"))) == 96   # the whole smoke pool, from both shards
        curves = pd.read_csv(run_dir / "curves.csv")
        assert curves["loss"].notna().all() and curves["loss"].map(math.isfinite).all()
        assert json.loads((run_dir / "config.json").read_text())["key"]["world_size"] == 2


def test_two_ranks_are_another_run_than_one_process(ddp_runs, tmp_path):
    _, (r0, _) = ddp_runs
    single = run(dataset="synth-street", scale="smoke", stages=1, out=tmp_path, progress=False)
    assert single.stages[0].run_hash != r0["hashes"][0]


def test_a_mean_teacher_baseline_trains_on_two_ranks(tmp_path):
    r0, r1 = _torchrun(tmp_path, stages=1, method="mt-cutmix")
    assert r0["weights"] == r1["weights"] and r1["writes"] == []


def test_rank_r_of_n_draws_what_one_process_draws_at_step_s_times_n_plus_r(tmp_path):
    config = load_config("synth-street", "smoke", cache_dir=str(tmp_path))
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    method = build_method(config, 1)
    one = BatchSource(method, view, None, config, 1, torch.device("cpu"))
    ranks = [BatchSource(method, view, None, config, 1, torch.device("cpu"), World(r, 2)) for r in (0, 1)]
    for step in range(3):
        for r, source in enumerate(ranks):
            a, b = source(step), one(2 * step + r)
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert SINGLE.shard(5) == range(5) and list(World(1, 2).shard(5)) == [1, 3]


def test_a_file_dataset_on_two_ranks_writes_every_pseudo_mask_once(tmp_path):
    from test_real_data import _street_label, make_cityscapes

    root = tmp_path / "cs"
    for k in range(5):
        make_cityscapes(root, 24, 48, cities=(f"c{k}",), per_city=1, label=_street_label(24, 48, k))
    make_cityscapes(root, 24, 48, cities=("v0",), per_city=1, split="val", label=_street_label(24, 48, 0))
    r0, r1 = _torchrun(tmp_path / "runs", 2, "three-stage", "cityscapes", str(root))
    assert r0["weights"] == r1["weights"] and r1["writes"] == []
    for h in r0["hashes"]:
        masks = sorted(p.relative_to(tmp_path / "runs" / h / "pseudo_masks").as_posix()
                       for p in (tmp_path / "runs" / h / "pseudo_masks").rglob("*.png"))
        assert masks == [f"c{k}/c{k}_000000_000019.png" for k in range(5)]   # both shards (ranks 0 and 1)


def test_unwrap_sees_through_compile_and_averaging_is_a_no_op_in_one_process():
    from selftrain_lib.distributed import average_buffers, unwrap

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    compiled = torch.compile(net)          # lazy: nothing compiles until it is called
    assert unwrap(compiled) is net and unwrap(net) is net
    before = [b.clone() for b in net.buffers()]
    average_buffers(compiled)
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))


def test_an_interrupted_job_resumes_from_rank_zeros_checkpoint_bit_for_bit(ddp_runs, tmp_path):
    out, (r0, _) = ddp_runs
    # smoke: 6 steps per stage, a checkpoint every 3; stop both ranks before stage 2's 5th step
    _torchrun(tmp_path, 2, crash_at=6 + 5)
    stage2 = tmp_path / r0["hashes"][1]
    assert (tmp_path / r0["hashes"][0] / "metrics.json").is_file() and (stage2 / "checkpoint.pt").is_file()
    assert not (stage2 / "metrics.json").exists()
    resumed = _torchrun(tmp_path, 2)
    assert len(resumed[0]["weights"]) == 3          # stage 1 reused, stage 2 steps 4-6 trained again
    assert resumed[0]["weights"] == resumed[1]["weights"]
    a = torch.load(stage2 / "model.pt", weights_only=True)
    b = torch.load(out / r0["hashes"][1] / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
