"""Datasets read lazily from image and mask files, with the checks every file loader shares.

A :class:`FileDataset` holds paths only; ``image(i)`` and ``mask(i)`` read one file each:

- ``image(i)``: ``uint8 (3, H, W)`` (RGB; resized bilinearly when ``resize`` is set),
- ``mask(i)``: ``uint8 (H, W)`` class indices, ``ignore_index`` for void (resized nearest;
  raw values mapped through ``label_map`` first when the format stores other ids).

Images are read as shown: turned by their EXIF orientation; 16-bit samples scaled by their
high byte (``v >> 8``, i.e. by 65535 as Pillow reads 16-bit RGB; 12-bit data stored unscaled is
therefore dark, and :meth:`FileDataset.check` warns of it); float images in ``[0, 1]`` times 255.
Masks are never turned: a mask is read as drawn on the image as shown.

Errors name the file: a missing image or mask (:class:`FileNotFoundError`, at construction), a
dangling symbolic link, an image and mask of different sizes, an image mode that is not read
(CMYK, a float image outside ``[0, 1]``...), a label value outside ``[0, num_classes)`` that is
not the ignore value, an empty list, an id that would leave its folder (:class:`ValueError`).
:meth:`FileDataset.check` reads every file.
"""
from __future__ import annotations

import contextlib
import os
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")  # in any case: IMG_0.JPG
MASK_EXTENSIONS = (".png",)
# Image modes Pillow turns into RGB as they are meant (alpha dropped); 16-bit and float grey are
# scaled here (:func:`_rgb_image`); any other mode (CMYK, LAB, 32-bit integers...) is refused.
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "YCbCr"})
_EXIF_ORIENTATION = 0x0112  # 5..8: the image is stored turned by a quarter


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
    # the authors' Cityscapes loader: "box" resizes images with a box filter and masks by majority vote
    resize_filter: str = "bilinear"
    # raw mask values of pixels every prediction leaves out (Cityscapes' ego vehicle and borders): fixed_void()
    fixed_void_ids: tuple[int, ...] = ()
    _sizes: dict[int, tuple[int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

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
        for image_id in self.ids:  # pseudo-masks are written as <run>/pseudo_masks/<id>.png
            problem = id_problem(image_id)
            if problem:
                raise ValueError(f"{self.name}: image id {image_id!r} {problem}")
        for kind, paths in (("image", self.image_paths), ("mask", self.mask_paths)):
            for p in paths:
                if not Path(p).is_file():
                    if Path(p).is_symlink():
                        raise FileNotFoundError(f"{self.name}: {kind} file {p} is a symbolic link to "
                                                f"{os.readlink(p)}, which does not exist")
                    raise FileNotFoundError(f"{self.name}: missing {kind} file {p}")

    def __len__(self) -> int:
        return len(self.ids)

    def size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of sample ``i`` as returned (after ``resize``), reading the header only."""
        if self.resize is not None:
            return tuple(self.resize)
        return self._shown_size(i)

    def _shown_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of image ``i`` as shown (after its EXIF orientation), before ``resize``;
        remembered (a PNG's EXIF is read by decoding it)."""
        if i not in self._sizes:
            path = self.image_paths[i]
            with _reading(path, "image"), Image.open(path) as im:
                self._sizes[i] = _shown_size(im)
        return self._sizes[i]

    def image(self, i: int) -> Tensor:
        return torch.from_numpy(self._image_array(i)[0]).permute(2, 0, 1).contiguous()

    def _image_array(self, i: int) -> tuple[np.ndarray, str | None]:
        """uint8 ``(H, W, 3)`` of image ``i`` as shown and resized, and a warning about it or None."""
        path = self.image_paths[i]
        with _reading(path, "image"), Image.open(path) as im:
            im, note = _rgb_image(ImageOps.exif_transpose(im) if _orientation(im) != 1 else im, path)
            self._sizes[i] = (im.height, im.width)
            if self.resize is not None and (im.height, im.width) != tuple(self.resize):
                im = im.resize((self.resize[1], self.resize[0]), Image.BOX if self.resize_filter == "box" else Image.BILINEAR)
            return np.array(im, dtype=np.uint8), note

    def mask(self, i: int) -> Tensor:
        raw = self._raw_mask(i)
        path = self.mask_paths[i]
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
        return self._resize_mask(values.to(torch.uint8))

    def fixed_void(self, i: int) -> Tensor:
        """``bool (H, W)``: the pixels of sample ``i`` whose raw mask value is one of
        :attr:`fixed_void_ids` (after ``resize``, as :meth:`mask`)."""
        raw = torch.from_numpy(self._raw_mask(i))
        inside = torch.isin(raw, torch.tensor(self.fixed_void_ids, dtype=raw.dtype))
        return self._resize_mask(inside.to(torch.uint8)).bool()

    def _resize_mask(self, mask: Tensor) -> Tensor:
        """uint8 ``(h, w)`` -> ``resize``: nearest, or the most frequent value of each output pixel's
        box (``resize_filter="box"``, ties to the smaller value)."""
        if self.resize is None or tuple(mask.shape) == tuple(self.resize):
            return mask
        if self.resize_filter == "box":
            return majority_resize(mask, tuple(self.resize))
        pil = Image.fromarray(mask.numpy()).resize((self.resize[1], self.resize[0]), Image.NEAREST)
        return torch.from_numpy(np.asarray(pil).copy())

    def _raw_mask(self, i: int) -> np.ndarray:
        """int64 ``(H, W)``: mask ``i``'s stored values, checked against its image's size."""
        path = self.mask_paths[i]
        image_size = self._shown_size(i)
        with _reading(path, "mask"), Image.open(path) as m:
            if m.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(f"{path}: a mask must be a single-channel integer image, got mode {m.mode}")
            if (m.height, m.width) != image_size:
                turned = _turned(self.image_paths[i])
                raise ValueError(f"{path}: mask size {m.height}x{m.width} differs from its image "
                                 f"{self.image_paths[i]} ({image_size[0]}x{image_size[1]}"
                                 + (f" as shown, turned by its EXIF orientation {turned}; masks are never turned"
                                    if turned != 1 else "") + ")")
            raw = np.asarray(m).astype(np.int64)
            if _orientation(m) != 1:  # a mask is read as stored: turning it silently could misalign it
                raise ValueError(f"{path}: the mask carries an EXIF orientation ({_orientation(m)}); masks are "
                                 f"never turned: save it without the tag, drawn on its image as shown")
        if raw.min() < 0 or raw.max() > 255:
            raise ValueError(f"{path}: mask values must be in 0..255, found {int(raw.min())}..{int(raw.max())}")
        return raw

    def chunks(self, indices: Sequence[int], batch_size: int) -> Iterator[tuple[list[int], Tensor]]:
        """``indices`` one at a time, whole (images may differ in size): ([i], uint8 (1, 3, H, W))."""
        for i in indices:
            yield [int(i)], self.image(int(i))[None]

    def check(self, indices: Sequence[int] | None = None, progress: bool = False) -> None:
        """Read (decode) the images and masks of ``indices`` (all by default): raise on the first bad
        file, naming it."""
        from tqdm.auto import tqdm

        indices = range(len(self)) if indices is None else indices
        notes = []
        for i in tqdm(indices, desc=f"checking the {self.name} files (once)", disable=not progress, dynamic_ncols=True):
            _, note = self._image_array(i)
            notes += [note] if note else []
            self.mask(i)
        if notes:
            more = f" (and {len(notes) - 1} more images like it)" if len(notes) > 1 else ""
            print(f"warning: {notes[0]}{more}", file=sys.stderr)


def majority_resize(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``(h, w)`` -> ``size``: each output pixel takes the most frequent value of the input
    pixels its box covers (area-weighted; ties to the smaller value)."""
    values = torch.unique(mask)
    onehot = (mask[None] == values[:, None, None]).float()[None]          # (1, K, h, w)
    share = torch.nn.functional.interpolate(onehot, size=size, mode="area")[0]
    return values[share.argmax(0)].to(torch.uint8)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation of ``im`` (1: as stored; a PNG is decoded to find it)."""
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except (TypeError, ValueError):
        return 1


def _shown_size(im: Image.Image) -> tuple[int, int]:
    """``(H, W)`` of ``im`` as :func:`PIL.ImageOps.exif_transpose` turns it (5..8 swap the sides)."""
    return (im.width, im.height) if _orientation(im) in (5, 6, 7, 8) else (im.height, im.width)


def _turned(path: Path) -> int:
    with _reading(path, "image"), Image.open(path) as im:
        return _orientation(im)


def _rgb_image(im: Image.Image, path: Path) -> tuple[Image.Image, str | None]:
    """``im`` as an 8-bit RGB image, and a warning about it or None.

    16-bit grey keeps its high byte (``v >> 8``: what Pillow does to 16-bit RGB, so both read alike;
    12-bit data stored unscaled, at most 4095, becomes 0..15 and is warned of). Float grey must lie
    in ``[0, 1]`` and is scaled by 255. Other modes (CMYK, 32-bit integers...) are refused, naming the file.
    """
    if im.mode in _RGB_MODES:
        return im.convert("RGB"), None
    note = None
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im).astype(np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"{path}: 16-bit image values must be in 0..65535, found {a.min()}..{a.max()}")
        if a.max() < 4096:
            note = (f"{path}: 16-bit image with values up to {a.max()} only (12-bit data?): read as 16-bit it is "
                    f"dark (0..{a.max() >> 8} of 255); scale it to the full 16-bit range or save it as 8-bit")
        grey = (a >> 8).astype(np.uint8)
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{path}: a float image must hold values in [0, 1], found "
                             f"{np.nanmin(a):g}..{np.nanmax(a):g}" + ("" if np.isfinite(a).all() else " and NaN/inf"))
        grey = np.rint(a * 255).astype(np.uint8)
    else:
        raise ValueError(f"{path}: image mode {im.mode} is not read; save it as RGB, 8- or 16-bit grey, "
                         f"or float grey in [0, 1]")
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2)), note


@contextlib.contextmanager
def _reading(path: Path, kind: str) -> Iterator[None]:
    """PIL's errors on a truncated or non-image file (``image file is truncated``, ``cannot
    identify image file``) become a :class:`ValueError` naming the file (some of them do not)."""
    try:
        yield
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot read this {kind} file ({type(err).__name__}: {err})") from err


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids of a list file, one per line (blank lines and ``#`` comments skipped; a BOM, CRLF line
    ends and spaces around a line dropped).

    A line may also name an image file (``IMG_0.JPG``: the id is ``IMG_0``) or be a DeepLab-style
    pair ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` (the id is the stem of its first path).
    An id that would leave its folder (``..``, absolute) or holds a control character, a repeated
    id and an empty list are errors naming the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing list file {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: a BOM (Windows editors) is no part of the first id
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text list of image ids ({err})") from None
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        image_id = _line_id(line)
        problem = id_problem(image_id)
        if problem:
            raise ValueError(f"{path}:{lineno}: image id {image_id!r} {problem}")
        if image_id in first_line:
            raise ValueError(f"{path}:{lineno}: image id {image_id!r} is listed twice (first on line "
                             f"{first_line[image_id]})")
        first_line[image_id] = lineno
    if not first_line:
        raise ValueError(f"{path}: the list names no images")
    return list(first_line)


def _line_id(line: str) -> str:
    """The image id a (stripped) list line names: see :func:`read_id_list`."""
    def named(token: str) -> bool:
        return Path(token).suffix.lower() in IMAGE_EXTENSIONS

    tokens = line.split()
    if len(tokens) == 2 and all(named(t) for t in tokens):  # "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
        return Path(tokens[0]).stem
    if named(line):  # a file name: "IMG_0.JPG", "sub/x.png"; an absolute path keeps its stem only (as DeepLab's)
        return Path(line).stem if line.startswith("/") else line[: -len(Path(line).suffix)]
    return line


def id_problem(image_id: str) -> str | None:
    """Why ``image_id`` cannot name files under a dataset's and a run's folders (``<id>.png``), or
    None. Subfolders (``city/x``) are allowed; what would leave the folder is not."""
    problem = name_problem(image_id)
    if problem:
        return problem
    if image_id.startswith("/"):
        return "is an absolute path (ids are relative to the image folder)"
    if any(part in ("", ".", "..") for part in image_id.split("/")):
        return "has an empty, '.' or '..' part: it would leave its folder"
    return None


def name_problem(name: str) -> str | None:
    """What makes ``name`` unfit for a file name, ``/`` aside: empty, a NUL, a backslash (a Windows
    folder separator), a control or invisible character (a tab, a BOM), spaces at either end."""
    if not name:
        return "is empty"
    if "\\" in name:
        return "holds a backslash (a folder separator on Windows)"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        return f"holds the invisible character U+{ord(bad):04X} ({unicodedata.name(bad, 'a control character')})"
    if name != name.strip():
        return "begins or ends with a space"
    return None


def dataset_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dataset's name, or None: it names files in the cache
    (``checked/<name>_<hash>``, ``splits/<name>_<labels>_seed<seed>.txt``), so it may hold no ``/``."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    problem = name_problem(name)
    if problem:
        return problem
    if "/" in name or name in (".", ".."):
        return "holds a '/' or is '.' or '..': it names files in the cache and would leave its folder"
    return None


def resolve(root: Path, path: str | os.PathLike) -> Path:
    """``path`` if absolute, else ``root / path``."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def find_image(directory: Path, stem: str, listings: dict | None = None) -> Path:
    """``directory/stem.<ext>`` for the image extension present, in any case (``IMG_0.JPG``; ``.jpg``
    if none, to name it). Two images of one stem (``x.jpg`` beside ``x.png``) are an error: which one
    is meant? ``listings``: a dict to remember folder listings in (one ``scandir`` per folder)."""
    return _find(directory, stem, IMAGE_EXTENSIONS, "images", listings)


def find_mask(directory: Path, stem: str, listings: dict | None = None) -> Path:
    """``directory/stem.png`` (``.PNG`` too), as :func:`find_image` finds images."""
    return _find(directory, stem, MASK_EXTENSIONS, "masks", listings)


def _find(directory: Path, stem: str, extensions: tuple[str, ...], kind: str, listings: dict | None) -> Path:
    target = directory / stem
    folder, name = target.parent, target.name
    listings = {} if listings is None else listings
    if (folder, extensions) not in listings:
        listings[folder, extensions] = _listing(folder, extensions)
    found = sorted(listings[folder, extensions].get(name, ()))
    if len(found) > 1:
        raise ValueError(f"{folder}: {kind} {found} share the id {stem!r}; keep one")
    return folder / found[0] if found else directory / f"{stem}{extensions[0]}"


def _listing(folder: Path, extensions: tuple[str, ...]) -> dict[str, list[str]]:
    """``{stem: [file names]}`` of the entries of ``folder`` whose extension, in any case, is one of
    ``extensions`` (dangling links included, so that they are named)."""
    out: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in extensions:
                    out.setdefault(stem, []).append(entry.name)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return out
