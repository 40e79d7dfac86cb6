"""The authors' labelled sets, derived from their split pickles without unpickling them.

The paper's code (``RK621/ThreeStageSelftraining_SemanticSegmentation``, ``main.py`` L538, L554)
loads ``data/cityscapes/split_0.pkl`` and ``data/splits/pascal_aug/split_0.pkl``: the splits of
Mittal et al. (``sud0301/semisup-semseg``, ``splits/{city,voc}/split_0.pkl``, the same bytes), also
used by French et al. (``Britefury/cutmix-semisup-seg``). Each holds one numpy int64 permutation of
the training pool; ``datapipe/datasets.py`` takes its first ``n_sup`` entries as the labelled set,
so the sets of the four label counts are nested. The indices point into

- Cityscapes: the sorted ``train/<city>/<city>_<seq>_<frame>`` names (``cityscapes_dataset.py``
  sorts the names it finds; 2,975), which are our sorted Cityscapes ids ``<city>/<stem>``;
- VOC: the lines of ``train_aug.txt`` in file order (``pascal_voc_dataset.py`` L95), the list
  ``download_pascal_aug_names.py`` fetches from ``hfslyc/AdvSemiSeg`` (10,582 ids, sorted).

This tool turns a pickle and the name list into id lists (one per label count) that the package
ships (``selftrain_lib/data/splits/``): a pickle is code, so it is read here as data, opcode by
opcode (:mod:`pickletools`), and nothing in it is ever called::

    python tools/authors_splits.py --dataset cityscapes --pickle split_0.pkl \\
        --names cityscapes_list/train.txt --source "RK621/...@<commit>:data/cityscapes/split_0.pkl" \\
        --names-source "wasidennis/AdaptSegNet@<commit>:dataset/cityscapes_list/train.txt"
"""
from __future__ import annotations

import argparse
import hashlib
import pickletools
import re
import sys
from pathlib import Path

import numpy as np

# the label counts of the paper (and of the authors' jobs): the first n entries of the permutation
COUNTS = {"cityscapes": (100, 372, 744, 1488), "voc": (106, 212, 529, 1323)}
POOL = {"cityscapes": 2975, "voc": 10582}
OUT = Path(__file__).resolve().parent.parent / "selftrain_lib" / "data" / "splits"

# What a pickled numpy array may refer to. Anything else (os.system, builtins.eval...) is refused
# before a single value is used: this reader never calls what it names, but a pickle naming other
# callables is not the file we expect.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),  # protocols 0-4
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),          # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol 2 under Python 3 stores bytes as a latin-1 string
})
_DTYPE = re.compile(r"^[<>|=]?([iu])([1248])$")
_BYTES_OPS = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "BINSTRING", "SHORT_BINSTRING", "STRING"}


def read_permutation(data: bytes, where: str = "pickle") -> np.ndarray:
    """The integer array a numpy pickle holds, read from its opcodes without unpickling.

    A pickled 1-D integer array carries a dtype code (``'i8'``), a byte order (``'<'``) and its
    raw buffer (the longest byte string of the stream; under protocol 2 a latin-1 string passed to
    ``_codecs.encode``). The array is the buffer read with that dtype; it must be a permutation of
    ``0..n-1`` and ``n`` must appear among the stream's integers (the shape). Errors name ``where``.
    """
    globals_seen: list[tuple[str, str]] = []
    strings: list[str] = []   # text arguments, in stream order (dtype code, byte order)
    buffers: list[bytes] = []
    ints: set[int] = set()
    pushed: list[object] = []  # what each op pushed (a string, or None for anything else): STACK_GLOBAL
    memo: dict[int, object] = {}  # takes the last two, which may come from the memo (protocol 4: BINGET)
    try:
        ops = list(pickletools.genops(data))
    except Exception as err:  # genops raises ValueError and others on a damaged stream
        raise ValueError(f"{where}: not a pickle stream ({type(err).__name__}: {err})") from None
    for op, arg, _ in ops:
        name = op.name
        if name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEXT_BUFFER"):
            raise ValueError(f"{where}: opcode {name} has no place in a pickled numpy array")
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
            continue
        if name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            globals_seen.append((module, attr))
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2:] + [None, None])[:2] if len(pushed) >= 2 else (None, None)
            if not (isinstance(module, str) and isinstance(attr, str)):
                raise ValueError(f"{where}: STACK_GLOBAL without a module and a name")
            globals_seen.append((module, attr))
        elif name in _BYTES_OPS:
            buffers.append(arg.encode("latin-1") if isinstance(arg, str) else bytes(arg))
        elif isinstance(arg, str):
            strings.append(arg)
            pushed.append(arg)
            continue
        elif isinstance(arg, int) and not isinstance(arg, bool):
            ints.add(arg)
        if op.stack_after:
            pushed.append(None)
    foreign = sorted({f"{m}.{a}" for m, a in globals_seen if (m, a) not in ALLOWED_GLOBALS})
    if foreign:
        raise ValueError(f"{where}: refers to {foreign}, which a pickled numpy array does not; refusing to read it")
    if ("_codecs", "encode") in globals_seen:  # protocol 2: the buffer is a latin-1 text argument
        buffers += [s.encode("latin-1") for s in strings if s not in ("latin1", "latin-1")]
    codes = [m for m in (_DTYPE.match(s) for s in strings) if m]
    if len(codes) != 1:
        raise ValueError(f"{where}: expected one integer dtype code such as 'i8', found {[m.group(0) for m in codes]}")
    order = next((s for s in strings if s in ("<", ">", "|", "=")), "<")
    kind, size = codes[0].group(1), int(codes[0].group(2))
    order = "<" if order in ("|", "=") else order  # '|': one byte, no order; '=': the writer's (little-endian)
    if not buffers:
        raise ValueError(f"{where}: holds no array buffer")
    buffer = max(buffers, key=len)
    if len(buffer) % size:
        raise ValueError(f"{where}: a buffer of {len(buffer)} bytes is no whole number of {size}-byte integers")
    values = np.frombuffer(buffer, dtype=np.dtype(f"{order}{kind}{size}")).astype(np.int64)
    n = len(values)
    if n not in ints:
        raise ValueError(f"{where}: the buffer holds {n} integers but no shape of that length is given")
    if not np.array_equal(np.sort(values), np.arange(n)):
        raise ValueError(f"{where}: the {n} integers are not a permutation of 0..{n - 1}")
    return values


def cityscapes_names(text: str) -> list[str]:
    """Our Cityscapes ids ``<city>/<stem>`` in the authors' order (sorted), from a list of
    ``[leftImg8bit/train/]<city>/<stem>_leftImg8bit.png`` lines."""
    ids = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        city, stem = Path(line).parent.name, Path(line).name.removesuffix(".png").removesuffix("_leftImg8bit")
        ids.append(f"{city}/{stem}")
    return sorted(ids)


def voc_names(text: str) -> list[str]:
    """The ids of ``train_aug.txt`` in file order (a line may be an id or a DeepLab-style path pair)."""
    return [Path(line.split()[0]).stem for line in text.splitlines() if line.strip()]


NAMES = {"cityscapes": cityscapes_names, "voc": voc_names}


def labelled_ids(dataset: str, perm: np.ndarray, names: list[str]) -> dict[int, list[str]]:
    """``{n: the first n entries of perm as ids}`` for each of the paper's label counts."""
    if len(names) != POOL[dataset] or len(set(names)) != len(names):
        raise ValueError(f"{dataset}: the name list has {len(names)} ({len(set(names))} distinct) names, "
                         f"expected {POOL[dataset]}")
    if len(perm) != len(names):
        raise ValueError(f"{dataset}: the permutation has {len(perm)} entries for {len(names)} names")
    return {n: [names[i] for i in perm[:n]] for n in COUNTS[dataset]}


def write_lists(dataset: str, ids: dict[int, list[str]], out: Path, header: str) -> list[Path]:
    """``<out>/<dataset>_<n>.txt``: a ``#`` header (skipped by ``read_split``), then one id per line,
    in the permutation's order (so each list is the start of the next)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, chosen in ids.items():
        path = out / f"{dataset}_{n}.txt"
        comment = "".join(f"# {line}\n" for line in header.format(n=n).splitlines())
        path.write_text(comment + "".join(f"{i}\n" for i in chosen))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(COUNTS))
    p.add_argument("--pickle", required=True, type=Path, help="the authors' split_0.pkl")
    p.add_argument("--names", required=True, type=Path, help="the train name list the indices point into")
    p.add_argument("--source", required=True, help="where the pickle came from: repo@commit:path")
    p.add_argument("--names-source", required=True, help="where the name list came from: repo@commit:path")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    data = args.pickle.read_bytes()
    perm = read_permutation(data, str(args.pickle))
    ids = labelled_ids(args.dataset, perm, NAMES[args.dataset](args.names.read_text()))
    header = (f"The authors' labelled set of {args.dataset}: the first {{n}} entries of the permutation in\n"
              f"{args.source} (sha256 {hashlib.sha256(data).hexdigest()}),\n"
              f"as ids of {args.names_source}. Written by tools/authors_splits.py; see PROVENANCE.md.")
    for path in write_lists(args.dataset, ids, args.out, header):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
