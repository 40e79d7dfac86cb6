"""Datasets read lazily from image and mask files, with the checks every file loader shares.

A :class:`FileDataset` holds paths only; ``image(i)`` and ``mask(i)`` read one file each:

- ``image(i)``: ``uint8 (3, H, W)`` (RGB; resized bilinearly when ``resize`` is set),
- ``mask(i)``: ``uint8 (H, W)`` class indices, ``ignore_index`` for void (resized nearest;
  raw values mapped through ``label_map`` first when the format stores other ids).

Errors name the file: a missing image or mask (:class:`FileNotFoundError`, at construction), an
image and mask of different sizes, a label value outside ``[0, num_classes)`` that is not the
ignore value, an empty list (:class:`ValueError`). :meth:`FileDataset.check` reads every file.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class FileDataset:
    """A list of (image file, mask file) pairs, read on demand.

    Attributes:
        name: the dataset's name (``cityscapes``, ``voc`` or a folder dataset's), for messages.
        ids: one id per sample (what split files list).
        image_paths, mask_paths: one path each per id.
        num_classes, ignore_index: valid mask values are ``0..num_classes-1`` and ``ignore_index``.
        resize: ``(H, W)`` every image and mask is resized to, or ``None`` (images keep their size).
        label_map: ``int16 (256,)`` raw mask value -> class index (``ignore_index`` for void,
            -1 for a value the format does not define), or ``None`` (masks store class indices).
    """

    name: str
    ids: list[str]
    image_paths: list[Path]
    mask_paths: list[Path]
    num_classes: int
    ignore_index: int = 255
    resize: tuple[int, int] | None = None
    label_map: Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.ids:
            raise ValueError(f"{self.name}: the image list is empty")
        if not len(self.ids) == len(self.image_paths) == len(self.mask_paths):
            raise ValueError(f"{self.name}: {len(self.ids)} ids, {len(self.image_paths)} images and "
                             f"{len(self.mask_paths)} masks")
        if len(set(self.ids)) != len(self.ids):
            seen: dict[str, int] = {}
            i, j = next((seen[x], k) for k, x in enumerate(self.ids) if seen.setdefault(x, k) != k)
            raise ValueError(f"{self.name}: image id {self.ids[i]!r} appears twice ({self.image_paths[i]} and "
                             f"{self.image_paths[j]}): ids must be unique")
        for kind, paths in (("image", self.image_paths), ("mask", self.mask_paths)):
            for p in paths:
                if not Path(p).is_file():
                    raise FileNotFoundError(f"{self.name}: missing {kind} file {p}")

    def __len__(self) -> int:
        return len(self.ids)

    def size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of sample ``i`` as returned (after ``resize``), reading the header only."""
        if self.resize is not None:
            return tuple(self.resize)
        with Image.open(self.image_paths[i]) as im:
            return im.height, im.width

    def image(self, i: int) -> Tensor:
        path = self.image_paths[i]
        with _reading(path, "image"), Image.open(path) as im:
            im = im.convert("RGB")
            if self.resize is not None and (im.height, im.width) != tuple(self.resize):
                im = im.resize((self.resize[1], self.resize[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
        return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous()

    def mask(self, i: int) -> Tensor:
        path = self.mask_paths[i]
        with _reading(self.image_paths[i], "image"), Image.open(self.image_paths[i]) as im:
            image_size = (im.height, im.width)
        with _reading(path, "mask"), Image.open(path) as m:
            if m.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(f"{path}: a mask must be a single-channel integer image, got mode {m.mode}")
            if (m.height, m.width) != image_size:
                raise ValueError(f"{path}: mask size {m.height}x{m.width} differs from its image "
                                 f"{self.image_paths[i]} ({image_size[0]}x{image_size[1]})")
            raw = np.asarray(m).astype(np.int64)
        if raw.min() < 0 or raw.max() > 255:
            raise ValueError(f"{path}: mask values must be in 0..255, found {int(raw.min())}..{int(raw.max())}")
        values = torch.from_numpy(raw)
        if self.label_map is not None:
            values = self.label_map[values].long()
            bad = values < 0
            if bad.any():
                unknown = sorted(set(torch.from_numpy(raw)[bad].tolist()))
                raise ValueError(f"{path}: label ids {unknown[:10]} are not ids of the {self.name} label table")
        bad = (values >= self.num_classes) & (values != self.ignore_index)
        if bad.any():
            found = sorted(set(values[bad].tolist()))
            raise ValueError(f"{path}: label values {found[:10]} are outside [0, {self.num_classes}) and are not "
                             f"the ignore value {self.ignore_index}")
        mask = values.to(torch.uint8)
        if self.resize is not None and tuple(mask.shape) != tuple(self.resize):
            pil = Image.fromarray(mask.numpy()).resize((self.resize[1], self.resize[0]), Image.NEAREST)
            mask = torch.from_numpy(np.asarray(pil).copy())
        return mask

    def chunks(self, indices: Sequence[int], batch_size: int) -> Iterator[tuple[list[int], Tensor]]:
        """``indices`` one at a time, whole (images may differ in size): ([i], uint8 (1, 3, H, W))."""
        for i in indices:
            yield [int(i)], self.image(int(i))[None]

    def check(self, indices: Sequence[int] | None = None, progress: bool = False) -> None:
        """Read (decode) the images and masks of ``indices`` (all by default): raise on the first bad
        file, naming it."""
        from tqdm.auto import tqdm

        indices = range(len(self)) if indices is None else indices
        for i in tqdm(indices, desc=f"checking the {self.name} files (once)", disable=not progress, dynamic_ncols=True):
            self.image(i)
            self.mask(i)


@contextlib.contextmanager
def _reading(path: Path, kind: str) -> Iterator[None]:
    """PIL's errors on a truncated or non-image file (``image file is truncated``, ``cannot
    identify image file``) become a :class:`ValueError` naming the file (some of them do not)."""
    try:
        yield
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot read this {kind} file ({type(err).__name__}: {err})") from err


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids of a list file, one per line (blank lines and ``#`` comments skipped).

    A line may also be a DeepLab-style pair ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``:
    the id is the stem of its first path. Repeated ids and an empty list are errors naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing list file {path}")
    ids: list[str] = []
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text list of image ids ({err})") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        ids.append(Path(first).stem if len(line.split()) > 1 or first.startswith("/") else first)
    if not ids:
        raise ValueError(f"{path}: the list names no images")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: image id {dup!r} is listed twice")
    return ids


def resolve(root: Path, path: str | os.PathLike) -> Path:
    """``path`` if absolute, else ``root / path``."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def find_image(directory: Path, stem: str) -> Path:
    """``directory/stem.<ext>`` for the image extension present (``.jpg`` if none, to name it).
    Two images of one stem (``x.jpg`` beside ``x.png``) are an error: which one is meant?"""
    found = [directory / f"{stem}{ext}" for ext in IMAGE_EXTENSIONS if (directory / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{directory}: images {[p.name for p in found]} share the id {stem!r}; keep one")
    return found[0] if found else directory / f"{stem}.jpg"


def read_pseudo_mask(directory: str | os.PathLike, image_id: str, size: tuple[int, int]) -> Tensor:
    """The pseudo-mask PNG ``<directory>/<image_id>.png`` (uint8 (H, W)); it must have the image's size."""
    path = Path(directory) / f"{image_id}.png"
    if not path.is_file():
        raise FileNotFoundError(f"pseudo-mask {path} is missing")
    with Image.open(path) as m:
        a = np.asarray(m, dtype=np.uint8)
    if a.shape != tuple(size):
        raise ValueError(f"{path}: pseudo-mask size {a.shape} differs from its image {tuple(size)}")
    return torch.from_numpy(a.copy())
