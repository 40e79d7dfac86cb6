"""Pinned run hashes: a refactor must not change what identifies a cached run.

Cached runs are found by hash (``runs/<hash>/``). A change that alters a hash silently retrains
every table, or worse, makes two different computations share a folder. These values were
computed from the code of December; change one only together with a deliberate change of what that
run computes, and say so in the commit. Last change: the `quick` and `cpu` presets were re-designed
on the paper's ratios (600-image pool, 2 labelled of 8, frozen batch norm, scaled EMA decays, the
teacher evaluated; issue 12), so every run of those scales is a new run; then synth-street's
learning rate (2e-3) and synth-objects' Stage-1 steps (2,000) were chosen on Stage 1 against full
supervision (docs/cpu_scale.md), again new runs of every stage on both stand-ins.
"""
import pytest

from selftrain_lib.pipeline import resolve_run
from selftrain_lib.sweep import stage_hashes

PINNED = [
    (dict(dataset="synth-street", labels=20, scale="quick"),
     ["403ab3354ea04d55", "d706ee717118aa51", "0dee0fd99746b61d"]),
    (dict(dataset="synth-objects", labels=12, scale="quick", lambda1=0.25, lambda2=0.25),
     ["98d0973616776e88", "a0c359ac903af24d", "d992211a369c0b08"]),
    (dict(dataset="synth-street", labels=20, scale="quick", cr=False),      # an ablation shares Stage 1
     ["403ab3354ea04d55", "fe5f20c998cffdc7", "cc06bb53d15ce289"]),
    (dict(dataset="synth-street", labels=20, scale="quick", method="mt-cutmix"),
     ["2bd6546b37ed6b14"]),
    (dict(dataset="synth-street", labels="full", scale="quick", stages=1),
     ["1629fbe16ecfd63a"]),
    (dict(dataset="synth-objects", labels=30, scale="quick", lambda1=1.25, lambda2=1.25),
     ["1fa8be219c505f35", "117bd2e563031aca", "7eebec3c3cf027e0"]),
    (dict(dataset="synth-street", labels=20, scale="cpu"),
     ["d3e3e402b0d43f0f", "f1bc406e928afd4b", "02cdb6136b1d435c"]),
]


@pytest.mark.parametrize("kwargs,expected", PINNED, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_run_hashes_are_pinned(kwargs, expected):
    config, stages = resolve_run(**kwargs)
    assert stage_hashes(config, stages) == expected
