"""`make paper-figures`: every notebook through papermill, the tables' large grids first.

    python -m selftrain_lib.paper_figures --scale quick --seeds "0 1 2" --build build/notebooks   # figures/quick/

Executed notebooks go to ``--build`` (git-ignored), tables and figures to ``--figures``, stage runs
to the run cache ``--out`` (shared by all notebooks, so each run trains once). A notebook whose
source, parameters and library code are unchanged since its last successful execution, and whose
output files are all still there, is skipped: a second invocation trains and executes nothing.
A failing notebook stops the build; its last lines name the notebook, the cell's error and the
executed notebook that holds the full traceback. Ctrl-C (exit 130) and SIGTERM (exit 143) print
one line: a rerun resumes (finished runs and notebooks are reused, a run from its checkpoint).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .progress import tqdm

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
# execution order: the tables' large grids first (their runs train `jobs` at a time), then the
# notebooks of one run or a few, which find theirs in the run cache
NOTEBOOK_ORDER = ("headline", "table2", "table3_4", "table5", "table6", "fig2", "fig3", "fig4_5", "pseudo_stages", "per_class_gains",
                  "stage1", "stage2", "stage3", "baselines", "ablation", "lambda_curve", "explore")


# What `make paper-figures` runs at a CPU scale, as notebook parameters (a `-p` of the user's wins).
# At `quick` the 30-minute regeneration (README) drops columns and one baseline: Tables
# II-IV at the ablation label count (where the ablations' runs are the same runs) with CutMix as the
# mean-teacher baseline (Cutout: the `baselines` notebook), Tables V and VI on synth-street only
# (Fig. 2 keeps synth-objects' T2 ablation), Fig. 3 and the λ curve on synth-street at three values
# of λ, pseudo-masks over three stages. `cpu` (the results of record, `figures/cpu/`, hours of 2
# cores) runs the same plan; `max_seeds` keeps the first N of --seeds for a notebook: the headline,
# Tables II-VI, Fig. 3 and the λ curve take every seed; Fig. 2 (curves of one run and its T2
# ablation, which only the run cache holds) and Figs. 4-5 (predictions) the first. `paper` runs everything.
_QUICK_PLAN = {
    "table2": {"labels": [100], "baselines": ["mt-cutmix"]},
    "table3_4": {"labels": [60], "baselines": ["mt-cutmix"]},
    "table5": {"datasets": ["synth-street"]},
    "table6": {"datasets": ["synth-street"]},
    "fig3": {"datasets": ["synth-street"], "lambdas": [0.25, 0.5, 1.0]},
    "lambda_curve": {"lambdas": [0.25, 0.5, 1.0]},
    "pseudo_stages": {"stages": 3},
}
_ONE_SEED = ("fig2", "fig4_5")
SCALE_PARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": _QUICK_PLAN,
    "cpu": {name: {**_QUICK_PLAN.get(name, {}), **({"max_seeds": 1} if name in _ONE_SEED else {})}
            for name in set(_QUICK_PLAN) | set(_ONE_SEED)},
}
# where `make paper-figures` writes a scale's tables and figures (the committed record is `cpu`'s)
FIGURES_ROOT = "figures"


# beside a scale's figures: one summary per stage run the notebooks used (selftrain_lib.record);
# not `runs/`, the run cache's name, which git ignores
SUMMARIES = "run_summaries"


def default_figures_dir(scale: str) -> str:
    """``figures/<scale>``: one folder per scale, so the fast check never overwrites the record."""
    return f"{FIGURES_ROOT}/{scale}"


class NotebookFailed(RuntimeError):
    """A notebook raised: carries papermill's error and the executed notebook's path."""

    def __init__(self, name: str, executed: Path, error: BaseException):
        self.name, self.executed, self.error = name, executed, error
        super().__init__(f"notebook {name} failed; executed notebook (with the error): {executed}\n{error}")

    def summary(self) -> str:
        """The last lines a user reads: which notebook and cell, the error (not papermill's
        traceback of 50-100 lines, which the executed notebook keeps), and what to do."""
        ename, evalue = getattr(self.error, "ename", None), getattr(self.error, "evalue", None)
        cell = getattr(self.error, "exec_count", None)
        what = f"{ename}: {evalue}" if ename else f"{type(self.error).__name__}: {self.error}"
        return (f"error: notebook {self.name} failed" + (f" in cell [{cell}]" if cell else "") + f": {what}\n"
                f"  the executed notebook, with the full traceback: {self.executed}\n"
                "  change the parameter, key or file the error names, then run the same command again "
                "(finished runs and notebooks are reused)")


class UsageError(ValueError):
    """A command-line argument names no notebook, or a parameter no notebook declares."""


def declared_parameters(path: Path) -> dict[str, Any]:
    import papermill as pm

    return pm.inspect_notebook(str(path))


def notebook_parameters(path: Path, scale: str, seeds: Sequence[int], out: str | Path, figures_dir: str | Path,
                        extra: Mapping[str, Any] | None = None, jobs: int | str = 1) -> dict[str, Any]:
    """The common parameters, restricted to those the notebook declares (``seed`` = first seed)."""
    declared = declared_parameters(path)
    values = {"scale": scale, "seeds": list(seeds), "seed": int(seeds[0]), "out": str(out),
              "figures_dir": str(figures_dir), "jobs": jobs, **(extra or {})}
    return {k: v for k, v in values.items() if k in declared}


def real_data_parameters(declared: Mapping[str, Any], data: Mapping[str, str]) -> dict[str, Any] | None:
    """The parameters that run a notebook on the real datasets in ``data`` (``{"cityscapes": folder,
    "voc": folder}``) in place of the embedded stand-ins: ``dataset`` / ``datasets`` swapped (stand-ins
    without a real dataset given are dropped from ``datasets``), and ``data_roots``. ``None``: the
    notebook's only dataset has no real counterpart in ``data`` (skip it). ``{}`` when ``data`` is empty."""
    import ast

    from .experiments import STAND_INS

    if not data:
        return {}
    unknown = sorted(set(data) - set(STAND_INS.values()))
    if unknown:
        raise ValueError(f"data: unknown datasets {unknown} (known: {sorted(STAND_INS.values())})")
    swap = {stand_in: real for stand_in, real in STAND_INS.items() if real in data}
    values: dict[str, Any] = {}
    if "dataset" in declared:
        default = ast.literal_eval(declared["dataset"]["default"])
        if default not in swap:
            return None
        values["dataset"] = swap[default]
    if "datasets" in declared:
        values["datasets"] = [swap[d] for d in ast.literal_eval(declared["datasets"]["default"]) if d in swap]
        if not values["datasets"]:
            return None
    if "data_roots" in declared:
        values["data_roots"] = {k: str(v) for k, v in data.items()}
    return values


def _source_digest() -> str:
    h = hashlib.sha256()
    for p in sorted([*(ROOT / "selftrain_lib").rglob("*.py"), *(ROOT / "selftrain_lib").glob("*.csv"),
                     *(ROOT / "params").glob("*.yaml")]):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _files(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _stamp(name: str, parameters: Mapping[str, Any], build_dir: str | Path, notebook_dir: str | Path = NOTEBOOK_DIR,
           source_digest: str | None = None) -> tuple[Path, str, bool]:
    """(stamp file, key of this execution, whether the last successful execution had this key and
    its executed notebook and outputs are all still there)."""
    src, executed = Path(notebook_dir) / f"{name}.ipynb", Path(build_dir) / f"{name}.ipynb"
    stamp_path = Path(build_dir) / ".stamps" / f"{name}.json"
    key = hashlib.sha256(json.dumps({"notebook": src.read_bytes().decode(), "parameters": dict(parameters),
                                     "library": source_digest or _source_digest()},
                                    sort_keys=True, default=str).encode()).hexdigest()
    if not (stamp_path.is_file() and executed.is_file()):
        return stamp_path, key, False
    stamp = json.loads(stamp_path.read_text())
    return stamp_path, key, stamp.get("key") == key and all(Path(p).is_file() for p in stamp.get("outputs", []))


def execute(name: str, parameters: Mapping[str, Any], build_dir: str | Path, notebook_dir: str | Path = NOTEBOOK_DIR,
            force: bool = False, figures_dir: str | Path | None = None, source_digest: str | None = None,
            progress: bool = False) -> tuple[Path, bool]:
    """Execute ``notebook_dir/<name>.ipynb`` with ``parameters`` into ``build_dir/<name>.ipynb``.

    Returns (executed notebook, whether it ran). Skips when the stamp of the last successful
    execution matches and its outputs exist (unless ``force``). Raises :class:`NotebookFailed`."""
    import papermill as pm
    from jupyter_client.kernelspec import KernelSpecManager

    src = Path(notebook_dir) / f"{name}.ipynb"
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    executed = build_dir / f"{name}.ipynb"
    stamp_path, key, current = _stamp(name, parameters, build_dir, notebook_dir, source_digest)
    if current and not force:
        return executed, False
    fig_dir = Path(figures_dir) if figures_dir is not None else None
    before = _files(fig_dir) if fig_dir else {}
    env_path = os.environ.get("PYTHONPATH", "")
    # the kernel imports this checkout, whatever its working directory
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    try:
        kernel = "selftrain" if "selftrain" in KernelSpecManager().find_kernel_specs() else "python3"  # the project's
        pm.execute_notebook(str(src), str(executed), parameters=dict(parameters), kernel_name=kernel,
                            progress_bar=progress, cwd=str(ROOT), log_output=False)
    except pm.PapermillExecutionError as err:
        stamp_path.unlink(missing_ok=True)
        raise NotebookFailed(name, executed, err) from err
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            os.environ.pop("PYTHONPATH", None)
    after = _files(fig_dir) if fig_dir else {}
    outputs = sorted(p for p, t in after.items() if before.get(p) != t)
    from .runs import atomic_write_json

    atomic_write_json(stamp_path, {"key": key, "outputs": outputs, "time": time.time()})
    return executed, True


def planned_runs(path: Path, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stage runs notebook ``path`` asks for with ``parameters``, as keyword arguments of
    :func:`selftrain_lib.run`: its parameters cell, then ``parameters``, then its cell of derived
    values (which builds ``specs``, or the one ``spec``) run here, training nothing. ``[]`` for a
    notebook that builds neither, or whose cell raises (papermill then reports the error, with the
    executed notebook, when the notebook itself runs)."""
    import contextlib
    import io

    import nbformat

    from .experiments import grid_run_kwargs

    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    space: dict[str, Any] = {}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(cells[0], space)
            space.update(parameters)
            exec(cells[1], space)
    except Exception:
        return []
    specs = space.get("specs") or ([space["spec"]] if "spec" in space else [])
    return list(grid_run_kwargs(specs, space["scale"], space.get("data_roots"), space.get("config")).values())


def build(scale: str = "quick", seeds: Sequence[int] = (0,), figures_dir: str | Path | None = None,
          build_dir: str | Path = "build/notebooks", out: str | Path | None = None, only: Sequence[str] | None = None,
          extra: Mapping[str, Mapping[str, Any]] | None = None, force: bool = False,
          notebook_dir: str | Path = NOTEBOOK_DIR, progress: bool = True,
          jobs: int | str = 1, data: Mapping[str, str] | None = None,
          from_record: bool = False) -> list[tuple[str, Path, bool]]:
    """Execute the notebooks (all, or ``only``) in :data:`NOTEBOOK_ORDER`. ``extra[name]`` adds
    parameters for one notebook (``extra["*"]`` for all that declare them). ``jobs`` > 1: the stage
    runs of every notebook are trained first, ``jobs`` at a time in one pool
    (:func:`selftrain_lib.sweep.run_parallel`, each run as soon as the stage it needs is done), so
    that no core waits while one notebook finishes a chain of stages; the notebooks then read them
    from the cache. ``data``: ``{"cityscapes": folder, "voc": folder}`` runs the notebooks on those
    datasets in place of their embedded stand-ins (:func:`real_data_parameters`); notebooks of a
    stand-in not given are skipped. ``from_record``: the notebooks that can (those declaring ``record``)
    read the runs the scale's committed run summaries hold (``<figures>/run_summaries``; whole trees of
    runs that share a Stage 1) from there, so that a record is regenerated on a machine without its run
    cache, training only what the record lacks (:func:`selftrain_lib.record.recorded_results`)."""
    from .paths import runs_dir

    out = runs_dir(out)
    figures_dir = figures_dir or default_figures_dir(scale)
    names = [n for n in NOTEBOOK_ORDER if only is None or n in only]
    unknown = sorted(set(only or ()) - set(NOTEBOOK_ORDER))
    if unknown:
        raise UsageError(f"only: unknown notebooks {unknown} (choose from {', '.join(NOTEBOOK_ORDER)})")
    _check_extra(names, extra or {}, notebook_dir)
    digest = _source_digest()
    record = Path(figures_dir).resolve() / SUMMARIES if from_record else None
    if record is not None and not record.is_dir():
        raise UsageError(f"from record: {record} holds no run summaries (a record is made by a run without it)")
    todo: list[tuple[str, dict[str, Any] | None]] = []   # (name, parameters; None: skipped)
    for name in names:
        path = Path(notebook_dir) / f"{name}.ipynb"
        more = {**(extra or {}).get("*", {}), **(extra or {}).get(name, {})}
        declared = declared_parameters(path)
        real = real_data_parameters(declared, data or {})
        if real is not None and not real:   # the embedded stand-ins: the scale's plan of runs
            more = {**SCALE_PARAMETERS.get(scale, {}).get(name, {}), **more}
        these = list(seeds)[: more.pop("max_seeds", None) or len(seeds)]
        if record is not None and "record" in declared:
            more.setdefault("record", str(record))
        todo.append((name, None if real is None else notebook_parameters(
            path, scale, these, out, figures_dir, {k: v for k, v in {**real, **more}.items() if k in declared}, jobs)))
    # each notebook's runs, planned once: trained in one pool (jobs > 1), then summarised
    planned = {name: planned_runs(Path(notebook_dir) / f"{name}.ipynb", params)
               for name, params in todo if params is not None}
    if jobs != 1:
        from .record import recorded_results
        from .sweep import run_parallel

        def to_train(runs, params):   # a run the notebook reads from the record is not trained
            if not params.get("record"):
                return runs
            return [r for r, recorded in zip(runs, recorded_results(runs, params["record"])) if recorded is None]

        runs = [r for name, params in todo if params is not None
                and (force or not _stamp(name, params, build_dir, notebook_dir, digest)[2])
                for r in to_train(planned[name], params)]
        run_parallel(runs, out=out, jobs=jobs, progress=progress, desc="stage runs of every notebook")
    done = []
    bar = tqdm(todo, desc="notebooks", disable=not progress, dynamic_ncols=True)
    for name, params in bar:
        bar.set_postfix_str(name)
        if params is None:
            done.append((name, Path(build_dir) / f"{name}.ipynb", False))
            bar.write(f"{name}: skipped (its dataset's real counterpart was not given)")
            continue
        executed, ran = execute(name, params, build_dir, notebook_dir, force, figures_dir, digest)
        done.append((name, executed, ran))
    # every number of the tables links to its run: a small summary per stage run, beside the figures
    from .record import planned_run_dirs, write_summaries

    write_summaries(planned_run_dirs([r for runs in planned.values() for r in runs], out),
                    Path(figures_dir) / SUMMARIES)
    return done


def _check_extra(names: Sequence[str], extra: Mapping[str, Mapping[str, Any]], notebook_dir: str | Path) -> None:
    """A parameter for every notebook (``extra["*"]``, ``-p``) that none of ``names`` declares would
    be passed to none: an error naming it (as is one for a notebook that does not declare it)."""
    import difflib

    declared = {n: declared_parameters(Path(notebook_dir) / f"{n}.ipynb") for n in names}
    every = sorted(set().union(*declared.values())) if declared else []
    for key, params in extra.items():
        scope = declared.get(key, {}) if key != "*" else every
        if key != "*" and key not in declared:
            continue   # parameters for a notebook not executed this time
        for name in params:
            if name not in scope:
                close = difflib.get_close_matches(name, list(scope), n=1)
                raise UsageError(f"parameter {name!r}: no notebook of this build declares it"
                                 + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; parameters: {', '.join(scope)}")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _name_value(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise UsageError(f"{option}: expected NAME=FOLDER, got {item!r}")
    return name, value


def _seeds(text: str) -> list[int]:
    seeds = text.replace(",", " ").split()
    if not seeds or not all(s.isdigit() for s in seeds):
        raise UsageError(f'--seeds: expected non-negative integers separated by spaces or commas, such as "0 1 2", '
                         f"got {text!r}")
    return [int(s) for s in seeds]


def _jobs(text: str) -> int:
    from .sweep import resolve_jobs

    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise UsageError(f"--jobs: expected a positive integer or 'auto', got {text!r}")
    return resolve_jobs(text)


def _scale(scale: str) -> str:
    """A preset of every stand-in's params file (a typo would fail in the first notebook)."""
    from .config import scale_presets
    from .experiments import DATASETS

    known = sorted(set.intersection(*(set(scale_presets(d)) for d in DATASETS)))
    if scale not in known:
        raise UsageError(f"--scale: {scale!r} is not a preset (choose from {', '.join(known)})")
    return scale


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selftrain_lib.paper_figures", description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="quick", help="scale preset (smoke, quick, cpu, paper)")
    p.add_argument("--seeds", default="0", help='seeds, separated by spaces or commas: "0 1 2"')
    p.add_argument("--figures", default=None, help="tables and figures folder (default: figures/<scale>)")
    p.add_argument("--build", default="build/notebooks", help="executed notebooks folder (git-ignored)")
    p.add_argument("--out", default=None, help="run cache folder (default: $SELFTRAIN_RUNS, else runs/ of the checkout)")
    p.add_argument("--only", nargs="*", help="execute only these notebooks (names without .ipynb, separated by spaces "
                                              "or commas: table2,fig3)")
    p.add_argument("--param", "-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="extra parameter for every notebook that declares it; VALUE is JSON (e.g. '[0.5]')")
    p.add_argument("--jobs", default="auto",
                   help="stage runs trained at once, one thread each (default auto: one per CPU core, 1 on a GPU)")
    p.add_argument("--data", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="run on real datasets in place of their stand-ins: cityscapes=FOLDER voc=FOLDER")
    p.add_argument("--force", action="store_true", help="execute even notebooks whose inputs did not change")
    p.add_argument("--from-record", action="store_true",
                   help="read the runs that the committed run summaries of the scale hold from there "
                        "(<figures>/run_summaries) where a notebook can (tables, the headline, λ and pseudo-mask "
                        "figures), training only what the record lacks")
    args = p.parse_args(argv)
    extra = {"*": {k: _value(v) for k, v in args.param}}
    t0 = time.perf_counter()
    from .interrupt import handle_signals
    from .paths import runs_dir

    try:
        seeds, jobs, scale = _seeds(args.seeds), _jobs(args.jobs), _scale(args.scale)
        data = dict(_name_value(item, "--data") for item in args.data)
        only = [n for item in args.only for n in item.replace(",", " ").split()] if args.only else None
        with handle_signals() as interrupt:
            interrupt.where = f"run cache {runs_dir(args.out)}, executed notebooks in {args.build}"
            figures = args.figures or default_figures_dir(scale)
            done = build(scale, seeds, figures, args.build, args.out, only, extra, args.force, jobs=jobs,
                         data=data, from_record=args.from_record)
        if interrupt.exit_status:
            return interrupt.exit_status
    except UsageError as err:
        p.error(str(err))   # argparse's usage line and `error: ...`, exit status 2
    except NotebookFailed as err:
        print(f"\n{err.summary()}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as err:   # e.g. a stage run of the pool (--jobs) failing
        if os.environ.get("SELFTRAIN_DEBUG"):
            raise
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    ran = [n for n, _, r in done if r]
    print(f"{len(done)} notebooks ({len(ran)} executed, {len(done) - len(ran)} unchanged) in "
          f"{time.perf_counter() - t0:.1f} s; executed notebooks in {args.build}, figures in {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
