"""Mixed precision: resolution per device, errors, and a bf16 autocast run on the CPU."""
import math

import pytest
import torch

from selftrain_lib.config import ConfigError, load_config
from selftrain_lib.precision import resolve_precision
from selftrain_lib.stage import run_stage
from selftrain_lib.train.run_key import stage_run_key


def test_auto_is_fp32_on_the_cpu_and_explicit_choices_resolve():
    p = resolve_precision("auto", "cpu")
    assert p.name == "fp32" and p.dtype is None and p.grad_scaler() is None
    assert resolve_precision("bf16", "cpu").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", "cpu")


def test_bf16_autocast_runs_a_stage_on_the_cpu(tmp_path):
    x = torch.rand(2, 8)
    lin = torch.nn.Linear(8, 3)
    with resolve_precision("bf16", "cpu").autocast():
        assert lin(x).dtype == torch.bfloat16  # autocast really engaged
    cfg = load_config("synth-street", "smoke", precision="bf16", device="cpu")
    r = run_stage(cfg, 1, out=tmp_path, progress=False)
    assert r.metrics["precision"] == "bf16"
    assert math.isfinite(r.val_miou)
    assert all(math.isfinite(row["loss"]) for row in r.curves().to_dict("records"))


def test_precision_key_and_hash():
    with pytest.raises(ConfigError, match="precision"):
        load_config("synth-street", "smoke", precision="half")
    auto = load_config("synth-street", "smoke")
    assert "precision" not in stage_run_key(auto, 1, None)["config"]  # auto: like the device, not hashed
    assert stage_run_key(auto.replace(precision="bf16"), 1, None)["config"]["precision"] == "bf16"
