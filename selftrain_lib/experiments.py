"""Named experiment grids: for each table and figure of the paper, the runs it needs.

A grid is a list of :class:`RunSpec` (dataset, *nominal* label count, overrides, stages, seed).
Label counts are written as in the paper's tables, scaled to the embedded 3,000-image pools
(synth-street 100 / 375 / 750 / 1500 for Cityscapes 100 / 372 / 744 / 1488; synth-objects
30 / 60 / 150 / 375 for VOC 1/100 / 1/50 / 1/20 / 1/8). A scale whose pool is smaller (``smoke``:
96 images) scales them down in proportion (:func:`scaled_labels`), so every grid runs at every
scale. The same grids run on the paper's datasets read from files (``cityscapes``, ``voc``) at
the paper's label counts, given ``data_roots``. :func:`run_grid` runs a grid through :func:`selftrain_lib.run` and the run cache: runs
shared between grids (Stage 1 of every ablation, the default three-stage run) train once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .data import records
from .data.records import View
from .label_counts import LABEL_COUNTS, STAND_INS, label_text as _label_text, paper_count, scale_count
from .methods import BASELINES, SWITCHES
from .progress import tqdm

# Every table of dataset facts here is read from the dataset records (selftrain_lib/data/records.py,
# each registered where its dataset lives): the grids' default datasets are the embedded stand-ins,
# the paper's datasets (read from files, README "Datasets") those registered under their own facts.
DATASETS = tuple(n for n, r in records.RECORDS.items() if r.info.format == "synthetic" and records.paper_of(n))
REAL_DATASETS = tuple(n for n, r in records.RECORDS.items() if r.paper is not None)

# LABEL_COUNTS (label_counts): nominal label counts (of the 3,000-image pool; the paper's own for the
# real datasets); PAPER_LABELS: the paper's name for the same cell
PAPER_LABELS = View(lambda: {n: records.paper_labels_of(n) for n in records.RECORDS if records.paper_of(n)})
# the paper's dataset (its key in paper_results.csv) and its name in captions
PAPER_DATASET = View(lambda: {n: records.paper_of(n).key for n in records.RECORDS if records.paper_of(n)})
PAPER_DATASET_NAME = View(lambda: {n: records.paper_of(n).name for n in records.RECORDS if records.paper_of(n)})
# the setting of the ablations (Tables V, VI; Figs. 2, 3): Cityscapes 100 and VOC 1/50 (212 images)
ABLATION_LABELS = View(lambda: {n: records.ablation_labels_of(n) for n in records.RECORDS if records.paper_of(n)})
# the baselines trained by the same code (methods.BASELINES: method -> row label). `supervised`
# is Stage 1 of every three-stage run (same run), so a label grid needs no extra run for it.

# the components an ablation can drop, as Config overrides (Table V, Table VI)
DROPS: dict[str, dict[str, bool]] = {"none": {}, **{s.label: {s.key: False} for s in SWITCHES}}
# Table V's runs: the full method and one per switch of Table V (EMA's is Table VI: ema_grid)
TABLE_V_DROPS: tuple[str, ...] = ("none", *(s.label for s in SWITCHES if s.table == "V"))


def switch_overrides(switches: Mapping[str, Any] | None) -> dict[str, bool]:
    """The switches a notebook's ``switches`` parameter sets (``{"sa": False}``), checked: a key that
    is no switch of :data:`selftrain_lib.methods.SWITCHES`, or a value that is not True/False, is an
    error naming it and the switches there are."""
    import difflib

    keys = [s.key for s in SWITCHES]
    out = {}
    for key, value in dict(switches or {}).items():
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            raise ValueError(f"switches: {key!r} is not a switch" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; the switches are {', '.join(keys)}")
        if not isinstance(value, bool):
            raise ValueError(f"switches: {key} must be true or false, got {value!r}")
        out[key] = value
    return out


def check_dataset(dataset: str) -> str:
    if dataset not in LABEL_COUNTS:
        raise ValueError(f"dataset: expected one of {list(LABEL_COUNTS)}, got {dataset!r}")
    return dataset


def paper_lambda(dataset: str, labels: int | str) -> float:
    """The paper's λ1 (= λ2) for ``dataset`` at a nominal label count, from the one table of λ per
    label count: the dataset's params file (``lambda1`` under ``by_labels``, docs/method.md: Cityscapes
    1/2; VOC 1/4, 1/4, 5/4, 5/8). The CLI resolves the same value (:func:`config.label_settings`)."""
    from .config import label_settings

    check_dataset(dataset)
    if labels == "full" or labels is None:
        labels = max(LABEL_COUNTS[dataset])
    return float(label_settings(dataset, int(labels))["lambda1"])


def scaled_labels(dataset: str, labels: int | str, scale: str, data_root: str | None = None) -> int | str:
    """The label count to run at ``scale`` for a nominal count.

    Pools of the dataset's default size (3,000 embedded images; 2,975 Cityscapes, 10,582 VOC
    images) run the nominal count; smaller pools (``smoke``, or a subset of a real dataset under
    ``data_root``) get the same fraction, at least ``labelled_per_batch`` images. ``"full"`` stays
    ``"full"``."""
    if labels == "full":
        return labels
    from .config import load_config
    from .data import dataset_info

    labels = int(labels)
    info = dataset_info(dataset)
    if info.format == "synthetic":
        cfg = load_config(dataset, scale)
        pool = cfg.pool_size or info.default_pool_size
    else:   # read from files: the pool is what the train list holds
        if data_root is None:
            return labels
        cfg = load_config(dataset, scale, data_root=data_root)
        pool = _file_pool_size(dataset, scale, str(data_root))
    return scale_count(labels, pool, info.default_pool_size, cfg.labelled_per_batch)


def label_text(dataset: str, labels: int | str, scale: str | None = None, data_root: str | None = None) -> str:
    """A title's name for a nominal label count at ``scale``: ``"100 labels (20 used)"``,
    ``"60 labels (1/50, 12 used)"``, ``"full supervision"`` (:func:`selftrain_lib.label_counts.label_text`)."""
    used = None if scale is None or labels == "full" else scaled_labels(dataset, labels, scale, data_root)
    return _label_text(dataset, labels, used)


@lru_cache(maxsize=16)
def _file_pool_size(dataset: str, scale: str, data_root: str) -> int:
    """The number of training images under ``data_root``: listed once per grid, not once per spec."""
    from .config import load_config
    from .data import load_data

    return load_data(load_config(dataset, scale, data_root=data_root)).pool_size


@dataclass(frozen=True)
class RunSpec:
    """One pipeline run of a grid. ``labels`` is nominal (see the module docstring)."""

    dataset: str
    labels: int | str
    stages: int = 3
    seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()
    variant: str = "full method"          # the row label in tables (e.g. "without CR")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.overrides)

    def label_text(self, scale: str | None = None) -> str:
        """``"100 labels (20 used)"`` at ``quick``; ``"full supervision"`` (figure titles)."""
        return label_text(self.dataset, self.labels, scale)

    def describe(self, scale: str | None = None) -> str:
        """One line for people: ``synth-street · 100 labels (20 used at quick) · seed 0 · stages 1–3 ·
        full method · lambda1=0.25, ...`` (the label count is the paper's; the pool's count follows at
        ``scale``). Full supervision is one supervised run: ``synth-objects · full supervision · seed 1``."""
        labels = self.label_text(scale)
        if scale is not None and labels.endswith(" used)"):
            labels = f"{labels[:-1]} at {scale})"
        options = ", ".join(f"{k}={v}" for k, v in self.overrides)
        full = self.labels == "full"
        stages = "" if full else "Stage 1" if self.stages == 1 else f"stages 1–{self.stages}"
        variant = "" if full and self.variant == "full method" else self.variant
        return " · ".join(p for p in (self.dataset, labels, f"seed {self.seed}", stages, variant, options) if p)

    def run_kwargs(self, scale: str, data_root: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`selftrain_lib.run` for this spec at ``scale`` (datasets read
        from files: under ``data_root``, which is where the data is, not part of the run)."""
        where = {"data_root": str(data_root)} if data_root is not None else {}
        return {"dataset": self.dataset, "labels": scaled_labels(self.dataset, self.labels, scale, data_root),
                "stages": self.stages, "seed": self.seed, "scale": scale, **where, **self.options}


def spec(dataset: str, labels: int | str, seed: int = 0, stages: int = 3, variant: str = "full method",
         **overrides: Any) -> RunSpec:
    """A :class:`RunSpec` with the paper's λ1 = λ2 for the label count unless given."""
    check_dataset(dataset)
    labels = _nominal(dataset, labels)
    if labels != "full" and stages > 1:
        lam = paper_lambda(dataset, labels)
        overrides.setdefault("lambda1", lam)
        overrides.setdefault("lambda2", overrides["lambda1"])
    return RunSpec(dataset, labels, stages, seed, tuple(sorted(overrides.items())), variant)


def _nominal(dataset: str, labels: Any) -> int | str:
    """A label count is a positive integer, a paper's fraction or number (``"1/50"``, ``"212"`` for
    synth-objects: its 60) or ``"full"`` (a notebook's ``-p labels -5`` would otherwise be scaled up
    to ``labelled_per_batch`` without a word). Returns the count as the grids write it."""
    if isinstance(labels, str) and labels != "full":
        named = paper_count(dataset, labels)
        if named is None:
            from .label_counts import valid_spellings

            raise ValueError(f"labels: {labels!r} is not one of {dataset}'s paper counts or fractions "
                             f"({valid_spellings(dataset)}); give one, a positive integer or 'full'")
        return named
    if labels != "full" and (isinstance(labels, bool) or not isinstance(labels, int) or labels < 1):
        raise ValueError(f"labels: expected a positive integer, a paper's fraction such as '1/30' or 'full', "
                         f"got {labels!r}")
    return labels


def _seeds(seeds: Iterable[int]) -> list[int]:
    """The list of seeds; a string (``-p seeds '"12"'``, which would be seeds 1 and 2) or a
    non-integer entry is an error."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds: expected a list of integers such as [0, 1, 2], got {seeds!r}")
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds: expected non-negative integers, got {bad[0]!r} in {seeds!r}")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    return seeds


# ------------------------------------------------------------------------------------------
# the grids, one per table / figure group
# ------------------------------------------------------------------------------------------

def baseline_spec(dataset: str, labels: int | str, method: str, seed: int = 0, **overrides: Any) -> RunSpec:
    """One baseline run (a single stage): ``method`` is ``"supervised"``, ``"mt-cutout"`` or ``"mt-cutmix"``."""
    if method == "supervised":
        return spec(dataset, labels, seed, stages=1, variant="supervised", **overrides)
    if method not in BASELINES:
        raise ValueError(f"method: expected supervised or one of {list(BASELINES)}, got {method!r}")
    return spec(dataset, labels, seed, stages=1, variant=BASELINES[method], method=method, **overrides)


def baseline_grid(datasets: Sequence[str] = DATASETS, seeds: Sequence[int] = (0,),
                  methods: Sequence[str] = tuple(BASELINES), labels: Sequence[int] | None = None) -> list[RunSpec]:
    """The mean teacher baselines at each label count (default: the ablation label count)."""
    return [baseline_spec(d, n, m, s) for d in datasets
            for n in (list(labels) if labels is not None else [ABLATION_LABELS[check_dataset(d)]])
            for m in methods for s in _seeds(seeds)]


def label_grid(dataset: str, seeds: Sequence[int] = (0,), labels: Sequence[int] | None = None,
               full: bool = True, baselines: Sequence[str] = tuple(BASELINES)) -> list[RunSpec]:
    """Tables II (street) and III/IV (objects): the three-stage method at each label count (its
    Stage 1 is the supervised baseline), the mean teacher ``baselines`` (Cutout, CutMix) at each
    label count, and full supervision (Stage 1 on the whole pool) when ``full``."""
    if labels is not None and (isinstance(labels, (str, int)) or not isinstance(labels, Iterable)):
        raise ValueError(f"labels: expected a list of label counts such as [100, 375] (or None), got {labels!r}")
    labels = list(labels) if labels is not None else list(LABEL_COUNTS[check_dataset(dataset)])
    out = [spec(dataset, n, s) for n in labels for s in _seeds(seeds)]  # spec checks each label count
    out += [baseline_spec(dataset, n, m, s) for m in baselines if m != "supervised" for n in labels
            for s in _seeds(seeds)]
    if full:
        out += [spec(dataset, "full", s, stages=1, variant="full supervision") for s in _seeds(seeds)]
    return out


def ablation_grid(datasets: Sequence[str] = DATASETS, seeds: Sequence[int] = (0,),
                  drops: Sequence[str] = TABLE_V_DROPS) -> list[RunSpec]:
    """Table V: the full method and one run per dropped component, at the ablation label count."""
    for drop in drops:
        if drop not in DROPS:
            raise ValueError(f"drop: expected one of {list(DROPS)}, got {drop!r}")
    return [spec(d, ABLATION_LABELS[check_dataset(d)], s,
                 variant="full method" if drop == "none" else f"without {drop}", **DROPS[drop])
            for d in datasets for drop in drops for s in _seeds(seeds)]


def ema_grid(datasets: Sequence[str] = DATASETS, seeds: Sequence[int] = (0,)) -> list[RunSpec]:
    """Table VI: stages 2 and 3 with and without the EMA teacher."""
    return ablation_grid(datasets, seeds, drops=("none", "EMA"))


def fig2_grid(dataset: str = "synth-objects", seeds: Sequence[int] = (0,)) -> list[RunSpec]:
    """Figure 2: stage 3 with and without pseudo-masks (T2 on / off)."""
    return ablation_grid([dataset], seeds, drops=("none", "T2"))


def lambda_grid(datasets: Sequence[str] = DATASETS, lambdas: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
                seeds: Sequence[int] = (0,)) -> list[RunSpec]:
    """Figure 3: mIoU against λ1 (λ2 = λ1) at the ablation label count."""
    return [spec(d, ABLATION_LABELS[check_dataset(d)], s, variant=f"lambda1={lam:g}", lambda1=float(lam),
                 lambda2=float(lam))
            for d in datasets for lam in lambdas for s in _seeds(seeds)]


def headline_grid(datasets: Sequence[str] = DATASETS, seeds: Sequence[int] = (0,)) -> list[RunSpec]:
    """The headline (:mod:`selftrain_lib.headline`): stages 1-3 of the method and full supervision at
    the ablation label count, the setting where the paper reports every stage (Table V)."""
    return [s for d in datasets for s in label_grid(d, seeds, [ABLATION_LABELS[check_dataset(d)]], baselines=())]


def stages_grid(datasets: Sequence[str] = DATASETS, seeds: Sequence[int] = (0,), stages: int = 4) -> list[RunSpec]:
    """Pseudo-mask quality on U across stages 1..``stages`` (ablation label count)."""
    return [spec(d, ABLATION_LABELS[check_dataset(d)], s, stages=stages) for d in datasets for s in _seeds(seeds)]


def prediction_grid(datasets: Sequence[str] = DATASETS, seeds: Sequence[int] = (0,)) -> list[RunSpec]:
    """Figures 4 and 5: CutMix and stages 1-3 at the ablation label count (the same runs as the
    tables' cells: nothing extra trains when the tables ran first)."""
    return stages_grid(datasets, seeds, stages=3) + baseline_grid(datasets, seeds, ("mt-cutmix",))


# Why Stage 2 falls below Stage 1 at CPU scale (README "Stage 2's drop, decomposed"): each variant
# removes one difference between Stage 2's step and Stage 1's, Stage 1 shared.
STAGE2_VARIANTS: dict[str, dict[str, Any]] = {
    "batch design only (no CR, no T2)": {"cr": False, "t2": False},
    "batch design, no strong augmentation (no CR, T2, SA)": {"cr": False, "t2": False, "sa": False},
    "full Stage 2": {},
    "full Stage 2, 6 labelled per batch": {"labelled_per_batch": 6},
}


def stage2_grid(datasets: Sequence[str] = ("synth-street",), seeds: Sequence[int] = (0, 1, 2)) -> list[RunSpec]:
    """Stage 2 in the variants of :data:`STAGE2_VARIANTS` (stages 1-2), and full supervision, at the
    ablation label count. Every variant records the student's and the EMA teacher's mIoU."""
    out = []
    for d in datasets:
        n = ABLATION_LABELS[check_dataset(d)]
        out += [spec(d, n, s, stages=2, variant=name, **options)
                for name, options in STAGE2_VARIANTS.items() for s in _seeds(seeds)]
        out += [spec(d, "full", s, stages=1, variant="full supervision") for s in _seeds(seeds)]
    return out


GRIDS = {
    "stage2": lambda seeds=(0, 1, 2), **kw: stage2_grid(seeds=seeds, **kw),
    "table2": lambda seeds=(0,), **kw: label_grid("synth-street", seeds, **kw),
    "table3_4": lambda seeds=(0,), **kw: label_grid("synth-objects", seeds, **kw),
    "table5": lambda seeds=(0,), **kw: ablation_grid(seeds=seeds, **kw),
    "table6": lambda seeds=(0,), **kw: ema_grid(seeds=seeds, **kw),
    "fig2": lambda seeds=(0,), **kw: fig2_grid(seeds=seeds, **kw),
    "fig3": lambda seeds=(0,), **kw: lambda_grid(seeds=seeds, **kw),
    "fig4_5": lambda seeds=(0,), **kw: prediction_grid(seeds=seeds, **kw),
    "baselines": lambda seeds=(0,), **kw: baseline_grid(seeds=seeds, **kw),
    "pseudo_stages": lambda seeds=(0,), **kw: stages_grid(seeds=seeds, **kw),
    "per_class_gains": lambda seeds=(0,), **kw: stages_grid(seeds=seeds, stages=3, **kw),
}


def grid(name: str, seeds: Sequence[int] = (0,), **kwargs: Any) -> list[RunSpec]:
    """The grid of the table or figure ``name`` (a key of :data:`GRIDS`)."""
    if name not in GRIDS:
        raise ValueError(f"grid: expected one of {sorted(GRIDS)}, got {name!r}")
    return GRIDS[name](seeds, **kwargs)


@dataclass
class GridResult:
    """The runs of a grid, in order: ``pairs[i] = (spec, PipelineResult)``."""

    scale: str
    pairs: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)


def grid_run_kwargs(specs: Sequence[RunSpec], scale: str, data_roots: Mapping[str, str] | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[RunSpec, dict[str, Any]]:
    """Keyword arguments of :func:`selftrain_lib.run` for each distinct spec, as :func:`run_grid`
    runs them. A key of ``config`` that a spec sets itself to another value (a stage notebook's
    ``config: {lambda1: 0.1}``, where the spec carries the paper's λ) would be ignored: an error
    naming it, as is a key that is not a configuration key."""
    roots = _data_roots(data_roots)
    config = _grid_config(config)
    out = {s: s.run_kwargs(scale, roots.get(s.dataset)) for s in dict.fromkeys(specs)}
    for kwargs in out.values():
        clash = sorted(k for k in config if k in kwargs and kwargs[k] != config[k])
        if clash:
            k = clash[0]
            raise ValueError(f"config: {k}={config[k]!r} would be ignored: this grid's runs set {k} themselves "
                             f"({k}={kwargs[k]!r}); where the notebook has a parameter {k!r}, give it there "
                             f"(-p {k} ...), else leave it out of config")
    return {s: {**config, **kwargs} for s, kwargs in out.items()}


def _data_roots(data_roots: Any) -> dict[str, str]:
    """``{dataset: folder}``; a name that is no dataset would be ignored without a word."""
    from .data import DATASETS

    if data_roots is None:
        return {}
    if not isinstance(data_roots, Mapping):
        raise ValueError(f'data_roots: expected a mapping such as {{"voc": "/data/VOCdevkit/VOC2012"}}, '
                         f"got {data_roots!r}")
    unknown = sorted(str(k) for k in data_roots if k not in DATASETS)
    if unknown:
        raise ValueError(f"data_roots: unknown dataset {unknown[0]!r} (datasets read from files: "
                         f"{sorted(d for d, i in DATASETS.items() if i.format != 'synthetic')})")
    return {k: str(v) for k, v in data_roots.items()}


def _grid_config(config: Any) -> dict[str, Any]:
    """``config`` of :func:`run_grid`: a mapping of configuration keys (not the dataset or scale,
    which the grid and its caller choose)."""
    import difflib
    from dataclasses import fields

    from .config import Config

    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ValueError(f'config: expected a mapping of configuration keys such as {{"steps": 500}}, got {config!r}')
    keys = [f.name for f in fields(Config)]
    for k in config:
        if k in ("dataset", "scale"):
            raise ValueError(f"config: {k!r} is chosen by the grid (the notebook's parameters), not by config")
        if k not in keys:
            close = difflib.get_close_matches(str(k), keys, n=1)
            raise ValueError(f"config: unknown configuration key {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return dict(config)


def run_grid(specs: Sequence[RunSpec], scale: str = "quick", out: str | None = None, progress: bool = True,
             desc: str = "runs", jobs: int | str = 1, data_roots: Mapping[str, str] | None = None,
             config: Mapping[str, Any] | None = None, record: str | Path | None = None) -> GridResult:
    """Run every spec through :func:`selftrain_lib.run` (the run cache reuses finished stages),
    with a tqdm bar over the grid and, below it, one over the steps of the stage training now
    (a widget in JupyterLab, text in a terminal). ``out``: the run cache (None:
    :func:`selftrain_lib.paths.runs_dir`).

    ``jobs`` > 1 (or ``"auto"``: one per CPU core) first trains the missing stage runs in that many
    worker processes with one thread each (:func:`selftrain_lib.sweep.run_parallel`); then every
    spec is read back from the cache. ``data_roots``: ``{dataset: folder}`` for datasets read from
    files (``{"cityscapes": "/data/cityscapes", "voc": "/data/VOCdevkit/VOC2012"}``). ``config``: any other
    configuration keys for every run (as ``--set`` does); a key the spec sets itself keeps the spec's value.
    ``record``: a folder of run summaries (``figures/cpu/run_summaries``): the runs it holds, whole
    trees of runs that share a Stage 1, are read from it, not trained (:func:`selftrain_lib.record.recorded_results`;
    their stages have metrics and curves, no model or pseudo-masks)."""
    from .paths import runs_dir
    from .pipeline import run

    out = runs_dir(out)
    kwargs = grid_run_kwargs(specs, scale, data_roots, config)
    seen: dict[RunSpec, Any] = {}
    if record is not None:
        from .record import recorded_results

        if not Path(record).is_dir():
            raise FileNotFoundError(f"record: {record} is not a folder of run summaries")
        for s, recorded in zip(kwargs, recorded_results(list(kwargs.values()), record)):
            if recorded is not None:
                seen[s] = recorded
    if jobs != 1:
        from .sweep import run_parallel

        run_parallel([kw for s, kw in kwargs.items() if s not in seen], out=out, jobs=jobs, progress=progress, desc=desc)
    result = GridResult(scale)
    bar = tqdm(list(specs), desc=desc, unit="run", disable=not progress, dynamic_ncols=True)
    for s in bar:
        if s not in seen:
            bar.set_postfix_str(f"{s.dataset} {s.labels} labels, {s.variant}, seed {s.seed}")
            # the stage's own bar shows its steps (a grid of one run would otherwise sit at 0/1)
            seen[s] = run(out=out, progress=progress, **kwargs[s])
        result.pairs.append((s, seen[s]))
    bar.set_postfix_str("done")
    bar.close()
    return result
