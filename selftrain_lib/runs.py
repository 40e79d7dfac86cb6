"""The run cache: one folder per stage run, named by the hash of what the run computes.

``runs/<hash>/`` holds ``config.json`` (resolved configuration and the hashed key, inputs named by
path entering by content), ``labelled_ids.txt`` (the labelled set L), ``checkpoint.pt`` (while
training, for resume), ``curves.csv``, ``model.pt`` (final weights of f), ``val_samples.npz``
(predictions on a fixed sample of validation images), ``pseudo_masks/`` (uint8 PNGs of L∪U)
and, last of all, ``metrics.json``: its presence marks the run as finished. Every file is
written to a temporary name (``.selftrain-tmp.*``) and renamed, so an interrupted write never
leaves a half file (the leftovers of one are removed when the run starts again,
:func:`clean_interrupted_writes`, which removes nothing else). ``manifest.json``, written just
before ``metrics.json``, holds the SHA-256 of every file of the finished run: a run whose files
changed since is not reused (:func:`manifest_problem`). ``.lock`` is the run's :func:`run_lock`;
``error.txt`` says why a resumable run last stopped.
Files and folders get the modes the umask gives (``tempfile`` alone would make them private).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import re
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


# Every temporary name the project writes starts with this: the clean-up after an interrupted
# write removes these and nothing else (a run folder may be a link into a folder with its own
# dot-files: .git/, .env).
TMP_PREFIX = ".selftrain-tmp."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files: the mode open would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise_if_disk_full(err, path, len(data))
        raise
    return path


class DiskFullError(OSError):
    """No space left (or the quota reached) writing a file of the cache: names it and the space left."""


def raise_if_disk_full(err: BaseException, path: str | os.PathLike, size: int | None = None) -> None:
    """Re-raise ``err`` when the disk (or the quota) is full as a :class:`DiskFullError` that names
    the file being written, its folder and the space left there (a bare ``[Errno 28]`` names none)."""
    if isinstance(err, DiskFullError) or not isinstance(err, OSError) or err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2 ** 20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    what = f" ({size / 2 ** 20:.1f} MiB)" if size is not None else ""
    raise DiskFullError(err.errno, f"no space left on the device writing {path}{what}: {free}; free space in "
                                   f"{path.parent} (or point the run cache / cache_dir elsewhere), then run again "
                                   "(a run with a checkpoint resumes)", str(path)) from err


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def json_text(obj: Any) -> str:
    """``obj`` as the JSON text :func:`atomic_write_json` writes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=list) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))


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


# what the writers above left before they named their temporary files with TMP_PREFIX: a dot,
# a file the project writes, mkstemp's 8 random characters (".checkpoint.pt.k2j3abcd.tmp",
# ".pseudo_masks.ab_c12de/", ".pseudo_masks.old.ab_c12de/")
_LEGACY_TMP = re.compile(r"\.(checkpoint\.pt|model\.pt|metrics\.json|config\.json|curves\.csv|val_samples\.npz|"
                         r"labelled_ids\.txt|error\.txt|manifest\.json)\.[a-z0-9_]{8}\.tmp"
                         r"|\.pseudo_masks\.(old\.)?[a-z0-9_]{8}")


def is_interrupted_write(name: str) -> bool:
    """``name`` is a temporary file or folder of :func:`atomic_write_bytes` / :func:`atomic_directory`."""
    return name.startswith(TMP_PREFIX) or _LEGACY_TMP.fullmatch(name) is not None


def clean_interrupted_writes(directory: str | os.PathLike) -> list[Path]:
    """Remove what interrupted atomic writes left in ``directory`` (``.selftrain-tmp.*`` files of
    :func:`atomic_write_bytes` and folders of :func:`atomic_directory`; a checkpoint's is ~1 GB at
    paper scale), and nothing else: other dot-entries (``.git/``, ``.env``: a run folder may be a
    link) are kept. Call it holding the folder's :func:`run_lock`: no write is then under way."""
    removed = []
    for p in Path(directory).iterdir():
        if not is_interrupted_write(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def set_aside(path: str | os.PathLike, tag: str, why: str) -> Path | None:
    """Rename a file or folder the cache cannot use to ``<name>.<tag>-<time>`` (kept for
    inspection, never read again, never replaced by a later one: ``-2``, ``-3``... when the name is
    taken) and say so on stderr, naming it. None when another process moved it first."""
    path = Path(path)
    base = f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = path.with_name(base), 1
    while os.path.lexists(aside):
        n += 1
        aside = path.with_name(f"{base}-{n}")
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


MANIFEST = "manifest.json"
# the files of a finished run the manifest covers (with every PNG of pseudo_masks/); train.log and
# the TensorBoard events are a diary of the run, not its result
MANIFEST_FILES = ("config.json", LABELLED_IDS, "model.pt", "curves.csv", "val_samples.npz", "metrics.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run_files(run_dir: Path) -> list[str]:
    """The files of ``run_dir`` a manifest covers, as paths relative to it."""
    masks = run_dir / "pseudo_masks"
    pngs = sorted(p.relative_to(run_dir).as_posix() for p in masks.rglob("*.png")) if masks.is_dir() else []
    return [name for name in MANIFEST_FILES if name != "metrics.json"] + pngs


def _is_run_file(name: str) -> bool:
    """``name`` is a path a manifest may list: a file of :data:`MANIFEST_FILES` or a PNG inside
    ``pseudo_masks/`` (no ``..``, no absolute path)."""
    parts = name.split("/")
    if len(parts) == 1:
        return name in MANIFEST_FILES
    return (parts[0] == "pseudo_masks" and name.endswith(".png") and not name.startswith("/")
            and all(part not in ("", ".", "..") for part in parts))


def write_manifest(run_dir: str | os.PathLike, metrics_text: str) -> Path:
    """``manifest.json``: the SHA-256 of each file of the finished run, and of ``metrics_text``,
    the ``metrics.json`` written next (it marks the run finished, so it comes last)."""
    run_dir = Path(run_dir)
    files = {name: _sha256(run_dir / name) for name in _run_files(run_dir)}
    files["metrics.json"] = hashlib.sha256(metrics_text.encode()).hexdigest()
    return atomic_write_json(run_dir / MANIFEST, {"format": 1, "sha256": files})


def manifest_problem(run_dir: str | os.PathLike) -> tuple[str, list[Path]] | None:
    """Why the files of the finished run in ``run_dir`` are not those its ``manifest.json``
    recorded (a file replaced, edited, deleted or added), and the files concerned; None when all
    match. A run without a manifest (or with an unreadable one) is not trusted either."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    try:
        recorded = json.loads(path.read_text())["sha256"]
        if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
            raise TypeError("sha256: expected a mapping of file names to digests")
        strange = [name for name in recorded if not _is_run_file(name)]
        if strange:  # never followed: an edited manifest could name any file (``../../x``)
            raise ValueError(f"names {strange[0]!r}, not a file of a run")
    except FileNotFoundError:
        return f"{path} is missing: the run's files cannot be checked", [run_dir / "metrics.json"]
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        return f"{path} is unreadable ({type(err).__name__}: {err})", [path]
    missing = [name for name in dict.fromkeys((*MANIFEST_FILES, *recorded)) if not (run_dir / name).is_file()]
    if missing:
        return f"{run_dir / missing[0]} is missing ({len(missing)} file(s) of the run missing)", \
            [run_dir / m for m in missing]
    added = [name for name in _run_files(run_dir) if name not in recorded]
    changed = [name for name, digest in recorded.items() if _sha256(run_dir / name) != digest]
    if changed:
        return f"{run_dir / changed[0]} changed since the run finished ({len(changed)} file(s) differ " \
               f"from {MANIFEST})", [run_dir / c for c in changed]
    if added:
        return f"{run_dir / added[0]} was not there when the run finished ({len(added)} file(s) added)", \
            [run_dir / a for a in added]
    return None


# ------------------------------------------------------------------------------------------
# masks as PNG files
# ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Fill a folder all or nothing: yields a temporary sibling folder that replaces ``directory``
    when the block ends normally, and is removed when it raises."""
    directory = Path(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f"{TMP_PREFIX}{directory.name}."))
    # mkdtemp makes 0700 folders: give it the mode mkdir would, so that a run cache shared by a
    # group (a cluster's, umask 002) is readable by the group
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        old = None
        if directory.exists():  # renamed out of the way first: no moment with a half-deleted folder
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f"{TMP_PREFIX}{directory.name}.old."))
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
    try:
        Image.fromarray(mask.numpy(), mode="L").save(path)
    except OSError as err:
        raise_if_disk_full(err, path)
        raise


class _NotAPseudoMask(Exception):
    """A readable image that is not what :func:`write_mask_png` writes."""


def read_pseudo_mask(path: str | os.PathLike, size: tuple[int, int] | None = None, num_classes: int | None = None,
                     ignore_index: int | None = None) -> np.ndarray:
    """The pseudo-mask PNG ``path`` as uint8 (H, W). Anything but what :func:`write_mask_png`
    writes is an error naming the file and what is wrong: missing, not a PNG, not 8-bit
    single-channel, not of the image's ``size``, a value that is neither a class
    (< ``num_classes``) nor ``ignore_index``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pseudo-mask {path} is missing")
    try:
        with Image.open(path) as m:  # mode and size from the header: a wrong one is not decoded
            if m.mode != "L":
                raise _NotAPseudoMask(f"a pseudo-mask must be an 8-bit single-channel PNG (mode L), got mode {m.mode}")
            if size is not None and (m.height, m.width) != tuple(size):
                raise _NotAPseudoMask(f"pseudo-mask size {m.width}x{m.height} (WxH) differs from its image "
                                      f"{size[1]}x{size[0]}")
            a = np.asarray(m)
    except _NotAPseudoMask as err:
        raise ValueError(f"{path}: {err}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL: not a PNG, truncated...
        raise ValueError(f"{path}: cannot read this pseudo-mask ({type(err).__name__}: {err})") from None
    if num_classes is not None:
        bad = np.unique(a[a >= num_classes])
        bad = bad[bad != ignore_index] if ignore_index is not None else bad
        if bad.size:
            raise ValueError(f"{path}: pseudo-mask values {bad[:5].tolist()} are not classes [0, {num_classes})"
                             + (f" nor the ignore value {ignore_index}" if ignore_index is not None else ""))
    return a


def read_mask_pngs(directory: str | os.PathLike, ids: list[str], size: tuple[int, int] | None = None,
                   num_classes: int | None = None, ignore_index: int | None = None) -> torch.Tensor:
    """Read ``<id>.png`` for each id into uint8 (N, H, W), checked by :func:`read_pseudo_mask`
    (one of another size than the first is an error too)."""
    directory = Path(directory)
    out = []
    for name in ids:
        out.append(read_pseudo_mask(directory / f"{name}.png", size or (out[0].shape if out else None),
                                    num_classes, ignore_index))
    return torch.from_numpy(np.stack(out))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
