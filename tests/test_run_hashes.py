"""Pinned run hashes: a refactor must not change what identifies a cached run.

Cached runs are found by hash (``runs/<hash>/``). A change that alters a hash silently retrains
every table, or worse, makes two different computations share a folder. These values were
computed from the code of December (commit 900ed53); change one only together with a deliberate
change of what that run computes, and say so in the commit.
"""
import pytest

from selftrain_lib.pipeline import resolve_run
from selftrain_lib.sweep import stage_hashes

PINNED = [
    (dict(dataset="synth-street", labels=100, scale="quick"),
     ["d48dccae6c1c1fca", "76ad189f83d43305", "b645d7b0f6da5c8e"]),
    (dict(dataset="synth-objects", labels=60, scale="quick", lambda1=0.25, lambda2=0.25),
     ["6103beff197a17e4", "b9056a5ab6247511", "8a75c054fb4ca7be"]),
    (dict(dataset="synth-street", labels=100, scale="quick", cr=False),      # an ablation shares Stage 1
     ["d48dccae6c1c1fca", "c8fc05794ddd2d69", "5c4b36b8851865a3"]),
    (dict(dataset="synth-street", labels=100, scale="quick", method="mt-cutmix"),
     ["ccf6341c070db98b"]),
    (dict(dataset="synth-street", labels="full", scale="quick", stages=1),
     ["b5acf672d557d3f4"]),
    (dict(dataset="synth-objects", labels=150, scale="quick", lambda1=1.25, lambda2=1.25),
     ["d5e20f130e1511ea", "ffa26d51958096d0", "b896de44e467faeb"]),
    (dict(dataset="synth-street", labels=100, scale="cpu"),
     ["766211ff35fedce0", "f7e8997ff66cd24b", "a7cfc0fdbe2c64ab"]),
]


@pytest.mark.parametrize("kwargs,expected", PINNED, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_run_hashes_are_pinned(kwargs, expected):
    config, stages = resolve_run(**kwargs)
    assert stage_hashes(config, stages) == expected
