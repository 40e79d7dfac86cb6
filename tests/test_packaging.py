"""The project installs the same packages however it is installed."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-e")}
    assert {_name(p): p for p in listed} == {_name(p): p for p in wanted}


def test_torch_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make paper-figures" in readme


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "selftrain_lib", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--dataset", "--labels", "--scale", "--stages", "--seed", "--lambda1", "--lambda2", "--no-cr",
                 "--no-t2", "--no-sa", "--no-n2", "--no-ema", "--out", "--json"):
        assert flag in out


def test_ci_runs_both_test_tiers_and_make_test_leaves_out_only_the_heavy_one():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test " in ci or "make test\n" in ci
    assert "make test-heavy" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert '-m "not heavy"' in makefile and "-m heavy" in makefile and "--durations=25" in makefile
