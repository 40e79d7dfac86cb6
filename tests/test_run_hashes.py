"""Pinned run hashes: a refactor must not change what identifies a cached run.

Cached runs are found by hash (``runs/<hash>/``). A change that alters a hash silently retrains
every table, or worse, makes two different computations share a folder. These values were
computed from the code of December; change one only together with a deliberate change of what that
run computes, and say so in the commit. Last change: the `quick` and `cpu` presets were re-designed
on the paper's ratios (600-image pool, 2 labelled of 8, frozen batch norm, scaled EMA decays, the
teacher evaluated; issue 12), so every run of those scales is a new run.
"""
import pytest

from selftrain_lib.pipeline import resolve_run
from selftrain_lib.sweep import stage_hashes

PINNED = [
    (dict(dataset="synth-street", labels=20, scale="quick"),
     ["604822b1cb4871c5", "92a98187a304fe91", "c7b09b57620efe39"]),
    (dict(dataset="synth-objects", labels=12, scale="quick", lambda1=0.25, lambda2=0.25),
     ["8334fdb291c00a2e", "ee05a7c298b1b240", "4d0db3c1eed02188"]),
    (dict(dataset="synth-street", labels=20, scale="quick", cr=False),      # an ablation shares Stage 1
     ["604822b1cb4871c5", "06cdba4fc613dfc7", "52d5d71326e60ab2"]),
    (dict(dataset="synth-street", labels=20, scale="quick", method="mt-cutmix"),
     ["440877816a96b0af"]),
    (dict(dataset="synth-street", labels="full", scale="quick", stages=1),
     ["ae18f7e178820c84"]),
    (dict(dataset="synth-objects", labels=30, scale="quick", lambda1=1.25, lambda2=1.25),
     ["2d7be7eb90b3f768", "4897e49da2b3fe0d", "ddf0ef06e893925d"]),
    (dict(dataset="synth-street", labels=20, scale="cpu"),
     ["926780298d472552", "4c7118e025017a5f", "d6e57da02f8f80b9"]),
]


@pytest.mark.parametrize("kwargs,expected", PINNED, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_run_hashes_are_pinned(kwargs, expected):
    config, stages = resolve_run(**kwargs)
    assert stage_hashes(config, stages) == expected
