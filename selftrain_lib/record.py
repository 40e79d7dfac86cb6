"""Per-run summaries: every number of a regenerated table links to the run that made it.

``make paper-figures`` trains (or reuses) stage runs in the run cache (``runs/<hash>/``), which
holds models and pseudo-masks and is not committed. Beside the figures it writes one small JSON per
stage run the notebooks used, ``<figures>/run_summaries/<hash>.json``, and an index, ``run_summaries/index.csv``:

- ``run_hash`` (the folder's name in the run cache) and ``key``: what the hash was computed from;
- ``setting``: dataset, method, switches, label count used, seed, scale, stage;
- ``metrics``: validation mIoU (last and best, student and EMA teacher), per-class IoU, pseudo-mask
  mIoU on U, training time;
- ``curve``: the validation mIoU and the loss at each logged step.

These are what a record committed at one scale keeps when its run cache is gone: a table's cell can
be traced to its run hash, and a rerun with the same code checks against it.

They can also stand in for the runs they summarise: :func:`recorded_results` gives the runs the
record holds (whole trees of runs that share a Stage 1) as :class:`~selftrain_lib.pipeline.PipelineResult`
of :class:`RecordedStage` (``run_grid(..., record=folder)``, ``make paper-figures FROM_RECORD=1``),
so that a table is regenerated on a machine without the run cache, training only what the record
lacks (docs/run_cache.md, "The record in place of the cache"). A recorded stage has metrics and
curves, no model or pseudo-masks; each summary is checked against its hash (the hash of the key it
holds), so a summary of another run is an error, not a number.
"""
from __future__ import annotations

import csv
import functools
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .data.datasets import config_dataset
from .methods import SWITCHES, saved_switches
from .pipeline import PipelineResult, resolve_run
from .runs import atomic_write_json, atomic_write_text, config_hash, read_json
from .train.run_folder import StageResult
from .train.run_key import stage_hashes

SUMMARY_FORMAT = 1
# the setting of a run, as index columns (from its resolved configuration)
SETTING_KEYS = ("dataset", "method", "labels", "seed", "scale", *(s.key for s in SWITCHES), "lambda1", "lambda2")
# the curve's columns kept (curves.csv has more: the loss parts, the EMA decay)
CURVE_COLUMNS = ("step", "loss", "val_miou", "val_miou_student", "val_miou_teacher")
INDEX_COLUMNS = ("run_hash", "stage") + SETTING_KEYS + (
    "val_miou", "val_miou_student", "val_miou_teacher", "val_miou_best", "best_step", "pseudo_miou", "train_time_s")


def _number(text: str | None, integer: bool = False) -> int | float | None:
    """A cell of ``curves.csv`` as JSON keeps it: an empty cell (not logged at that step) is None."""
    if text in ("", None):
        return None
    x = float(text)
    if math.isnan(x):
        return None
    return int(x) if integer else x


def _miou(block: Any) -> float | None:
    return block.get("miou") if isinstance(block, dict) else None


@functools.lru_cache(maxsize=1)
def machine_name() -> str:
    """The CPU this process runs on (``model name`` of /proc/cpuinfo, else the platform's word for
    it): a summary written beside its run cache names the machine that trained the run, because the
    same run hash gives other last digits on another CPU."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary of the finished stage run in ``run_dir`` (module docstring). A folder without
    ``metrics.json`` (not finished) is a ``FileNotFoundError`` naming it."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished stage run (no metrics.json)")
    metrics = read_json(metrics_path)
    saved = read_json(run_dir / "config.json")
    config = saved.get("config", {})
    curve = {c: [] for c in CURVE_COLUMNS}
    curves = run_dir / "curves.csv"
    if curves.is_file():
        for line, row in enumerate(csv.DictReader(io.StringIO(curves.read_text())), start=2):
            for c in CURVE_COLUMNS:
                try:
                    curve[c].append(_number(row.get(c), integer=c == "step"))
                except ValueError:
                    raise ValueError(f"{curves}, line {line}: {c} is {row.get(c)!r}, not a number") from None
    val, student, teacher = metrics.get("val"), metrics.get("val_student"), metrics.get("val_teacher")
    pseudo = metrics.get("pseudo_masks_unlabelled")
    return {
        "format": SUMMARY_FORMAT,
        "run_hash": run_dir.name,
        "machine": machine_name(),
        "stage": metrics.get("stage"),
        "setting": {k: config.get(k) for k in SETTING_KEYS} | saved_switches(config),  # (a switch added since: on)
        "key": saved.get("key"),
        "metrics": {
            "reported": metrics.get("reported"), "eval_model": metrics.get("eval_model"),
            "protocol": metrics.get("protocol"),
            "val_miou": _miou(val), "val_miou_student": _miou(student), "val_miou_teacher": _miou(teacher),
            "val_miou_best": _miou(metrics.get("best")), "best_step": (metrics.get("best") or {}).get("step"),
            "per_class_iou": (val or {}).get("per_class_iou"),
            "pseudo_miou": _miou(pseudo), "labels_used": metrics.get("labels"), "steps": metrics.get("steps"),
            "train_time_s": metrics.get("train_time_s"),
        },
        "curve": curve,
    }


def index_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One row of ``run_summaries/index.csv``: the run's hash, setting and headline metrics."""
    m = summary["metrics"]
    return {"run_hash": summary["run_hash"], "stage": summary["stage"], **summary["setting"],
            **{k: m.get(k) for k in INDEX_COLUMNS if k in m}}


# beside the record: summaries of runs trained again on another machine (``retrained/<machine>/<hash>.json``)
RETRAINED = "retrained"


def machine_folder(machine: str | None) -> str:
    """A machine's name as a folder name: ``"AMD EPYC"`` → ``"AMD-EPYC"``; none → ``"unknown"``."""
    return "-".join("".join(c if c.isalnum() else " " for c in machine or "").split()) or "unknown"


def write_summaries(run_dirs: Iterable[str | Path], into: str | Path) -> list[Path]:
    """Write the summary of each finished run of ``run_dirs`` to ``into/<hash>.json`` and the index
    of every summary in ``into`` to ``into/index.csv`` (atomically). The record only grows: a summary
    already there is kept as it is, also when the run was trained again (on another CPU the same run
    gives other last digits, and the tables read from the record were made with the numbers it holds),
    so a record computed seed by seed accumulates. A run trained again on another machine than its
    summary names gets its own summary beside the record, ``into/retrained/<machine>/<hash>.json``
    (:func:`machine_folder`), so that a table made from that run still links to the numbers it shows;
    the record reads only ``into/<hash>.json``. Unfinished folders are skipped. Returns the summaries
    written."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    written, here = [], machine_name()
    for run_dir in dict.fromkeys(Path(d) for d in run_dirs):
        if not (run_dir / "metrics.json").is_file():
            continue
        path = into / f"{run_dir.name}.json"
        if not path.exists():
            written.append(atomic_write_json(path, run_summary(run_dir)))
            continue
        if read_summary(path, run_dir.name).get("machine") != here:   # checked: a tampered summary is an error
            other = into / RETRAINED / machine_folder(here) / path.name
            if not other.exists():
                other.parent.mkdir(parents=True, exist_ok=True)
                written.append(atomic_write_json(other, run_summary(run_dir)))
    write_index(into)
    return written


def write_index(into: str | Path) -> Path:
    """``into/index.csv``: one row per summary in ``into``, sorted by setting then stage."""
    rows = [index_row(read_json(p)) for p in sorted(Path(into).glob("*.json"))]
    rows.sort(key=lambda r: tuple(str(r.get(k)) for k in ("dataset", "scale", "method", "labels", "seed")) + (r["stage"] or 0,))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(Path(into) / "index.csv", buf.getvalue())


def planned_run_dirs(runs: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """The run folders of every stage that ``runs`` (keyword arguments of :func:`selftrain_lib.run`)
    train, in order, each once."""
    dirs: dict[Path, None] = {}
    for kwargs in runs:
        config, stages = resolve_run(**{k: v for k, v in kwargs.items() if k not in ("out", "progress")})
        for h in stage_hashes(config, stages):
            dirs[Path(out) / h] = None
    return list(dirs)


# ------------------------------------------------------------------------------------------
# the record in place of the run cache
# ------------------------------------------------------------------------------------------

class RecordedStage(StageResult):
    """A finished stage run known from its summary (``run_dir`` is the summary's file): its metrics
    (validation mIoU of the student, the teacher and the reported network, the reported network's
    per-class IoU, the best evaluation, the pseudo-masks' mIoU on U) and its curve; no model and no
    pseudo-masks, which only the run cache holds."""

    def _absent(self, what: str):
        raise FileNotFoundError(
            f"stage {self.stage} run {self.run_hash}: only its summary ({self.run_dir}) is here, which holds no {what}; "
            f"train the run (leave out record=, or FROM_RECORD) to have it")

    @property
    def pseudo_masks(self):
        self._absent("pseudo-masks")

    @property
    def config(self):
        self._absent("configuration (the pipeline result's config is the run's)")

    def load_model(self, device: str = "cpu"):
        self._absent("model")

    def curves(self):
        """The summary's curve: ``step``, ``loss`` and the validation mIoU columns (not the loss's parts)."""
        import pandas as pd

        return pd.DataFrame(read_summary(self.run_dir)["curve"])


def read_summary(path: str | Path, run_hash: str | None = None) -> dict[str, Any]:
    """The summary in ``path``, checked: its format, and that its key hashes to its run hash (and to
    ``run_hash``, the run asked for), so that a renamed or edited summary is an error naming the file."""
    path = Path(path)
    summary = read_json(path)
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        found = summary.get("format") if isinstance(summary, dict) else type(summary).__name__
        raise ValueError(f"{path}: not a run summary of format {SUMMARY_FORMAT} (format: {found!r})")
    try:
        found = config_hash(summary["key"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: a run summary without a run key ({err})") from None
    expected = run_hash or summary.get("run_hash")
    if found != summary.get("run_hash") or found != expected:
        raise ValueError(f"{path}: its run key hashes to {found}, not to the run {expected} it is filed as; "
                         "the summary was edited or renamed: remove it, or regenerate it from the run")
    if summary.get("stage") != summary["key"].get("stage") or not isinstance(summary.get("metrics"), dict):
        raise ValueError(f"{path}: its stage ({summary.get('stage')!r}) is not its run key's "
                         f"({summary['key'].get('stage')!r}), or it has no metrics: the summary was edited")
    return summary


def recorded_stage(path: str | Path, run_hash: str, class_names: Sequence[str] = ()) -> RecordedStage:
    """The stage run ``run_hash`` from its summary ``path`` (:func:`read_summary`), with the metrics
    of ``metrics.json`` that the summary keeps, under the same names; the per-class IoU in the order
    of ``class_names`` (the dataset's, as ``metrics.json`` has it; a summary's JSON sorts its keys)."""
    return _stage_of(read_summary(path, run_hash), Path(path), class_names)


def _stage_of(s: Mapping[str, Any], path: Path, class_names: Sequence[str]) -> RecordedStage:
    """:func:`recorded_stage` of the summary ``s`` already read (and checked) from ``path``."""
    m = s["metrics"]
    per_class = m.get("per_class_iou") or {}
    order = [c for c in class_names if c in per_class]
    per_class = {c: per_class[c] for c in order + sorted(set(per_class) - set(order))}

    def block(miou, **more):
        return None if miou is None else {"miou": miou, **more}

    metrics = {"stage": s["stage"], "eval_model": m.get("eval_model"), "reported": m.get("reported"),
               "protocol": m.get("protocol"), "labels": m.get("labels_used"), "steps": m.get("steps"),
               "train_time_s": m.get("train_time_s"), "recorded": str(path),
               "val": {"miou": m.get("val_miou"), "per_class_iou": per_class},
               "val_student": block(m.get("val_miou_student")), "val_teacher": block(m.get("val_miou_teacher")),
               "best": {"miou": m.get("val_miou_best"), "step": m.get("best_step")},
               "pseudo_masks_unlabelled": {"miou": m.get("pseudo_miou")}}
    return RecordedStage(stage=s["stage"], run_dir=path, run_hash=s["run_hash"], metrics=metrics, reused=True)


def recorded_results(runs: Sequence[Mapping[str, Any]], record: str | Path) -> list[PipelineResult | None]:
    """Each run of ``runs`` (keyword arguments of :func:`selftrain_lib.run`) from the record folder
    ``record`` (``<hash>.json`` per stage), or None where it is to come from the run cache (trained
    where the cache lacks it).

    Runs that share their Stage 1 (a tree: the full method and its ablations, or λ values, of one seed)
    come from one source, so that a paired difference never compares two machines
    (:func:`_tree_summaries`): from the record when it holds every stage of every run of the tree, all
    trained on one machine (the summaries' ``machine``; a summary written before it was recorded counts
    as one unknown machine); else from one machine's summaries, the record's and those of the runs it
    trained again (``retrained/<machine>/``), when together they hold the tree; else all from the cache.
    A run the record holds in part is trained whole: a later stage needs the pseudo-masks of the one
    before, which no summary holds. Where the record holds a tree, it is read even when the cache has
    it too: the committed numbers stay those of the committed record (another CPU gives other last
    digits)."""
    plans = []
    for kwargs in runs:
        config, stages = resolve_run(**{k: v for k, v in kwargs.items() if k not in ("out", "progress")})
        plans.append((config, stage_hashes(config, stages)))
    trees: dict[str, dict[str, None]] = {}   # per Stage 1: every stage hash of its runs, in order
    for _, hashes in plans:
        trees.setdefault(hashes[0], {}).update(dict.fromkeys(hashes))
    read: dict[Path, Mapping[str, Any] | None] = {}   # each summary read (and checked) once
    held = {tree: _tree_summaries(list(hashes), Path(record), read) for tree, hashes in trees.items()}
    results: list[PipelineResult | None] = []
    for config, hashes in plans:
        tree = held[hashes[0]]
        if tree is None:
            results.append(None)
            continue
        names = config_dataset(config).class_names
        results.append(PipelineResult(config, [_stage_of(*tree[h], names) for h in hashes], 0.0))
    return results


def _tree_summaries(hashes: Sequence[str], record: Path, read: dict[Path, Mapping[str, Any] | None]
                    ) -> dict[str, tuple[Mapping[str, Any], Path]] | None:
    """``{hash: (summary, its path)}`` for every stage of one tree, all from one machine, or None. The
    record's own summaries first; where they lack a stage or name two machines, each machine that has
    a ``retrained/<machine>/`` folder beside the record in turn (sorted by name): a stage from the
    record where its summary names that machine, else from that folder. ``read`` caches the summaries."""
    def summary(path: Path) -> Mapping[str, Any] | None:
        if path not in read:
            read[path] = read_summary(path, path.stem) if path.is_file() else None
        return read[path]

    own = {h: summary(record / f"{h}.json") for h in hashes}
    machines = {None if s is None else s.get("machine", "") for s in own.values()}
    if None not in machines and len(machines) == 1:
        return {h: (own[h], record / f"{h}.json") for h in hashes}
    retrained = record / RETRAINED
    for folder in sorted(p for p in retrained.iterdir() if p.is_dir()) if retrained.is_dir() else ():
        tree = {}
        for h in hashes:
            s = own[h]
            path = record / f"{h}.json" if s is not None and machine_folder(s.get("machine")) == folder.name \
                else folder / f"{h}.json"
            found = summary(path)
            if found is None:
                break
            tree[h] = (found, path)
        else:
            if len({s.get("machine", "") for s, _ in tree.values()}) == 1:
                return tree
    return None
