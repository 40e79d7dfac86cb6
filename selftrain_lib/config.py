"""Experiment configuration: plain data, loaded from ``params/<dataset>.yaml``.

Resolution order (later wins), as in timm's train script:

1. the dataclass defaults below,
2. the top level of ``params/<dataset>.yaml``,
3. that file's ``scales: {<scale>: {...}}`` section (``smoke``, ``quick``, ``paper``...),
4. keyword overrides (the CLI flags, papermill parameters).

Every key is checked: an unknown key, a wrong type or an impossible value raises
:class:`ConfigError` naming the key. The resolved configuration is saved with every run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from .methods import METHODS

PARAMS_DIR_ENV = "SELFTRAIN_PARAMS"


class ConfigError(ValueError):
    """A configuration key is unknown, has the wrong type or an impossible value."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` with YAML 1.2's numbers and no duplicate keys.

    PyYAML reads YAML 1.1, where ``1:30`` is the base-60 integer 90, ``010`` is octal 8 and
    ``3e-4`` is a string; a key given twice silently keeps the last value. Here ``1:30`` stays a
    string (so ``seed: 1:30`` is an error naming ``seed``), ``010`` is 10, ``3e-4`` is a number, and
    a duplicate key is an error naming it."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


# YAML 1.2 core schema: int and float without base 60, 1.1's octal 0NN, '_' separators or 0b
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                    list("-+0123456789"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith(("0o", "0x")):
        return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
    return sign * int(digits)


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text.endswith(".nan") else float(text)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str) -> Any:
    """Parse YAML text the way every configuration input is parsed (:class:`_StrictLoader`).
    Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


# A field with this metadata changes how a run executes, not what it computes: no run hash holds it.
# Every other field is in the hash of each stage whose code reads it, declared by that code (the
# method, the model factory, the data, the loop: :func:`selftrain_lib.train.run_key.stage_key`;
# docs/run_cache.md, "How a key enters the hash"). tests/test_run_hashes.py checks that each field
# is one or the other.
EXECUTION = types.MappingProxyType({"hash": False})


@dataclass(frozen=True)
class Config:
    """Everything one experiment needs. Plain data: passed in, never global.

    Sub-batch naming follows docs/method.md: each step of stages >= 2 draws
    ``labelled_per_batch`` images from L (Sub-batch 2, no strong augmentation) and
    ``batch_size - labelled_per_batch`` images from L∪U (Sub-batch 1, strong augmentation).
    """

    # --- data -----------------------------------------------------------------------------
    dataset: str = "synth-street"          # registered dataset name
    scale: str = field(default="quick", metadata=EXECUTION)  # preset the values came from (for the record)
    data_seed: int = 0                     # seed of the generated benchmark itself (fixed across runs)
    pool_size: int | None = None           # synthetic data: train-pool size (None: dataset default)
    val_size: int | None = None            # synthetic data: validation-set size (None: dataset default)
    labels: int = 100                      # |L|: number of labelled images in the pool
    split_file: str | None = None          # a file listing the labelled image ids (overrides labels/seed choice)
    split: str = "random"                  # "random" (drawn from seed), "authors" (the paper's split_0.pkl sets;
    #                                        Cityscapes/VOC at their label counts) or "auto" (authors' for seed 0
    #                                        where they exist, else random: the paper presets); data/authors.py
    seed: int = 0                          # split, initialisation and training randomness

    # --- datasets read from files under data_root (README, "Datasets") --------------------
    train_list: str | None = None          # list of training ids (VOC: ImageSets/Segmentation/train_aug.txt; folder: train.txt)
    val_list: str | None = None            # list of validation ids (VOC: ImageSets/Segmentation/val.txt; folder: val.txt)
    resize: tuple[int, int] | None = None  # (H, W) every image is resized to on reading (Cityscapes default 512x1024)
    num_classes: int | None = None         # folder datasets only: declares one (masks hold 0..num_classes-1)
    class_names: tuple[str, ...] | None = None            # folder datasets: one name per class
    palette: tuple[tuple[int, int, int], ...] | None = None  # folder datasets: one RGB colour per class
    ignore_index: int = 255                # mask value of void pixels (folder datasets may choose another)

    # --- model ----------------------------------------------------------------------------
    model: str = "deeplabv2-small"         # "deeplabv2-small" (CPU scales), "deeplabv2-r101" or "deeplabv2-r101-caffe" (the COCO checkpoint)
    widths: tuple[int, ...] = (16, 32, 64, 128)  # deeplabv2-small channel widths of conv2..conv5
    output_stride: int = 8                 # deeplabv2-small: 8 (DeepLabv2's) or 4 (no max-pool; small images)
    pretrained: str = "synthetic"          # "synthetic" (built and cached), "imagenet", "none" or a checkpoint path
    pretrain_steps: int = 1500             # steps of the synthetic pre-training task
    freeze_bn: bool = False                # paper scale freezes batch norm; from-scratch CPU scales train it

    # --- optimisation ---------------------------------------------------------------------
    stage1_steps: int = 600                # supervised Stage 1
    steps: int = 600                       # each of stages >= 2
    batch_size: int = 8
    labelled_per_batch: int = 4            # Sub-batch 2 (from L); the rest of the batch comes from L∪U
    lr: float = 1e-3                       # Adam
    backbone_lr_mult: float = 1.0          # learning rate of the pre-trained backbone relative to lr
    weight_decay: float = 0.0

    # --- the method -----------------------------------------------------------------------
    lambda1: float = 0.5                   # weight of L_con
    lambda2: float = 0.5                   # weight of L_pl
    cr: bool = True                        # consistency regularisation (L_con)
    t2: bool = True                        # Task 2: the auxiliary branch and L_pl
    sa: bool = True                        # strong augmentation (off: A and B are the identity)
    n2: bool = True                        # stage >= 3 uses its own branch g~ (off: ĝ's structure)
    ema: bool = True                       # EMA teacher (off: the student is its own teacher)
    ema_decays: tuple[float, ...] = (0.99, 0.995, 0.9975, 0.999)
    ema_milestones: tuple[float, ...] = (1 / 3, 2 / 3, 5 / 6)  # fractions of the stage's steps
    ema_reference_steps: int | None = None  # the stage length ema_decays are meant for: shorter stages get
    #                                         decays with the same lag as a fraction of the stage (ema.scale_decays)
    # which network is evaluated, reported and writes the next stage's pseudo-masks in stages >= 2
    # (and the mean teacher baselines): "student" (f_θ, the paper's Algorithm 1) or "teacher" (the EMA
    # teacher f_θ', as the authors' code: eval_net = teacher_net). Both are evaluated and recorded.
    eval_model: str = "student"

    # --- which method (selftrain_lib/methods/) ---------------------------------------------
    method: str = "three-stage"            # "three-stage", "supervised", "mt-cutout" or "mt-cutmix" (methods.METHODS)
    cons_weight: float = 1.0               # mean teacher baselines: weight of the consistency loss (French et al.: 1)
    conf_threshold: float = 0.97           # teacher confidence threshold (French et al.: 0.97; 0 switches it off)
    conf_per_pixel: bool = False           # False: scale the loss by the confident fraction (French et al.'s default)
    cutout_area: tuple[float, float] = (0.0, 1.0)  # mt-cutout: range of the box's area / image area
    cutmix_area: tuple[float, float] = (0.5, 0.5)  # mt-cutmix: range of the box's area / image area
    teacher_decay: float = 0.99            # mean teacher baselines: constant EMA decay (French et al.: 0.99)

    # --- augmentation ---------------------------------------------------------------------
    crop_size: tuple[int, int] = (64, 64)  # (H, W) of training crops
    scale_range: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
    randaug_ops: int = 2
    randaug_magnitude: float = 10.0        # RandAugment scale 0..30
    randaug_prob: float = 1.0              # probability of applying each drawn op (the authors' code: 0.5)
    randaug_style: str = "torchvision"     # op table: "torchvision" or "authors" (their apply_rand.py; augment.STYLES)
    cutout_size: int = 16                  # pixels (paper: 32 px at 321x321)
    cutout_count: int = 1                  # Cutout squares per image (the authors' code: 3)

    # --- evaluation, logging, execution ---------------------------------------------------
    eval_every: int = 200                  # validation mIoU every N steps (curves); the reported one is the last step
    log_every: int = 20
    # a resumed run computes what an uninterrupted one does
    checkpoint_every: int = field(default=200, metadata=EXECUTION)
    num_val_samples: int = 8               # fixed validation images whose predictions are kept for figures
    eval_batch_size: int = field(default=64, metadata=EXECUTION)  # batch-norm in eval mode: no effect on the scores
    device: str = field(default="auto", metadata=EXECUTION)  # "auto", "cpu", "cuda", "cuda:1"...
    precision: str = "auto"                # "auto" (bf16/fp16 autocast on a GPU, fp32 on the CPU), "fp32", "bf16", "fp16"
    # torch CPU threads (None: 1 on the CPU, torch's default on a GPU)
    num_threads: int | None = field(default=None, metadata=EXECUTION)
    compile: bool = field(default=False, metadata=EXECUTION)  # train through torch.compile (GPU)
    num_workers: int = field(default=0, metadata=EXECUTION)  # files: loaders reading ahead (0: none; same crops)
    sync_bn: bool = False                  # torchrun with several GPUs: synchronise batch-norm across ranks
    # real datasets: where they live; what the files hold enters the run hash (the data identity), not the path
    data_root: str | None = field(default=None, metadata=EXECUTION)
    # generated data and pre-trained weights (None: $SELFTRAIN_CACHE or ~/.cache/selftrain_lib)
    cache_dir: str | None = field(default=None, metadata=EXECUTION)

    # --- the authors' released code where it departs from the paper's text -----------------
    # (docs/paper_vs_code.md; the ``paper-code`` presets). Defaults follow the text; each key is
    # declared for the run hash by the code that reads it (the model factory, the method, the data...).
    aspp_dilations: tuple[int, ...] = (6, 12, 18, 24)  # ASPP branches summed; their code sums only [6, 12]
    stage1_batch_size: int | None = None   # Stage 1's batch (None: batch_size); their Cityscapes Stage 1: 4
    align_corners: bool = False            # bilinear upsampling of the logits (their deeplab2.py: True)
    resnet_stride: str = "3x3"             # deeplabv2-r101: "1x1" puts conv3's stride on the 1x1 conv, ceil-mode max-pool
    caffe_channel_order: str = "bgr"       # deeplabv2-r101-caffe input order; their code feeds "rgb" (BGR flip commented out)
    branch_init: str = "kaiming"           # the branch's conv6 weights; their code "normal-0.01"
    strong_aug_input: str = "rgb"          # "normalised-uint8": A acts on the normalised image rescaled per image to uint8
    resize_filter: str = "bilinear"        # "box": box-filtered images, majority-vote labels (their Cityscapes loader)
    pseudo_ignore_ego: bool = False        # Cityscapes: ego-vehicle and border pixels ignore in stored pseudo-masks

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied and validated."""
        return make_config({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


EVAL_MODELS = ("student", "teacher")
PRETRAINED = ("synthetic", "imagenet", "none")  # the values of ``pretrained`` that name no file


def execution_keys() -> frozenset[str]:
    """The fields marked :data:`EXECUTION`: out of every run hash."""
    return frozenset(f.name for f in fields(Config) if f.metadata.get("hash") is False)


#: allowed values of the string keys of the authors' code (the ``paper-code`` presets)
CODE_CHOICES = {"resnet_stride": ("3x3", "1x1"), "caffe_channel_order": ("bgr", "rgb"),
                "branch_init": ("kaiming", "normal-0.01"), "strong_aug_input": ("rgb", "normalised-uint8"),
                "resize_filter": ("bilinear", "box")}


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------

def params_dir() -> Path:
    """``$SELFTRAIN_PARAMS`` or the repository's ``params/`` folder."""
    env = os.environ.get(PARAMS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "params"


def _params_path(dataset: str, params: str | os.PathLike | None) -> Path:
    path = Path(params) if params is not None else params_dir() / f"{dataset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in params_dir().glob("*.yaml"))
        raise ConfigError(f"dataset: no parameter file {path} for dataset {dataset!r} (known: {known})")
    return path


def _read_params(path: Path) -> tuple[dict, dict, dict]:
    """A params YAML split into (top-level keys, ``scales``, ``by_labels``)."""
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    presets = raw.pop("scales", {}) or {}
    by_labels = raw.pop("by_labels", {}) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{path}: scales: expected a mapping from preset names (smoke, quick...) to keys, "
                          f"got {type(presets).__name__}")
    if not isinstance(by_labels, dict):
        raise ConfigError(f"{path}: by_labels: expected a mapping from label counts to keys")
    for name, section in ((f"by_labels.{k}", v) for k, v in by_labels.items()):
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping of keys, got {section!r}")
    return raw, presets, by_labels


def scale_presets(dataset: str, params: str | os.PathLike | None = None) -> list[str]:
    """The scale presets (``smoke``, ``quick``...) of ``dataset``'s params file."""
    return sorted(_read_params(_params_path(dataset, params))[1])


def label_settings(dataset: str, labels: int, params: str | os.PathLike | None = None) -> dict[str, Any]:
    """The keys a params file sets for ``labels`` labelled images, whatever the scale: its top level
    under its ``by_labels[labels]``. This is the one table of the paper's λ per label count
    (``lambda1``, ``lambda2``), read by :func:`load_config` (the CLI) and by the experiment grids."""
    top, _, by_labels = _read_params(_params_path(dataset, params))
    return {**top, **(by_labels.get(labels) or {})}


def load_config(dataset: str | None = None, scale: str = "quick", params: str | os.PathLike | None = None,
                **overrides: Any) -> Config:
    """Resolve a configuration: dataclass defaults < YAML < YAML's ``scales[scale]`` <
    ``by_labels[labels]`` < ``overrides``.

    Args:
        dataset: dataset name; its YAML is ``params/<dataset>.yaml`` unless ``params`` is given.
            None: the ``dataset`` that ``params`` names, else ``synth-street``. A ``params`` file that
            names another dataset is an error (which one was meant?).
        scale: one of the YAML's scale presets (``smoke``, ``quick``, ``paper``...).
        params: an explicit YAML file (for your own dataset).
        **overrides: any :class:`Config` key. ``labels="full"`` means the whole pool.
    """
    if dataset is not None and not isinstance(dataset, str):
        raise ConfigError(f"dataset: expected a dataset name, got {_short(dataset)}")
    if "dataset" in overrides:
        raise ConfigError("dataset: give it as the dataset argument (--dataset), not as a key of the overrides")
    path = _params_path(dataset or Config.dataset, params)
    raw, presets, by_labels = _read_params(path)
    dataset = _params_dataset(path, dataset, raw, presets)
    if scale not in presets:
        raise ConfigError(f"scale: {scale!r} is not a preset of {path.name} (presets: {sorted(presets)})")
    if presets[scale] is not None and not isinstance(presets[scale], dict):
        raise ConfigError(f"{path}: scales.{scale}: expected a mapping of keys, got {presets[scale]!r}")
    layers = [(str(path), raw), (f"{path}: scales.{scale}", _preset(path, presets, scale)), ("overrides", overrides)]
    # by_labels: {|L|: {key: value}}, settings that depend on the label count (e.g. λ, the labelled
    # share of a batch); applied over the scale preset, under the overrides.
    labels = next((m["labels"] for _, m in reversed(layers) if "labels" in m), Config.labels)
    _check_labels(labels, next(source for source, m in reversed(layers) if "labels" in m) if any(
        "labels" in m for _, m in layers) else "defaults")
    pool = next((m["pool_size"] for _, m in reversed(layers) if m.get("pool_size") is not None), None)
    key = _by_labels_key(dataset, labels, pool, by_labels)
    if key in by_labels:
        layers.insert(2, (f"{path}: by_labels.{key}", by_labels[key] or {}))
    values: dict[str, Any] = {"dataset": dataset}
    for source, mapping in layers:
        unknown = sorted(set(mapping) - _FIELD_TYPES.keys())
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r}"
                              + (f" (and {unknown[1:]})" if len(unknown) > 1 else ""))
        values.update(mapping)
    values["scale"] = scale
    if values.get("labels") == "full":
        values["labels"] = _pool_size(values)
    return make_config(values)


def _preset(path: Path, presets: Mapping[str, Any], scale: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of preset ``scale``; ``extends: <preset>`` starts from that preset's keys (``paper-code``
    is ``paper`` plus the keys where the authors' code departs from the paper)."""
    section = dict(presets[scale] or {})
    base = section.pop("extends", None)
    if base is None:
        return section
    if base not in presets or not isinstance(presets[base] or {}, dict) or base in seen + (scale,):
        raise ConfigError(f"{path}: scales.{scale}: extends {base!r}, which is not another preset of the file "
                          f"(presets: {sorted(presets)})")
    return {**_preset(path, presets, base, seen + (scale,)), **section}


def _params_dataset(path: Path, dataset: str | None, raw: Mapping[str, Any], presets: Mapping[str, Any]) -> str:
    """The dataset a run of ``path`` is about: ``dataset`` when given, else the file's own. The file
    (or one of its presets) naming another dataset than ``dataset`` is an error naming both."""
    named = [(str(path), raw.get("dataset"))] + [
        (f"{path}: scales.{name}", section.get("dataset")) for name, section in presets.items()
        if isinstance(section, dict)]
    named = [(where, d) for where, d in named if d is not None]
    if dataset is None:
        return named[0][1] if named and isinstance(named[0][1], str) else Config.dataset
    for where, d in named:
        if d != dataset:
            raise ConfigError(f"dataset: {dataset!r} was asked for (--dataset), but {where} sets dataset: {d!r}; "
                              "give one of them (or the same name in both)")
    return dataset


def _check_labels(labels: Any, source: str) -> None:
    """``labels`` is a whole number of images or ``"full"``: 12.7 is not rounded, [5] is not a count."""
    if labels == "full" or (isinstance(labels, int) and not isinstance(labels, bool)):
        return
    raise ConfigError(f"labels: expected a whole number of labelled images or 'full', got {_short(labels)}"
                      + ("" if source == "overrides" else f" (in {source})"))


def make_config(values: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a plain mapping (e.g. a saved ``config.json``).
    Values only: no file is read and nothing is registered, so a saved configuration loads after
    its data moved (the files are checked by :func:`selftrain_lib.preflight.preflight`)."""
    unknown = sorted(set(values) - _FIELD_TYPES.keys())
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}")
    coerced = {k: _coerce(k, v, _FIELD_TYPES[k]) for k, v in values.items()}
    config = Config(**coerced)
    validate(config)
    return config


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------

_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Config)


def _check_folder_declaration(c: Config) -> None:
    """A config with ``num_classes`` declares a folder dataset named ``c.dataset``: its values are
    possible (resolved, not registered, by :func:`selftrain_lib.data.config_dataset`)."""
    from .data import DATASETS  # loads torch: config stays light (the CLI's --help, notebook parameters)
    from .data.files import dataset_name_problem

    n = c.num_classes
    problem = dataset_name_problem(c.dataset)  # the name names files in the cache
    _require(problem is None, "dataset", f"{c.dataset!r} {problem}")
    # masks are 8-bit and keep one value (ignore_index, >= num_classes) for void pixels
    _require(1 <= n <= 255, "num_classes", f"must be in [1, 255] (masks are 8-bit, and ignore_index needs a value "
             f"above the classes), got {n}")
    _require(c.dataset not in DATASETS or DATASETS[c.dataset].format == "folder", "num_classes",
             f"declares a folder dataset, but {c.dataset!r} is a built-in dataset; give yours another name")
    _require(0 <= c.ignore_index <= 255 and c.ignore_index >= n, "ignore_index",
             f"must be in [num_classes, 255] = [{n}, 255] (masks are 8-bit), got {c.ignore_index}")
    _require(c.class_names is None or len(c.class_names) == n, "class_names",
             f"needs num_classes={n} names, got {len(c.class_names or ())}")
    _require(c.palette is None or len(c.palette) == n, "palette",
             f"needs num_classes={n} colours, got {len(c.palette or ())}")
    _require(c.palette is None or all(0 <= v <= 255 for rgb in c.palette for v in rgb), "palette",
             "colours are RGB triples of 0..255")


# annotation -> (the types a value may have, what an error calls it); a bool is never a number
_SCALARS = {bool: (bool, "true or false"), int: (int, "an integer"), float: ((int, float), "a number"),
            str: (str, "a string")}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's annotation; lists become tuples, ints become floats."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if annotation not in _SCALARS:
        raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # a bug in Config, not user input
    accepted, what = _SCALARS[annotation]
    if not isinstance(value, accepted) or (isinstance(value, bool) and annotation is not bool):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    if annotation is not float:
        return value
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range
        number = math.inf
    if not math.isfinite(number):  # inf / nan pass every comparison of validate() the wrong way
        raise ConfigError(f"{key}: expected a finite number, got {_short(value)}")
    return number


def _by_labels_key(dataset: str, labels: Any, pool_size: int | None, keys: Any = ()) -> Any:
    """The row of ``by_labels`` (its ``keys``) for ``labels`` labelled images. The table is keyed by
    label counts of the dataset's whole pool (the paper's fractions: VOC 1/100 ... 1/8 of 3,000 are
    30 ... 375); a preset with a smaller synthetic pool (``quick``: 600) looks up the count its labels
    stand for (6 of 600 is 1/100: row 30), so λ follows the fraction, as in the paper, not the raw
    count. The scaling is :func:`selftrain_lib.label_counts.scale_count`, the one shared with the grids."""
    from .data import dataset_info  # loads torch: config stays light (the CLI's --help, notebook parameters)
    from .label_counts import count_stands_for

    if not isinstance(labels, int) or isinstance(labels, bool) or not pool_size:
        return labels
    try:
        info = dataset_info(dataset)
    except ValueError:   # a dataset the params file declares itself: no default pool to scale from
        return labels
    default = info.default_pool_size
    if info.format != "synthetic" or not default or pool_size >= default:
        return labels
    return count_stands_for(dataset, labels, pool_size, default, candidates=keys)  # None: no row


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def _pool_size(values: Mapping[str, Any]) -> int:
    """The number of training images: counted from the train list of a dataset read from files
    (a subset, or your own folder dataset), else the synthetic pool's size."""
    from .data import config_dataset, open_files  # loads torch: config stays light (see validate)

    probe = make_config({**values, "labels": 1})  # validated
    info = config_dataset(probe)
    if info.format != "synthetic":
        _require(bool(probe.data_root), "labels", f"'full' counts the train list of {probe.dataset!r}, which is "
                 "read from files: set data_root to its folder")
        return len(open_files(probe, "train"))
    return values.get("pool_size") or info.default_pool_size


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


# key -> the least value it may take (None, where the key allows it, means "not set")
_LEAST = {"pool_size": 1, "val_size": 1, "seed": 0, "data_seed": 0, "stage1_steps": 1, "steps": 1, "batch_size": 1,
          "eval_every": 1, "log_every": 1, "checkpoint_every": 1, "eval_batch_size": 1, "randaug_ops": 0,
          "pretrain_steps": 1, "backbone_lr_mult": 0, "weight_decay": 0, "lambda1": 0, "lambda2": 0,
          "ema_reference_steps": 1, "cutout_count": 0, "num_val_samples": 0, "num_threads": 1, "num_workers": 0,
          "cons_weight": 0, "stage1_batch_size": 1}


# key -> the greatest value it may take. Beyond these a value is a typo, not a setting: it would
# fail deep in torch (an integer past int64, a tensor of 10**20 Cutout boxes) or only after a stage
# trained (the validation sample), or hang (10**20 generated images).
_MOST = {"seed": 2**32 - 1, "data_seed": 2**32 - 1, "pool_size": 1_000_000, "val_size": 1_000_000,
         "batch_size": 65_536, "stage1_batch_size": 65_536, "eval_batch_size": 65_536, "num_threads": 4096, "num_workers": 1024,
         "randaug_ops": 100, "cutout_count": 100, "num_val_samples": 10_000}
# any other integer (steps, sizes, widths...): what torch's int64 sizes and counts accept
_INT_MOST = 2**62


def _check_bounds(c: Config) -> None:
    """Every integer key within :data:`_MOST`, else within :data:`_INT_MOST` (lists too)."""
    for f in fields(c):
        v = getattr(c, f.name)
        most = _MOST.get(f.name, _INT_MOST)
        for x in (v if isinstance(v, tuple) else (v,)):
            if isinstance(x, tuple):   # palette: RGB triples, checked by their own rule
                continue
            _require(not isinstance(x, int) or isinstance(x, bool) or x <= most, f.name,
                     f"must be <= {most:,}, got {_short(x)}")


def validate(c: Config) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is impossible.

    Values only (types, bounds, choices): the files and folders the values name are checked before
    training by :func:`selftrain_lib.preflight.preflight`, so that a saved configuration can be
    read back after its data moved."""
    # these load torch, which reading a parameter file (the CLI's --help, notebook parameters) must not
    from .augment import STYLES
    from .data import DATASETS, config_dataset
    from .data.authors import check_split
    from .models import MODELS
    from .precision import PRECISIONS

    if c.num_classes is not None:
        _check_folder_declaration(c)
    _require(c.dataset in DATASETS or c.num_classes is not None, "dataset",
             f"unknown dataset {c.dataset!r} (known: {sorted(DATASETS)})")
    info = config_dataset(c)
    _require(c.model in MODELS, "model", f"unknown model {c.model!r} (known: {sorted(MODELS)})")
    for key, least in _LEAST.items():
        v = getattr(c, key)
        _require(v is None or v >= least, key, f"must be >= {least}, got {v}")
    _check_bounds(c)

    pool = c.pool_size or info.default_pool_size  # 0: a folder dataset, counted when it is read
    _require(1 <= c.labels and (not pool or c.labels <= pool), "labels",
             f"must be between 1 and the pool size {pool}, got {c.labels}")
    if info.format != "folder":
        for key in ("num_classes", "class_names", "palette"):
            _require(getattr(c, key) is None, key, f"declares a folder dataset; {c.dataset!r} defines its own")
        _require(c.ignore_index == info.ignore_index, "ignore_index",
                 f"{c.dataset!r} uses {info.ignore_index}, got {c.ignore_index}")
    if info.format == "synthetic":
        for key in ("train_list", "val_list", "resize"):
            _require(getattr(c, key) is None, key, f"is for datasets read from files, not the generated {c.dataset!r}")
        # a data_root here would be ignored without a word (the data is generated into the cache)
        _require(c.data_root is None, "data_root",
                 f"{c.data_root!r} is given, but {c.dataset!r} is generated (into cache_dir), not read from a folder; "
                 "leave data_root out, or name a dataset read from files (cityscapes, voc, your own)")
    _require(c.resize is None or min(c.resize) >= 1, "resize", f"must be two positive sizes (H, W), got {c.resize}")
    for key in ("resize_filter", "pseudo_ignore_ego"):  # the authors' Cityscapes loader and pseudo-mask writer
        _require(getattr(c, key) == getattr(Config, key) or info.format == "cityscapes", key,
                 f"is a setting of the Cityscapes files, not of {c.dataset!r}; leave it at {getattr(Config, key)!r}")
    split_problem = check_split(c)
    _require(split_problem is None, "split", split_problem or "")
    _require(1 <= c.labelled_per_batch < c.batch_size, "labelled_per_batch",
             f"must be at least 1 and less than batch_size={c.batch_size} (the rest of the batch comes from L∪U), "
             f"got {c.labelled_per_batch}")
    _require(c.lr > 0, "lr", f"must be > 0, got {c.lr}")
    for key, allowed in (("eval_model", EVAL_MODELS), ("randaug_style", STYLES), ("output_stride", (4, 8)),
                         ("precision", PRECISIONS), ("method", tuple(METHODS)), *CODE_CHOICES.items()):
        _require(getattr(c, key) in allowed, key, f"must be one of {list(allowed)}, got {getattr(c, key)!r}")
    _require(len(c.aspp_dilations) >= 1 and min(c.aspp_dilations) >= 1, "aspp_dilations",
             f"needs at least one positive dilation, got {list(c.aspp_dilations)}")
    _require(len(c.ema_decays) == len(c.ema_milestones) + 1, "ema_decays",
             f"needs one more value than ema_milestones ({len(c.ema_milestones)}), got {len(c.ema_decays)}")
    _require(all(0 <= d < 1 for d in c.ema_decays), "ema_decays", f"each must be in [0, 1), got {c.ema_decays}")
    _require(all(0 < m < 1 for m in c.ema_milestones) and list(c.ema_milestones) == sorted(c.ema_milestones),
             "ema_milestones", f"must be increasing fractions in (0, 1), got {c.ema_milestones}")
    h, w = tuple(c.resize) if c.resize else info.image_size
    ch, cw = c.crop_size
    _require(1 <= ch and 1 <= cw, "crop_size", f"must be positive, got {list(c.crop_size)}")
    # files of varying size (VOC, folders without resize): crops larger than an image are padded with ignore
    _require(not h or (ch <= h and cw <= w), "crop_size",
             f"{list(c.crop_size)} does not fit in the {c.dataset} images of size {[h, w]}")
    lo, hi = c.scale_range
    _require(0 < lo <= hi, "scale_range", f"must satisfy 0 < low <= high, got {list(c.scale_range)}")
    for key, lo, hi in (("randaug_magnitude", 0, 30), ("randaug_prob", 0, 1), ("conf_threshold", 0, 1)):
        _require(lo <= getattr(c, key) <= hi, key, f"must be in [{lo}, {hi}], got {getattr(c, key)}")
    _require(0 <= c.cutout_size <= max(ch, cw), "cutout_size",
             f"must be between 0 and the crop size {max(ch, cw)}, got {c.cutout_size}")
    _require(c.randaug_style != "authors" or c.randaug_magnitude >= 6, "randaug_magnitude",
             f"randaug_style 'authors' draws integer levels 1 .. randaug_magnitude/3 - 1 (their code: 30, i.e. "
             f"levels 1..9 of 10): must be >= 6, got {c.randaug_magnitude}")
    _require(c.model != "deeplabv2-small" or (len(c.widths) == 4 and min(c.widths) >= 2), "widths",
             f"needs four positive channel widths (conv2..conv5), got {list(c.widths)}")
    _require(c.output_stride == 8 or c.model == "deeplabv2-small", "output_stride",
             f"{c.model} has output stride 8 (4 exists for deeplabv2-small only)")
    _require(c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"), "device",
             f"must be 'auto', 'cpu' or 'cuda[:i]', got {c.device!r}")
    p = c.pretrained
    _require(p in PRETRAINED or bool(p.strip()), "pretrained",
             f"must be {', '.join(map(repr, PRETRAINED))} or a checkpoint file, got {p!r}")
    _require(p != "synthetic" or c.model == "deeplabv2-small", "pretrained",
             "'synthetic' pre-training exists for deeplabv2-small only (use 'imagenet' or a checkpoint)")
    _require(0 <= c.teacher_decay < 1, "teacher_decay", f"must be in [0, 1), got {c.teacher_decay}")
    for key in ("cutout_area", "cutmix_area"):
        a, b = getattr(c, key)
        _require(0 <= a <= b <= 1, key, f"must satisfy 0 <= low <= high <= 1, got {list(getattr(c, key))}")
    need = METHODS[c.method].min_pool_per_batch
    _require(c.batch_size - c.labelled_per_batch >= need, "labelled_per_batch",
             f"{c.method} needs {need} images from L∪U per batch: batch_size - labelled_per_batch must be >= {need}, "
             f"got {c.batch_size} - {c.labelled_per_batch}")


def resolved_dict(config: Config) -> dict[str, Any]:
    """JSON-ready dict of the configuration (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
