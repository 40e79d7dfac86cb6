"""Procedurally generated segmentation benchmarks that ship with the project (no download).

Two datasets stand in for the paper's benchmarks:

* ``synth-street`` (Cityscapes-like, 64x128, 10 classes): a street scene in perspective -- sky,
  buildings with window grids rising from the horizon, a road trapezoid with lane markings,
  sidewalks, fences, trees, thin poles (1-2 px) carrying traffic signs, cars on the road and
  persons on the sidewalks. Objects grow with their distance below the horizon and are drawn
  far-to-near, so nearer ones occlude farther ones. Cast shadows, fog and dusk vary the
  appearance without touching the labels.
* ``synth-objects`` (PASCAL-like, 96x96, background + 5 classes): 2-4 objects defined by their
  *shape* (disk, square, triangle, ring, cross) at
  random positions, scales and rotations, sometimes overlapping, on cluttered backgrounds
  (textured noise, half-plane patches, lines and irregular blobs that are background; a thin
  line sometimes crosses in front of the objects). Background textures are softer than the
  objects' and half the objects carry an outline, so that a small CNN can learn the task.

Colour never gives a class away on its own: colours are drawn per instance from overlapping
distributions, every class has a texture family with random parameters, and every image gets a
brightness/contrast/colour-cast jitter and Gaussian pixel noise. Masks are drawn from the same
geometry as the pixels, so a mask labels exactly the pixels painted for that class.

A third, classification task (:func:`generate_pretraining_images`) of generic textures x generic
shapes pre-trains the small CPU backbone, as ImageNet pre-trains the paper's ResNet-101. It uses
neither dataset's class definitions.

Everything is deterministic from the seed and image ``i`` is drawn from its own generator
``default_rng([seed, dataset, stream, i])``, so it does not depend on how many images are drawn.

Modules: ``spec`` (a dataset's spec, the generator's version and digest), ``draw`` (primitives),
``street`` and ``objects`` (one scene generator per dataset), ``scenes`` (the datasets by name and
their cache on disk), ``pretraining`` (the pre-training task).
"""
from . import street, objects  # noqa: F401,I001  (first: they register synth-street, then synth-objects)
from .pretraining import PRETRAIN_NUM_CLASSES, PRETRAIN_SHAPES, PRETRAIN_TEXTURES, generate_pretraining_images
from .scenes import (CACHE_ENV, SPECS, cache_path, cache_root, colorize, default_cache_dir, generate, get_spec,
                     load_synthetic)
from .spec import GENERATOR_DIGEST, GENERATOR_VERSION, IGNORE_INDEX, SyntheticSpec, generator_digest

__all__ = [
    "IGNORE_INDEX", "GENERATOR_VERSION", "GENERATOR_DIGEST", "generator_digest", "SyntheticSpec", "SPECS",
    "PRETRAIN_NUM_CLASSES", "PRETRAIN_TEXTURES", "PRETRAIN_SHAPES", "get_spec", "generate", "load_synthetic",
    "generate_pretraining_images", "CACHE_ENV", "cache_root", "default_cache_dir", "cache_path", "colorize",
]
