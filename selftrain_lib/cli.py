"""Command line: ``python -m selftrain_lib run ...`` and ``python -m selftrain_lib bench``."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import yaml

from .config import ConfigError, load_yaml
from .interrupt import handle_signals
from .methods import METHODS, SWITCHES, SWITCH_KEYS
from .paths import runs_dir

# The modules that load torch (about 2.5 s of CPU) are imported inside the command that needs
# them: ``--help`` and a wrong argument answer at once.


def _parse_set(items: list[str]) -> dict:
    """``--set key=value`` pairs; values are parsed as YAML 1.2 (``true``, ``3e-4``, ``[64, 64]``;
    ``1:30`` is the string it looks like, not YAML 1.1's base-60 90). A key given twice is an error."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        if key.strip() in out:
            raise ConfigError(f"--set {key.strip()}=...: given twice; keep one")
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem}); "
                              "quote strings, write lists as [64, 64]") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selftrain_lib",
                                     description="Three-stage self-training for semi-supervised segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run stages 1..N of the method (reusing finished runs)")
    r.add_argument("--dataset", default=None,
                   help="dataset name (params/<dataset>.yaml; default: the one --params names, else synth-street)")
    r.add_argument("--params", default=None, help="an explicit parameter YAML (for your own data)")
    r.add_argument("--labels", default=None,
                   help="the paper's label count (synth-street 100, 375, 750, 1500; synth-objects 30, 60, 150, 375) "
                        "or fraction (1/30, 1/50, ...), scaled to the pool of --scale; or 'full' (default: the "
                        "dataset's smallest count). Another count is a count of the pool, with a notice")
    r.add_argument("--scale", default="quick", help="preset: smoke, quick, cpu or paper")
    r.add_argument("--method", default=None, choices=tuple(METHODS),
                   help="; ".join(f"{m.name}: {m.help}" for m in METHODS.values()) + " (baselines are one stage)")
    r.add_argument("--stages", type=int, default=None, help="number of stages (default 3; 1 for a baseline)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--lambda1", type=float, default=None, help="weight of L_con")
    r.add_argument("--lambda2", type=float, default=None, help="weight of L_pl")
    for s in SWITCHES:
        r.add_argument(f"--no-{s.key}", dest=s.key, action="store_false", default=None, help=f"ablation: drop {s.drops}")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other configuration key")
    r.add_argument("--out", default=None,
                   help="run cache folder (default: $SELFTRAIN_RUNS, else runs/ of the checkout)")
    r.add_argument("--json", action="store_true", help="end with one JSON line of results")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")

    b = sub.add_parser("bench", help="measure training throughput, memory and pseudo-mask time")
    b.add_argument("--out", default="build/bench", help="folder for bench.json")
    b.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    b.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the GPU ladder")

    p = sub.add_parser("pretrain", help="rebuild the synthetic pre-trained backbones shipped with the package")
    p.add_argument("--into", default=None, help="folder to write them to (default: the package's weights/)")
    p.add_argument("--check", action="store_true", help="only check that each shipped file holds its recipe")
    return parser


DEBUG_ENV = "SELFTRAIN_DEBUG"


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one ``error: ...`` line naming the key, file or value at fault
    (``SELFTRAIN_DEBUG=1`` shows the traceback instead)."""
    args = build_parser().parse_args(argv)
    try:
        with handle_signals() as interrupt:  # Ctrl-C: exit 130, SIGTERM: exit 143, one line each
            if args.command == "run":
                return _run(args, interrupt)
            interrupt.resumable = args.command == "run"  # only runs keep checkpoints
            if args.command == "bench":
                from .bench import main as bench_main  # loads torch: only for this command

                if args.steps < 1:
                    raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
                return bench_main(args.out, args.steps, compile_model=not args.no_compile)
            if args.command == "pretrain":
                return _pretrain(args)
        return interrupt.exit_status
    except Exception as err:
        if os.environ.get(DEBUG_ENV):
            raise
        # errors of this library name the culprit and read as they are; other errors get their type
        ours = isinstance(err, (ConfigError, ValueError, OSError, RuntimeError))
        print(f"error: {err}" if ours else f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


def run_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`selftrain_lib.run` that a ``run`` command line asks for."""
    overrides = _parse_set(args.set)
    for key, flag in (("dataset", "--dataset"), ("scale", "--scale")):
        if key in overrides:
            raise ConfigError(f"--set {key}=...: give it as {flag} (it chooses the parameter file and preset)")
    for key in ("labels", "method"):  # keys with a flag of their own: either, not both
        if key in overrides:
            if getattr(args, key) is not None:
                raise ConfigError(f"{key}: given both as --{key} and as --set {key}=...")
            setattr(args, key, overrides.pop(key))
    for key in ("seed", "lambda1", "lambda2", *SWITCH_KEYS):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    kwargs = dict(dataset=args.dataset, labels=None, scale=args.scale, stages=args.stages, params=args.params,
                  method=args.method, **overrides)
    args.label_choice = label_choice(kwargs, _labels(args.labels))
    kwargs["labels"] = args.label_choice.used
    return kwargs


def label_choice(kwargs: dict, value) -> "LabelChoice":
    """What ``--labels value`` means for the run of ``kwargs`` (``labels`` left out): the paper's
    count scaled to the pool of the scale (:func:`selftrain_lib.label_counts.choose`); None: the
    params file's own count, named the same way."""
    from .data import dataset_info  # these load torch (module comment)
    from .label_counts import choose, count_stands_for, LabelChoice
    from .pipeline import resolve_run

    # the pool of the run (1: any count the pool holds; "full" and None resolve as they will train)
    config, _ = resolve_run(**{**kwargs, "labels": value if value in (None, "full") else 1})
    try:
        info = dataset_info(config.dataset)
        default = info.default_pool_size if info.format == "synthetic" else 0
    except ValueError:   # a folder dataset (registered when its data is read): no paper counts
        default = 0
    pool = config.pool_size or default
    if value is None:    # the params file's count (quick: 20, the paper's 100)
        stands = count_stands_for(config.dataset, config.labels, pool, default, minimum=config.labelled_per_batch)
        return LabelChoice(config.dataset, stands, config.labels, pool)
    # a dataset read from files: the paper's counts are its own (not scaled); its pool is counted later
    return choose(config.dataset, value, pool, default, config.labelled_per_batch, config.scale)


def _run(args, interrupt=None) -> int:
    from .distributed import current  # these load torch (module comment)
    from .pipeline import resolve_run, run_keys, run_stages
    from .runs import config_hash

    kwargs = run_kwargs(args)
    choice = args.label_choice
    if choice.notice:
        print(choice.notice, file=sys.stderr)
    print(f"{choice.dataset} · {choice.text(kwargs['scale'])}", file=sys.stderr)
    out = runs_dir(args.out)  # --out, else $SELFTRAIN_RUNS, else the checkout's runs/ (~ expanded)
    _check_out(out)
    config, stages = resolve_run(**kwargs)
    # the run keys, once: a missing file is named before they read the data, an interruption names
    # the first run not finished (the one training), and the stages train under the same keys
    keys = run_keys(config, stages)
    if interrupt is not None:
        interrupt.run_dirs = [out / config_hash(key) for key in keys]
    result = run_stages(config, stages, out, progress=not args.no_progress, keys=keys)
    if not current().is_main:  # under torchrun: rank 0 reports
        return 0
    name = f"{result.config.method} " if METHODS[result.config.method].single_stage else ""
    for r in result.stages:
        teacher = "" if r.val_miou_teacher is None else (
            f" (student {100 * r.val_miou_student:.2f}, teacher {100 * r.val_miou_teacher:.2f}; {r.eval_model} reported)")
        print(f"{name}stage {r.stage}: val mIoU {100 * r.val_miou:.2f}{teacher}  pseudo-mask mIoU (U) {100 * r.pseudo_miou:.2f}  "
              f"{'(reused) ' if r.reused else ''}{r.run_dir}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.summary()))
    return 0


def _pretrain(args) -> int:
    from . import pretrain  # loads torch (module comment)

    into = Path(args.into).expanduser() if args.into else pretrain.SHIPPED_DIR
    if args.check:
        problems = pretrain.check_shipped(into)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"{len(pretrain.shipped_recipes())} shipped backbones in {into} hold their recipes")
        return 1 if problems else 0
    for path in pretrain.build_shipped(into):
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _check_out(out: str | os.PathLike) -> None:
    """``--out`` must be a folder this process can write (found now, not after a stage trained)."""
    path = Path(out)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write in {existing} (permission denied)")


def _labels(value) -> int | str | None:
    """``--labels`` (a string) or ``--set labels=`` (parsed YAML): a whole number, a fraction such
    as ``1/30`` or ``"full"``; ``12.7`` is an error, not 12."""
    if value is None or value == "full" or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*/\s*\d+\s*", value):
        return value.replace(" ", "")
    raise ConfigError(f"--labels: expected an integer, a fraction such as 1/30, or 'full', got {value!r}")
