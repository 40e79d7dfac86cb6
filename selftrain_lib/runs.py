"""The run cache: one folder per stage run, named by the hash of what the run computes.

``runs/<hash>/`` holds ``config.json`` (resolved configuration and the hashed key, inputs named by
path entering by content), ``labelled_ids.txt`` (the labelled set L), ``checkpoint.pt`` (while
training, for resume), ``curves.csv``, ``model.pt`` (final weights of f), ``val_samples.npz``
(predictions on a fixed sample of validation images), ``pseudo_masks/`` (uint8 PNGs of L∪U)
and, last of all, ``metrics.json``: its presence marks the run as finished. Every file is
written to a temporary name and renamed, so an interrupted write never leaves a half file
(the leftovers of one are removed when the run starts again, :func:`clean_interrupted_writes`).
``.lock`` is the run's :func:`run_lock`; ``error.txt`` says why a resumable run last stopped.
Files and folders get the modes the umask gives (``tempfile`` alone would make them private).
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from PIL import Image

HASH_LENGTH = 16


def config_hash(key: Mapping[str, Any]) -> str:
    """Stable hash of a JSON-able mapping (sorted keys, tuples as lists)."""
    text = json.dumps(key, sort_keys=True, default=list, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


# ------------------------------------------------------------------------------------------
# inputs hashed by content (a path says nothing about what the file holds today)
# ------------------------------------------------------------------------------------------

# (resolved path, size, mtime_ns) -> sha256: a 170 MB weights file is hashed once per process and
# once per change, not at every run-hash computation (a sweep computes hundreds).
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of the file's bytes, memoised by (path, size, mtime): an edited file gets a
    new digest, an untouched one is not read again."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[memo] = f"sha256:{h.hexdigest()}"
    return _DIGESTS[memo]


def id_list_digest(ids: Iterable[str]) -> str:
    """``sha256:<hex>`` of a set of image ids (order and repeats do not matter: a split is a set)."""
    return "sha256:" + hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()


def split_file_ids(path: str | os.PathLike) -> list[str]:
    """The ids a split file lists (blank lines and ``#`` comments skipped), as ``read_split`` reads them."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM is no part of the first id
    except UnicodeDecodeError as err:
        raise ValueError(f"split_file: {path} is not a text file of image ids ({err})") from None
    lines = (line.strip() for line in text.splitlines())
    return [name for name in lines if name and not name.startswith("#")]


def files_fingerprint(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> str:
    """``files:<hex>`` over each file's path (relative to ``root``), size and mtime (whole seconds,
    which every filesystem and ``cp -p`` / ``rsync -a`` keep): one ``stat`` per file, cheap for 10k
    images. A file replaced, resized or touched changes it; so does another folder with other files."""
    root = Path(root).expanduser().resolve()
    h = hashlib.sha256()
    for p in paths:
        p = Path(p).expanduser().resolve()
        st = p.stat()
        try:
            name = p.relative_to(root).as_posix()
        except ValueError:  # a list file or folder outside data_root
            name = str(p)
        h.update(f"{name}\t{st.st_size}\t{int(st.st_mtime)}\n".encode())
    return f"files:{h.hexdigest()}"


# ------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------

def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets it:
    the round trip below briefly changes it for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files: the mode open would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=list) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], columns: Iterable[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------------------
# one process per run
# ------------------------------------------------------------------------------------------

LOCK_NAME = ".lock"
LABELLED_IDS = "labelled_ids.txt"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "run") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<run_dir>/.lock`` for the block: a second process training
    the same run waits here (saying so), then finds the run finished and reuses it. The kernel
    drops the lock when its holder dies, so a killed run never blocks the next. (Linux NFS maps
    ``flock`` onto NFS locks, so this holds on a shared cluster filesystem too.)"""
    run_dir = Path(run_dir)
    with file_lock(run_dir / LOCK_NAME, f"{what} {run_dir}: another process is training it; waiting for it to finish"):
        yield


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike, waiting_message: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created with its folder) for the block,
    printing ``waiting_message`` to stderr if another process holds it first."""
    lock_path = Path(lock_path)
    while True:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting_message, file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the holder may have removed the folder (a failed run): then lock the new one
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def clean_interrupted_writes(directory: str | os.PathLike) -> list[Path]:
    """Remove what interrupted atomic writes left in ``directory`` (``.<name>.*.tmp`` files of
    :func:`atomic_write_bytes`, ``.<name>.*`` folders of :func:`atomic_directory`; a checkpoint's is
    ~1 GB at paper scale). Call it holding the folder's :func:`run_lock`: no write is then under way."""
    removed = []
    for p in Path(directory).glob(".*"):
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def set_aside(path: str | os.PathLike, tag: str, why: str) -> Path | None:
    """Rename a file the cache cannot use to ``<name>.<tag>-<time>`` (kept for inspection, never
    read again) and say so on stderr, naming it. None when another process moved it first."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return None
    print(f"warning: {path}: {why}; set aside as {aside.name}", file=sys.stderr)
    return aside


def write_labelled_ids(run_dir: str | os.PathLike, ids: list[str], labelled: list[int]) -> Path:
    """``labelled_ids.txt``: the labelled set of the run (a split file: ``split_file`` can read it
    back) under a comment line giving the pool size, which :func:`finished_run_problem` checks."""
    lines = [f"# {len(labelled)} labelled of a pool of {len(ids)}\n"] + [f"{ids[i]}\n" for i in labelled]
    return atomic_write_text(Path(run_dir) / LABELLED_IDS, "".join(lines))


def finished_run_problem(run_dir: str | os.PathLike) -> str | None:
    """Why the run in ``run_dir`` cannot be reused although it has ``metrics.json``, or None.

    Checks the pseudo-masks: one PNG per pool image (the pool size is in ``labelled_ids.txt``;
    runs older than that file are trusted)."""
    run_dir = Path(run_dir)
    record = run_dir / LABELLED_IDS
    if not record.is_file():
        return None
    first = record.read_text().split("\n", 1)[0]
    try:
        pool = int(first.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return f"{record}: first line {first!r} does not give the pool size"
    masks = run_dir / "pseudo_masks"
    found = sum(1 for _ in masks.rglob("*.png")) if masks.is_dir() else 0
    if found != pool:
        return f"{masks} holds {found} pseudo-masks, the pool has {pool} images"
    return None


# ------------------------------------------------------------------------------------------
# masks as PNG files
# ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Fill a folder all or nothing: yields a temporary sibling folder that replaces ``directory``
    when the block ends normally, and is removed when it raises."""
    directory = Path(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    # mkdtemp makes 0700 folders: give it the mode mkdir would, so that a run cache shared by a
    # group (a cluster's, umask 002) is readable by the group
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        old = None
        if directory.exists():  # renamed out of the way first: no moment with a half-deleted folder
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_mask_png(path: str | os.PathLike, mask: torch.Tensor) -> None:
    """uint8 (H, W) ``mask`` as an 8-bit PNG (the folders of its path are made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.numpy(), mode="L").save(path)


def read_mask_pngs(directory: str | os.PathLike, ids: list[str]) -> torch.Tensor:
    """Read ``<id>.png`` for each id into uint8 (N, H, W); a missing file is an error naming it."""
    directory = Path(directory)
    out = []
    for name in ids:
        path = directory / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"pseudo-mask {path} is missing")
        out.append(np.asarray(Image.open(path), dtype=np.uint8))
    return torch.from_numpy(np.stack(out))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
