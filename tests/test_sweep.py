"""Sweeps in parallel (selftrain_lib.sweep): the plan from hashes alone, and parallel = sequential."""
import json

import pytest

from selftrain_lib import experiments as ex
from selftrain_lib.config import load_config
from selftrain_lib.pipeline import run
from selftrain_lib.sweep import plan, resolve_jobs, run_parallel, stage_hashes


def _miou(out, run_hash):
    return json.loads((out / run_hash / "metrics.json").read_text())["val"]["miou"]


def test_stage_hashes_are_the_hashes_training_gives(tmp_path):
    result = run(dataset="synth-street", scale="smoke", stages=2, out=tmp_path, progress=False)
    assert stage_hashes(result.config, 2) == [r.run_hash for r in result.stages]


def test_plan_trains_shared_stages_once_and_skips_finished_ones(tmp_path):
    specs = ex.ablation_grid(["synth-street"], [0], drops=("none", "CR", "T2"))
    kwargs = [s.run_kwargs("smoke") for s in specs]
    jobs = plan(kwargs, tmp_path)
    hashes = {s.variant: stage_hashes(_cfg(s), 3) for s in specs}
    assert len({j.run_hash for j in jobs}) == len(jobs)
    assert {j.run_hash for j in jobs} == {h for hs in hashes.values() for h in hs}
    order = [j.run_hash for j in jobs]
    for j in jobs:  # every job comes after the stage it needs
        assert j.after is None or order.index(j.after) < order.index(j.run_hash)
    # once stage 1 of the full method is in the cache, it is not planned again
    run(out=tmp_path, progress=False, **dict(kwargs[0], stages=1))
    assert hashes["full method"][0] not in {j.run_hash for j in plan(kwargs, tmp_path)}
    assert len(plan(kwargs, tmp_path)) == len(jobs) - 1


def test_a_sweep_reads_each_datasets_identity_once_and_its_workers_never(tmp_path, monkeypatch):
    """The plan computes every job's run keys, reading the data's identity once per dataset (a
    dataset read from files: a stat of every file); a job carries its keys to the worker, which
    trains under them without reading the identity again."""
    from selftrain_lib import sweep
    from selftrain_lib.train import run_key

    calls = []
    real = run_key.data_identity

    def counted(config):
        calls.append(config.dataset)
        return real(config)

    monkeypatch.setattr(sweep, "data_identity", counted)
    monkeypatch.setattr(run_key, "data_identity", counted)
    kwargs = [dict(dataset=d, scale="smoke", seed=s, stages=2) for d in ("synth-street", "synth-objects")
              for s in (0, 1)]
    jobs = plan(kwargs, tmp_path)
    assert sorted(calls) == ["synth-objects", "synth-street"]
    assert len(jobs) == 8 and all(len(j.keys) == j.stages for j in jobs)
    assert all(run_key.config_hash(j.keys[-1]) == j.run_hash for j in jobs)
    calls.clear()
    first = next(j for j in jobs if j.after is None)
    assert sweep.train_stage_run(first, tmp_path, num_threads=None) == first.run_hash
    assert calls == [] and (tmp_path / first.run_hash / "metrics.json").is_file()


def test_a_worker_refuses_keys_its_code_does_not_give(tmp_path):
    """A job planned by another version of the library (here: a key edited) is not trained under
    its planned hash."""
    import dataclasses

    from selftrain_lib import sweep

    job = plan([dict(dataset="synth-street", scale="smoke", stages=1)], tmp_path)[0]
    edited = dict(job.keys[0], config={**job.keys[0]["config"], "lr": 1.0})
    with pytest.raises(RuntimeError, match=rf"stage 1: this process keys the run differently from the plan "
                                           rf"\({job.run_hash}\)"):
        sweep.train_stage_run(dataclasses.replace(job, keys=(edited,)), tmp_path)
    assert not (tmp_path / job.run_hash).exists()


def _cfg(spec):
    kw = spec.run_kwargs("smoke")
    return load_config(kw.pop("dataset"), kw.pop("scale"), **{k: v for k, v in kw.items() if k != "stages"})


def test_parallel_sweep_gives_the_numbers_of_a_sequential_one_thread_run(tmp_path):
    kwargs = [dict(dataset="synth-street", scale="smoke", seed=s, stages=2) for s in (0, 1)]
    trained = run_parallel(kwargs, out=tmp_path / "par", jobs=2, progress=False)
    assert len(trained) == 4 and len(set(trained)) == 4
    assert run_parallel(kwargs, out=tmp_path / "par", jobs=2, progress=False) == []   # all reused
    for kw in kwargs:
        seq = run(out=tmp_path / "seq", progress=False, num_threads=1, **kw)
        par = run(out=tmp_path / "par", progress=False, **kw)
        assert all(r.reused for r in par.stages)
        assert [r.run_hash for r in seq.stages] == [r.run_hash for r in par.stages]
        for r in seq.stages:
            assert _miou(tmp_path / "par", r.run_hash) == r.val_miou


def test_run_grid_with_jobs_returns_what_the_sequential_grid_returns(tmp_path):
    specs = ex.ablation_grid(["synth-street"], [0], drops=("none", "N2"))
    par = ex.run_grid(specs, "smoke", str(tmp_path), progress=False, jobs=2)
    assert [s for s, _ in par] == specs
    assert all(r.reused for _, res in par for r in res.stages)
    assert par.pairs[0][1].stages[1].run_hash == par.pairs[1][1].stages[1].run_hash  # N2 acts from stage 3 on


def test_a_failing_run_stops_the_sweep_and_is_named(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_text("not a checkpoint")
    kwargs = [dict(dataset="synth-street", scale="smoke", seed=5, stages=1, pretrained=str(bad)),
              dict(dataset="synth-street", scale="smoke", seed=6, stages=1, pretrained=str(bad))]
    with pytest.raises(RuntimeError, match=r"(?s)synth-street the preset's labels seed=[56] stage 1.*broken\.pt"):
        run_parallel(kwargs, out=tmp_path / "runs", jobs=2, progress=False)


def test_resolve_jobs():
    assert resolve_jobs(3) == 3
    assert resolve_jobs("2") == 2
    assert resolve_jobs("auto", device="cuda") == 1
    assert resolve_jobs("auto", device="cpu") >= 1
    with pytest.raises(ValueError, match="jobs"):
        resolve_jobs(0)
