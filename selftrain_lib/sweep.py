"""Many pipeline runs at once: independent stage runs in parallel worker processes.

A sweep (the grid behind a table) is a set of pipeline runs whose stages form a forest: stage k
of a run needs stage k-1's pseudo-masks, and runs share stages (every ablation shares Stage 1).
:func:`run_parallel` plans that forest from the run keys alone (:func:`stage_run_keys`, nothing
trains; :func:`stage_hashes` gives their hashes), trains each missing stage exactly once in a pool
of ``jobs`` processes, starting a stage as soon as the stage it needs has finished, and leaves
everything in the run cache, where :func:`selftrain_lib.run` then finds it. Each job carries its
planned keys to its worker: the data's identity is read once per dataset, in the plan.

Why processes with one thread each: on a CPU, the small model's layers are too small for torch's
intra-op threads to pay off; two 1-thread runs on 2 cores train 1.7x as many steps per second as
one 2-thread run. One thread per run also makes the numbers independent of the machine's core
count (torch's reduction order, hence the last digits of a run, depends on the thread count).

On a GPU ``jobs="auto"`` is 1: several processes on one device would compete for it. To spread a
sweep over a cluster, submit one :func:`train_stage_run` call per :class:`StageJob` in
:func:`plan` order with your scheduler (README: "Running sweeps in parallel").
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .config import Config
from .data import load_data
from .paths import runs_dir
from .pipeline import resolve_run, run_stages
from .preflight import preflight
from .pretrain import synthetic_state
from .progress import tqdm
from .runs import config_hash
from .train.run_folder import reusable_run
from .train.run_key import data_identity, stage_hashes, stage_run_keys  # stage_hashes: the plan's, by name


@dataclass(frozen=True)
class StageJob:
    """Train stages 1..``stages`` of one run (the earlier ones are in the cache when it starts)."""

    run_kwargs: tuple[tuple[str, Any], ...]   # keyword arguments of selftrain_lib.run, without stages
    stages: int
    run_hash: str                             # the hash of stage ``stages``
    after: str | None                         # the hash of the stage it needs (None for stage 1)
    # the run keys of stages 1..stages as planned, handed to the worker's pipeline: it does not read
    # the data's identity again (which stats every file of a dataset read from files)
    keys: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        kw = dict(self.run_kwargs)
        extra = {k: v for k, v in kw.items() if k not in ("dataset", "labels", "seed", "scale")}
        labels = kw.get("labels")   # the count the pool uses (a grid's run kwargs hold it scaled)
        used = ("full supervision" if labels == "full" else "the preset's labels" if labels is None
                else f"{labels} labels used")
        return (f"{kw.get('dataset')} {used} seed={kw.get('seed', 0)} stage {self.stages}"
                + (f" {extra}" if extra else ""))


def _config(run_kwargs: Mapping[str, Any]) -> tuple[Config, int]:
    return resolve_run(**{k: v for k, v in run_kwargs.items() if k not in ("out", "progress")})


def plan(runs: Sequence[Mapping[str, Any]], out: str | Path | None = None) -> list[StageJob]:
    """The stage runs that ``runs`` (keyword arguments of :func:`selftrain_lib.run`) still need,
    each once, in an order where every job comes after the one it needs."""
    out = runs_dir(out)
    jobs: dict[str, StageJob] = {}
    identities: dict[tuple, str] = {}  # the data's identity, read once per dataset of the sweep
    for kwargs in runs:
        config, stages = _config(kwargs)
        preflight(config)  # a missing file is named before anything of the sweep trains
        base = tuple(sorted((k, v) for k, v in kwargs.items() if k not in ("stages", "out", "progress")))
        where = _data_place(config)
        if where not in identities:
            identities[where] = data_identity(config)
        keys = stage_run_keys(config, stages, identity=identities[where])
        hashes = [config_hash(key) for key in keys]
        for k, h in enumerate(hashes, start=1):
            # a finished run is checked as run_stage checks it (a changed one is set aside and planned)
            if h not in jobs and not reusable_run(out / h):
                jobs[h] = StageJob(base, k, h, hashes[k - 2] if k > 1 else None, tuple(keys[:k]))
    return list(jobs.values())


def _data_place(config: Config) -> tuple:
    """What :func:`~selftrain_lib.data.datasets.data_identity` reads of ``config``: the dataset (a
    folder dataset declared by ``num_classes``) and where its files are listed (the generated
    datasets: their generator alone)."""
    return (config.dataset, config.num_classes, config.data_root, config.train_list, config.val_list, config.resize)


def resolve_jobs(jobs: int | str, device: str = "auto") -> int:
    """``"auto"``: one per CPU core this process may use, or 1 when the runs go to a GPU."""
    if jobs == "auto":
        on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        return 1 if on_gpu else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                    else (os.cpu_count() or 1))
    jobs = int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs: must be >= 1 or 'auto', got {jobs}")
    return jobs


def train_stage_run(job: StageJob, out: str | Path, num_threads: int | None = 1) -> str:
    """Train (or reuse) ``job`` in this process; returns its run hash. A worker's entry point.
    The stages train under the keys :func:`plan` computed (``job.keys``): this process recomputes
    them from its own code with the planned data identity (no file is read) and refuses to train
    when they differ."""
    kwargs = dict(job.run_kwargs)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
        kwargs["num_threads"] = num_threads   # an execution key: not part of the run hash
    config, _ = resolve_run(**kwargs, stages=job.stages)
    keys = list(job.keys) or None
    if keys is not None and stage_run_keys(config, job.stages, identity=keys[0]["data"]) != keys:
        raise RuntimeError(f"{job.describe()}: this process keys the run differently from the plan "
                           f"({job.run_hash}); the library changed while the sweep ran?")
    result = run_stages(config, job.stages, out, progress=False, keys=keys)
    if result.final.run_hash != job.run_hash:
        raise RuntimeError(f"{job.describe()}: trained run {result.final.run_hash}, planned {job.run_hash} "
                           "(the library changed while the sweep ran?)")
    return job.run_hash


PARENT_POLL_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """A worker's initializer: a daemon thread ends the worker as soon as ``parent`` (the sweep)
    has died, however it died (SIGKILL, an OOM kill, a closed notebook). Without it, workers of a
    killed sweep train on for many minutes, holding ~1 GB each and the dead parent's stdout."""
    def watch() -> None:
        while os.getppid() == parent:  # a dead parent's children are re-parented (to init or a subreaper)
            time.sleep(PARENT_POLL_S)
        os._exit(70)  # no cleanup to run: every file of the run cache is written atomically

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _warm_caches(jobs: Sequence[StageJob]) -> None:
    """Generate the data and pre-train the backbone once, here, before workers would race to."""
    seen = set()
    for job in [j for j in jobs if j.after is None]:  # the first stages of the chains
        c, _ = _config(dict(job.run_kwargs))
        key = (c.dataset, c.data_root, c.pool_size, c.val_size, c.cache_dir, c.pretrained, c.widths,
               c.pretrain_steps, c.output_stride)
        if key in seen:
            continue
        seen.add(key)
        load_data(c)
        if c.pretrained == "synthetic":
            synthetic_state(c)


def run_parallel(runs: Sequence[Mapping[str, Any]], out: str | Path | None = None, jobs: int | str = "auto",
                 progress: bool = True, desc: str = "stage runs") -> list[str]:
    """Train every stage that ``runs`` need and the cache lacks, ``jobs`` at a time (one thread
    each), each as soon as the stage it needs is done. Returns the hashes trained, in finishing
    order. A failing run stops the sweep (runs already finished stay in the cache) and raises
    with that run named."""
    out = runs_dir(out)
    todo = plan(runs, out)
    if not todo:
        return []
    jobs = resolve_jobs(jobs, _config(dict(todo[0].run_kwargs))[0].device)
    if jobs == 1:  # in this process, with torch's threads, as selftrain_lib.run would
        return [train_stage_run(job, out, num_threads=None)
                for job in tqdm(todo, desc=desc, disable=not progress, dynamic_ncols=True)]
    # jobs > 1: every run in a worker with one thread, however many are pending, so that a run's
    # numbers do not depend on which sweep trained it
    jobs = min(jobs, len(todo))
    _warm_caches(todo)
    waiting = list(todo)
    finished: list[str] = []
    running: dict[Future, StageJob] = {}
    bar = tqdm(total=len(todo), desc=f"{desc} ({jobs} at a time)", disable=not progress, dynamic_ncols=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch threads or locks
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        try:
            while waiting or running:
                ready = [j for j in waiting if j.after is None or j.after in finished
                         or (Path(out) / j.after / "metrics.json").is_file()]
                for job in ready[:max(0, jobs - len(running))]:
                    waiting.remove(job)
                    running[pool.submit(train_stage_run, job, str(out), 1)] = job
                # what trains now: the count moves only when a run finishes, minutes apart
                bar.set_postfix_str("training: " + "; ".join(j.describe() for j in running.values()))
                if not running:
                    raise RuntimeError("sweep: jobs wait for stages no job trains: "
                                       + "; ".join(j.describe() for j in waiting))
                complete, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in complete:
                    job = running.pop(future)
                    try:
                        finished.append(future.result())
                    except BaseException as err:
                        raise RuntimeError(f"sweep: {job.describe()} failed: {err}") from err
                    bar.update()
        except BaseException:
            for future in running:
                future.cancel()
            raise
        finally:
            bar.close()
    return finished
