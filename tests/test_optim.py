"""The optimiser (selftrain_lib.optim): torch's Adam, bit for bit, without importing torch._dynamo."""
from __future__ import annotations

import sys

import pytest
import torch

from selftrain_lib.optim import Adam, EagerAdam


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.Conv2d(6, 2, 1))


def _train(cls, steps: int, resume_from: dict | None = None, first: int = 0) -> tuple[list[torch.Tensor], dict]:
    """Steps ``first``..``first + steps - 1`` of a small net (two parameter groups, weight decay, as
    a stage's), each on its own seeded batch."""
    net = _net()
    opt = cls([{"params": list(net[0].parameters()), "lr": 1e-3}, {"params": list(net[1:].parameters()), "lr": 1e-2}],
              lr=1e-3, weight_decay=5e-4)
    if resume_from is not None:
        net.load_state_dict(resume_from["net"])
        opt.load_state_dict(resume_from["opt"])
    for step in range(first, first + steps):
        opt.zero_grad(set_to_none=True)
        net(torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(step))).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()], {"net": net.state_dict(), "opt": opt.state_dict()}


def test_the_optimiser_is_torchs_adam_bit_for_bit_and_its_state_is_torchs():
    assert Adam is EagerAdam and isinstance(Adam([torch.zeros(1, requires_grad=True)]), torch.optim.Adam)
    ours, our_state = _train(Adam, 4)
    theirs, their_state = _train(torch.optim.Adam, 4)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert our_state["opt"]["param_groups"] == their_state["opt"]["param_groups"]
    for index, moments in their_state["opt"]["state"].items():
        assert all(torch.equal(our_state["opt"]["state"][index][k], v) for k, v in moments.items())
    # a checkpoint of torch's Adam resumes in ours (and the other way): the same weights again
    resumed, _ = _train(Adam, 2, resume_from=_train(torch.optim.Adam, 2)[1], first=2)
    assert all(torch.equal(a, b) for a, b in zip(resumed, theirs))
    resumed, _ = _train(torch.optim.Adam, 2, resume_from=_train(Adam, 2)[1], first=2)
    assert all(torch.equal(a, b) for a, b in zip(resumed, theirs))


def test_the_optimiser_never_imports_torch_dynamo(monkeypatch):
    """torch's guards import torch._dynamo on first use (~1.5 s of CPU per process); with it made
    unimportable, building, stepping, saving and loading the optimiser still work."""
    monkeypatch.setitem(sys.modules, "torch._dynamo", None)   # `import torch._dynamo` now raises
    with pytest.raises(ImportError):   # torch's own class: its step imports torch._dynamo every time
        torch.optim.Adam([torch.zeros(1, requires_grad=True)]).step()
    weights, state = _train(Adam, 2)
    _train(Adam, 1, resume_from=state)
    sched = torch.optim.lr_scheduler.OneCycleLR(Adam(_net().parameters(), lr=1e-3), max_lr=1e-3, total_steps=4)
    sched.optimizer.step()
    sched.step()


def test_a_stage_trains_without_torch_dynamo(monkeypatch, tmp_path):
    """The whole training path of a stage (model, optimiser, loop, end-of-stage pass) runs with
    torch._dynamo unimportable: a smoke run pays no compiler import."""
    from selftrain_lib.pipeline import run

    monkeypatch.setitem(sys.modules, "torch._dynamo", None)
    result = run(dataset="synth-street", scale="smoke", stages=2, out=tmp_path, progress=False)
    assert [r.reused for r in result.stages] == [False, False] and 0 < result.stages[1].val_miou < 1
