"""tools/gpu_check.sh in its reduced CPU mode: the path a lent GPU runs, at smoke size."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_reduced_writes_one_json(tmp_path):
    env = {**os.environ, "GPU_CHECK_REDUCED": "1", "PY": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "SELFTRAIN_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["reduced"] is True and report["device"] == "cpu" and report["steps_per_stage"] == 3
    assert "skipped" in report["bench"]
    for dataset in ("cityscapes", "voc"):
        paper, code = report[f"{dataset}/paper"], report[f"{dataset}/paper-code"]
        for entry in (paper, code):
            for stage in ("stage_1", "stage_2"):
                assert entry[stage]["losses_finite"] is True, entry[stage]
                assert entry[stage]["seconds_per_step"] > 0 and entry[stage]["precision"] == "fp32"
            assert entry["pseudo_mask_pass"]["images"] == 2 and entry["pseudo_mask_pass"]["seconds"] > 0
        # the presets differ where the authors' code departs from the paper
        assert paper["config"]["aspp_dilations"] == [6, 12, 18, 24] and code["config"]["aspp_dilations"] == [6, 12]
        assert code["config"]["align_corners"] is True and code["config"]["precision"] == "fp32"
    assert report["cityscapes/paper-code"]["stage_1"]["batch_size"] == 4
    assert report["cityscapes/paper"]["stage_1"]["batch_size"] == 5
