"""The generated datasets by name: their specs and :func:`generate`."""
from __future__ import annotations

import numpy as np

from .objects import OBJECTS, objects_image
from .spec import SyntheticSpec, check_count
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
