"""The spec of a generated dataset, the generator's version and the checks its entry points share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

# Part of every cache key and of every run hash built on the generator's output (the generated
# datasets, the synthetic pre-training). It was the source hash of the one-file generator of
# December (commit 7e978f8) and is now fixed: tests/test_synthetic.py compares a small probe of
# each generated set with stored hashes, so an edit that changes the output fails there and must
# give the changed set a new digest (old caches and runs are then not reused); a refactor that
# changes no output keeps every cached run.
GENERATOR_VERSION = 2
GENERATOR_DIGEST = "v2-19ae530ea2"


# A dataset whose generator changed since then has its own digest, so that the change leaves the
# other outputs' caches, run hashes and the shipped backbones (keyed on the pre-training's digest)
# as they were. synth-objects was re-designed in December (background + 5 shapes, 2-4 objects an
# image: docs/cpu_scale.md, "The decision").
DATASET_DIGESTS = {"synth-objects": "v3-objects-candA"}


def generator_digest(dataset: str | None = None) -> str:
    """Version and digest of the generator of ``dataset`` (``None``: the pre-training task): part of
    every cache key built on its output."""
    return DATASET_DIGESTS.get(dataset, GENERATOR_DIGEST)


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic dataset is: its classes, their figure colours and default sizes."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class, for figures
    image_size: tuple[int, int]  # (H, W)
    default_pool_size: int
    default_val_size: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def info(self, palette: tuple[tuple[int, int, int], ...] | None = None):
        """Its :class:`~selftrain_lib.data.records.DatasetInfo` (``palette``: figure colours in place of the spec's)."""
        from ..records import DatasetInfo

        return DatasetInfo(name=self.name, class_names=tuple(self.class_names), palette=tuple(palette or self.palette),
                           image_size=tuple(self.image_size), default_pool_size=self.default_pool_size,
                           default_val_size=self.default_val_size)


def check_count(n, what: str) -> int:
    """``n`` as an int; ``ValueError`` naming ``what`` unless it is a non-negative integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
    return int(n)
