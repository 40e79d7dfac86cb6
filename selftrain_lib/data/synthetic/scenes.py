"""The generated datasets by name: their specs, :func:`generate`, and :func:`load_synthetic`, which
caches them as one ``.npz`` per (dataset, sizes, seed, generator digest)."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ...runs import atomic_write_bytes
from .objects import OBJECTS, objects_image
from .spec import SyntheticSpec, check_count, generator_digest
from .street import STREET, street_image

SPECS: dict[str, SyntheticSpec] = {s.name: s for s in (STREET, OBJECTS)}
_DATASET_TAG = {"synth-street": 1, "synth-objects": 2}


def get_spec(name: str) -> SyntheticSpec:
    """The spec of dataset ``name``; ``ValueError`` naming the known ones if there is none."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown synthetic dataset {name!r}; known: {', '.join(sorted(SPECS))}") from None


def colorize(mask: np.ndarray, name_or_spec: str | SyntheticSpec) -> np.ndarray:
    """RGB uint8 rendering of a label mask with the dataset's palette (ignore/unknown: white)."""
    spec = name_or_spec if isinstance(name_or_spec, SyntheticSpec) else get_spec(name_or_spec)
    lut = np.full((256, 3), 255, np.uint8)
    lut[:spec.num_classes] = np.asarray(spec.palette, np.uint8)
    return lut[np.asarray(mask, np.uint8)]


_DRAW = {"synth-street": street_image, "synth-objects": objects_image}


def generate(name: str, n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of dataset ``name``: uint8 ``(n, H, W, 3)`` and uint8 masks ``(n, H, W)``.

    Mask values lie in ``[0, num_classes)`` (``IGNORE_INDEX`` is not used). Image ``i`` is drawn
    from ``default_rng([seed, dataset, stream, i])``: it does not depend on ``n``. ``stream``
    separates independent sets drawn from one seed (0: train pool, 1: validation).
    """
    spec = get_spec(name)
    n = check_count(n, "n")
    seed = check_count(seed, "seed")
    stream = check_count(stream, "stream")
    h, w = spec.image_size
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.empty((n, h, w), np.uint8)
    draw = _DRAW[name]
    for i in range(n):
        images[i], masks[i] = draw(np.random.default_rng([seed, _DATASET_TAG[name], stream, i]), h, w)
    return images, masks


# the generated sets, cached on disk
CACHE_ENV = "SELFTRAIN_CACHE"


def cache_root() -> Path:
    """The library's cache: ``$SELFTRAIN_CACHE`` or ``~/.cache/selftrain_lib`` (data, pre-trained weights)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "selftrain_lib"


def default_cache_dir() -> Path:
    """Where :func:`load_synthetic` caches: ``<cache_root>/synthetic``."""
    return cache_root() / "synthetic"


def cache_path(name: str, pool_size: int, val_size: int, seed: int, cache_dir: str | os.PathLike) -> Path:
    """The cache file of one (dataset, sizes, seed, generator version)."""
    return Path(cache_dir) / f"{name}_pool{pool_size}_val{val_size}_seed{seed}_{generator_digest(name)}.npz"


_KEYS = ("train_images", "train_masks", "val_images", "val_masks")


def load_synthetic(name: str, pool_size: int | None = None, val_size: int | None = None, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The train pool and validation set of dataset ``name``, generated once and cached.

    Returns ``{"train_images", "train_masks", "val_images", "val_masks"}``. The pool is stream 0
    of ``seed``, the validation set stream 1 (independent of the pool). ``None`` sizes take the
    dataset's defaults. The arrays are cached as one ``.npz`` per (name, sizes, seed,
    ``GENERATOR_VERSION``) in ``cache_dir`` (default :func:`default_cache_dir`), written to a
    temporary file in the same folder and moved into place atomically; an existing file is reused
    (an unreadable one is regenerated).
    """
    spec = get_spec(name)
    pool_size = spec.default_pool_size if pool_size is None else check_count(pool_size, "pool_size")
    val_size = spec.default_val_size if val_size is None else check_count(val_size, "val_size")
    seed = check_count(seed, "seed")
    path = cache_path(name, pool_size, val_size, seed, default_cache_dir() if cache_dir is None else cache_dir)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in _KEYS}
            h, w = spec.image_size
            if data["train_images"].shape == (pool_size, h, w, 3) and data["val_images"].shape == (val_size, h, w, 3):
                return data
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            pass  # unreadable: regenerate and overwrite
    ti, tm = generate(name, pool_size, seed, stream=0)
    vi, vm = generate(name, val_size, seed, stream=1)
    data = {"train_images": ti, "train_masks": tm, "val_images": vi, "val_masks": vm}
    buf = io.BytesIO()  # written atomically, with the mode an ordinary open gives (a cache shared by a group)
    np.savez(buf, **data)
    atomic_write_bytes(path, buf.getvalue())
    return data
