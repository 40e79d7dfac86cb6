"""tools/stage2_decomposition.py: a measurement split by seed is summarised from its per-seed CSVs."""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "stage2_decomposition.py"


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("stage2_decomposition")


def _rows(seeds, offset=0.0):
    out = []
    for seed in seeds:
        out.append({"dataset": "synth-street", "labels": "100", "row": "Stage 1 (supervised)", "seed": seed,
                    "student": 30.0 + seed + offset, "teacher": None, "pseudo_U": 40.0 + seed})
        out.append({"dataset": "synth-street", "labels": "100", "row": "Stage 2", "seed": seed,
                    "student": 31.0 + 2 * seed + offset, "teacher": 32.0 + seed, "pseudo_U": 41.0 + seed})
    return pd.DataFrame(out)


def test_seeds_from_two_sessions_summarise_as_one_measurement(tool, tmp_path):
    _rows([0]).to_csv(tmp_path / "seed0.csv", index=False)
    _rows([1, 2]).to_csv(tmp_path / "seed12.csv", index=False)
    # the first file given twice (a copy committed and the build output) counts once
    frame = tool.read_rows([tmp_path / "seed0.csv", tmp_path / "seed12.csv", tmp_path / "seed0.csv"])
    assert sorted(frame.seed) == [0, 0, 1, 1, 2, 2]
    table = tool.summarise(frame).set_index("row")
    assert table.loc["Stage 2", "seeds"] == 3
    s2 = [31.0, 33.0, 35.0]
    assert table.loc["Stage 2", "val mIoU, student"] == f"{statistics.mean(s2):.2f} ± {statistics.stdev(s2):.2f}"
    assert table.loc["Stage 2", "val mIoU, EMA teacher"] == "33.00 ± 1.00"
    assert table.loc["Stage 1 (supervised)", "val mIoU, EMA teacher"] == "–"   # Stage 1 has no teacher


def test_two_different_numbers_for_one_run_are_an_error(tool, tmp_path):
    _rows([0]).to_csv(tmp_path / "a.csv", index=False)
    _rows([0], offset=0.5).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match=r"a\.csv, .*b\.csv: different numbers for the same run"):
        tool.read_rows([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_from_csv_prints_the_table_and_names_a_bad_file(tmp_path):
    _rows([0, 1]).to_csv(tmp_path / "rows.csv", index=False)
    ok = subprocess.run([sys.executable, str(TOOL), "--from-csv", str(tmp_path / "rows.csv")],
                        capture_output=True, text=True, check=True)
    assert "| synth-street | 100 | Stage 2 | 32.00 ± 1.41 | 32.50 ± 0.71 | 41.50 ± 0.71 | 2 |" in ok.stdout.replace("  ", " ")
    pd.DataFrame({"dataset": ["x"], "mIoU": [1.0]}).to_csv(tmp_path / "other.csv", index=False)
    bad = subprocess.run([sys.executable, str(TOOL), "--from-csv", str(tmp_path / "other.csv")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "other.csv: not this tool's CSV (missing columns ['labels', 'row', 'seed'" in bad.stderr
