"""The optimiser of every run: :class:`torch.optim.Adam`, without importing ``torch._dynamo``.

torch wraps ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict``, ``load_state_dict`` and
``Adam.step`` in guards for ``torch.compile`` (``torch._disable_dynamo``, and graph breaks around
the step) that import ``torch._dynamo`` on their first call: about 1.5 s of CPU per process, a
quarter of a smoke run, spent on a compiler that eager training never enters (``config.compile``
compiles the model, never the optimiser). :class:`Adam` calls the very functions those guards wrap
(``__wrapped__``), so every update is torch's own code, bit for bit, and its ``state_dict`` is
torch's format (checkpoints and old runs load as before). Should a torch release drop a
``__wrapped__``, :data:`Adam` is torch's class itself: slower to start, the same numbers.
"""
from __future__ import annotations

import inspect

import torch
from torch.optim.optimizer import Optimizer

# Optimizer's guarded methods (torch._compile._disable_dynamo keeps the function as __wrapped__)
_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_UNWRAPPED = {name: getattr(getattr(Optimizer, name), "__wrapped__", None) for name in _GUARDED}
# Adam.step under its wrappers (optimizer._use_grad_for_differentiable: no grad, two graph breaks; and
# Optimizer's profiling hook, which torch puts on the class when a first torch.optim.Adam is built)
_ADAM_STEP = inspect.unwrap(torch.optim.Adam.step) if hasattr(torch.optim.Adam.step, "__wrapped__") else None


class EagerAdam(torch.optim.Adam):
    """``torch.optim.Adam`` with its compile guards left out (see the module's docstring)."""

    add_param_group = _UNWRAPPED["add_param_group"]
    zero_grad = _UNWRAPPED["zero_grad"]
    state_dict = _UNWRAPPED["state_dict"]
    load_state_dict = _UNWRAPPED["load_state_dict"]

    def step(self, closure=None):
        """One Adam update: torch's ``Adam.step``, under the ``no_grad`` its wrapper sets
        (``differentiable`` is never set here)."""
        with torch.no_grad():
            return _ADAM_STEP(self, closure)


Adam = EagerAdam if _ADAM_STEP is not None and all(_UNWRAPPED.values()) else torch.optim.Adam
