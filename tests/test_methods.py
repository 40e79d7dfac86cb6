"""The method interface (methods/base.py): a method declares its model's branch and its batch, the
stage builds it and hands it to the batch source, which draws exactly what it declares."""
import pytest
import torch

from selftrain_lib.config import load_config
from selftrain_lib.methods import BatchSpec, Crops, Method, StepBatch, build as build_method
from selftrain_lib.train import BatchSource, StepDraws
from selftrain_lib.train.parts import build_stage_parts
from selftrain_lib.train.run_key import stage_key

CPU = torch.device("cpu")


def _config(**kw):
    return load_config("synth-street", "smoke", crop_size=[16, 16], batch_size=6, labelled_per_batch=2, **kw)


class Spy(Method):
    """A method that declares a batch and records the crops it is given."""

    name = "spy"

    def __init__(self, batch: BatchSpec):
        self.batch, self.seen = batch, []

    def make_batch(self, crops: Crops, generator: torch.Generator) -> StepBatch:
        self.seen.append(crops)
        images = crops.lab_image if crops.pool_image is None else torch.cat([crops.pool_image, crops.lab_image])
        return StepBatch(images=images, labels=crops.lab_label)


def test_branch_structure_per_stage():
    """The method names the model's branch: ĝ (2 private blocks) in Stage 2, g̃ (1) from Stage 3,
    ĝ again without N2, none without T2, in Stage 1 and for a baseline."""
    c = load_config("synth-street", "smoke")
    assert [build_method(c, k).branch for k in (1, 2, 3, 4)] == [None, 2, 1, 1]
    assert build_method(c.replace(n2=False), 3).branch == 2
    assert build_method(c.replace(t2=False), 2).branch is None
    assert build_method(c.replace(method="mt-cutmix"), 1).branch is None
    # ĝ's conv6 is initialised as branch_init says: in the hash where the branch has one only
    assert ["branch_init" in build_method(c, k).reads() for k in (1, 2, 3)] == [False, True, False]


@pytest.mark.parametrize("method,stage,spec", [
    ("three-stage", 1, BatchSpec(6, 0, False, ("batch_size", "stage1_batch_size"))),
    ("supervised", 1, BatchSpec(6, 0, False, ("batch_size", "stage1_batch_size"))),
    ("three-stage", 2, BatchSpec(2, 4, True, ("batch_size", "labelled_per_batch"))),
    ("three-stage", 3, BatchSpec(2, 4, True, ("batch_size", "labelled_per_batch"))),
    ("mt-cutout", 1, BatchSpec(2, 4, False, ("batch_size", "labelled_per_batch"))),
    ("mt-cutmix", 1, BatchSpec(2, 4, False, ("batch_size", "labelled_per_batch"))),
])
def test_each_method_declares_its_batch_and_the_hash_holds_its_keys(method, stage, spec):
    config = _config(method=method)
    declared = build_method(config, stage).batch
    assert declared == spec
    assert set(spec.reads) <= set(StepDraws.reads(declared)) <= set(stage_key(config, stage))


def test_stage1_batch_size_is_stage_1s_labelled_only_batch():
    config = _config(stage1_batch_size=3)
    assert build_method(config, 1).batch.labelled == 3 and build_method(config, 2).batch.labelled == 2


@pytest.mark.parametrize("method,stage", [("three-stage", 1), ("three-stage", 2), ("mt-cutout", 1), ("mt-cutmix", 1)])
def test_the_batch_source_draws_the_sub_batches_the_method_declares(method, stage, random_view):
    view, masks = random_view
    config = _config(method=method)
    m = build_method(config, stage)
    pseudo = torch.randint(0, 3, masks.shape, dtype=torch.uint8)
    b = BatchSource(m, view, pseudo, config, stage, CPU)(0)
    n1, n2 = m.batch.pool, m.batch.labelled
    assert b.images.shape == (n1 + n2, 3, 16, 16) and b.labels.shape == (n2, 16, 16)
    assert (b.pseudo is not None) == m.batch.pseudo
    if m.batch.pseudo:
        assert b.pseudo.shape == (n1 + n2, 16, 16) and b.clean.shape == b.images.shape
    if method.startswith("mt-"):  # weak augmentation only, one box and the map of inside pixels per pool image
        assert b.clean is None and b.boxes.shape == (n1, 4) and b.valid.shape == (n1, 16, 16)


def test_a_method_without_a_pool_draws_no_pool_image_and_no_pseudo_mask(random_view):
    view, masks = random_view
    spy = Spy(BatchSpec(labelled=3))
    pseudo = torch.randint(0, 3, masks.shape, dtype=torch.uint8)  # given, but the method does not ask for it
    source = BatchSource(spy, view, pseudo, _config(), 2, CPU)
    assert source.draws.indices(0)[1].numel() == 0  # no index of L∪U drawn
    batch = source(0)
    crops = spy.seen[-1]
    assert crops.pool_image is None and crops.pool_pseudo is None and crops.pool_inside is None
    assert crops.lab_pseudo is None and crops.lab_image.shape == (3, 3, 16, 16)
    assert batch.images.shape[0] == 3


def test_a_method_gets_the_pool_crops_and_pseudo_masks_it_declares(random_view):
    view, masks = random_view
    spy = Spy(BatchSpec(labelled=1, pool=2, pseudo=True))
    pseudo = torch.randint(0, 3, masks.shape, dtype=torch.uint8)
    BatchSource(spy, view, pseudo, _config(), 2, CPU)(0)
    crops = spy.seen[-1]
    assert crops.pool_image.shape == (2, 3, 16, 16) and crops.lab_image.shape == (1, 3, 16, 16)
    assert crops.pool_pseudo.shape == (2, 16, 16) and crops.lab_pseudo.shape == (1, 16, 16)
    assert crops.pool_inside.dtype == torch.bool


def test_a_method_with_a_pool_must_make_its_batch():
    crops = Crops(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), pool_image=torch.zeros(2, 3, 4, 4))
    with pytest.raises(NotImplementedError, match="Spyless draws pool images"):
        type("Spyless", (Method,), {})().make_batch(crops, torch.Generator())


def test_the_stage_builds_the_method_and_hands_it_to_the_batch_source(random_view):
    view, masks = random_view
    config = _config()
    pseudo = torch.randint(0, 3, masks.shape, dtype=torch.uint8)
    for stage, blocks in ((1, 0), (2, 2), (3, 1)):
        parts = build_stage_parts(config, stage, view, pseudo if stage >= 2 else None, 3, CPU)
        assert parts.batches.method is parts.method
        assert parts.model.private_blocks == blocks == (parts.method.branch or 0)
        assert parts.steps == parts.method.steps
