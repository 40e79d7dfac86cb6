"""The library's shape: no import cycle, one table of methods and ablation switches."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from selftrain_lib.cli import build_parser, run_kwargs
from selftrain_lib.methods import BASELINES, METHODS, SWITCHES

PACKAGE = Path(__file__).resolve().parent.parent / "selftrain_lib"


def _modules() -> dict[str, Path]:
    """``selftrain_lib.x.y`` → its file (a package is its ``__init__.py``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the library modules it imports, at module level or inside functions (every
    ``import`` statement of its source); ``from .pkg import name`` counts as an import of
    ``pkg.name`` when that is a module, else of ``pkg``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # selftrain_lib.x.attr → selftrain_lib.x
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) of ``graph``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "selftrain_lib.config" in graph["selftrain_lib"]            # from .config import ...
    assert "selftrain_lib.pipeline" in graph["selftrain_lib"]          # inside __getattr__
    assert "selftrain_lib.methods.base" in graph["selftrain_lib.methods.three_stage"]  # from .base import Method
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: s.key)
def test_every_switch_has_a_cli_flag_an_ablation_and_a_config_key(switch):
    from selftrain_lib.config import Config
    from selftrain_lib.experiments import DROPS
    from selftrain_lib.train.run_key import stage_key

    assert getattr(Config(), switch.key) is True
    kwargs = run_kwargs(build_parser().parse_args(["run", f"--no-{switch.key}"]))
    assert kwargs[switch.key] is False
    assert DROPS[switch.label] == {switch.key: False}
    # read (and hashed) from its first stage on only: ablations share the stages before; at its
    # default (on) hashed only where its row says so (Switch.in_key_when_on: the five first switches)
    off = Config().replace(**{switch.key: False})
    assert [switch.key in stage_key(off, k) for k in (1, 2, 3)] == [k >= switch.first_stage for k in (1, 2, 3)]
    assert [switch.key in stage_key(Config(), k) for k in (1, 2, 3)] == \
        [switch.in_key_when_on and k >= switch.first_stage for k in (1, 2, 3)]


def test_every_method_is_a_cli_choice_with_its_keys_in_the_config():
    from selftrain_lib.config import Config, ConfigError, load_config
    from selftrain_lib.experiments import BASELINES as GRID_BASELINES

    from selftrain_lib.methods import build

    fields = set(Config().to_dict())
    for name in METHODS:  # the keys each implementation declares it reads are configuration keys
        assert set(build(Config(method=name), 1).reads()) <= fields
    assert GRID_BASELINES == BASELINES
    for name in METHODS:
        assert run_kwargs(build_parser().parse_args(["run", "--method", name]))["method"] == name
    with pytest.raises(ConfigError, match=r"method: must be one of \['three-stage', 'supervised'"):
        load_config("synth-street", "smoke", method="mean-teacher")


# the entry points that answer without training: --help, a wrong argument, notebook parameters
LIGHT = ("selftrain_lib", "selftrain_lib.cli", "selftrain_lib.config", "selftrain_lib.notebook_params",
         "selftrain_lib.paths", "selftrain_lib.interrupt", "selftrain_lib.methods")


def test_the_light_entry_points_load_no_torch():
    """The modules that load torch (~2.5 s of CPU) are imported where they are needed (each such
    function-level import says so): importing these loads neither torch nor torchvision."""
    import subprocess
    import sys

    code = ("import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'pandas') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *LIGHT], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"importing {LIGHT} loads {proc.stdout.strip()}"
