"""selftrain_lib.models: DeepLabv2 (f), the branches ĝ / g̃, the registry and the optimiser helpers."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selftrain_lib.models import (ASPP, MODELS, AuxiliaryBranch, DeepLabV2, MultiTaskDeepLab, ResNetBackbone,
                                  build_segmenter, freeze_batchnorm, param_groups, set_batchnorm_eval,
                                  small_resnet_os8)
from selftrain_lib.models.backbones import DilatedBasicBlock

NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small(private_blocks=None, width_factor=0.5, **kwargs):
    return MultiTaskDeepLab(build_segmenter("deeplabv2-small", NUM_CLASSES, **kwargs), private_blocks, width_factor)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def r101():
    torch.manual_seed(0)
    return build_segmenter("deeplabv2-r101", NUM_CLASSES, weights=None).eval()


def _ids(params):
    return {id(p) for p in params}


def _block_dilations(stage):
    return [tuple(block.conv2.dilation) for block in stage]


def _convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


# --- shapes and output stride --------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 128), (65, 67), (33, 31), (17, 40)])
def test_small_output_at_input_size_and_stride_8(size):
    f = build_segmenter("deeplabv2-small", NUM_CLASSES).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert f(x).shape == (2, NUM_CLASSES, *size)
        feats = f.features(x, "conv5")
        assert feats.shape == (2, f.backbone.out_channels, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
        assert f.features(x, "conv4").shape[-2:] == feats.shape[-2:]
        assert f.features(x, "conv2").shape[-2:] == (math.ceil(size[0] / 4), math.ceil(size[1] / 4))


def test_small_backbone_layout():
    b = small_resnet_os8(widths=(8, 16, 24, 32), blocks=(1, 2, 2, 1))
    assert isinstance(b, ResNetBackbone)
    assert b.stage_channels == {"conv1": 8, "conv2": 8, "conv3": 16, "conv4": 24, "conv5": 32}
    assert b.out_channels == 32
    assert all(isinstance(blk, DilatedBasicBlock) for s in (b.conv2, b.conv3, b.conv4, b.conv5) for blk in s)
    assert [len(s) for s in (b.conv2, b.conv3, b.conv4, b.conv5)] == [1, 2, 2, 1]
    assert _block_dilations(b.conv4) == [(2, 2)] * 2 and _block_dilations(b.conv5) == [(4, 4)]
    assert all(tuple(c.stride) == (1, 1) for s in (b.conv4, b.conv5) for c in _convs(s))
    assert b.conv3[0].conv1.stride == (2, 2)
    assert all(isinstance(m, nn.BatchNorm2d) for m in b.modules() if "Norm" in type(m).__name__)
    with pytest.raises(ValueError):
        small_resnet_os8(widths=(8, 16, 32))


def test_small_backbone_output_stride_4_drops_the_maxpool_only():
    from selftrain_lib.models import small_resnet

    b8, b4 = small_resnet((8, 8, 16, 16), output_stride=8), small_resnet((8, 8, 16, 16), output_stride=4)
    assert b8.state_dict().keys() == b4.state_dict().keys()  # the same weights fit both
    assert not any(isinstance(m, nn.MaxPool2d) for m in b4.modules())
    x = torch.rand(2, 3, 30, 44)
    assert b4(x).shape[-2:] == (math.ceil(30 / 4), math.ceil(44 / 4))
    assert b8(x).shape[-2:] == (math.ceil(30 / 8), math.ceil(44 / 8))
    assert b4.output_stride == 4 and "output_stride=4" in repr(b4)
    f = build_segmenter("deeplabv2-small", 5, widths=(8, 8, 16, 16), output_stride=4)
    assert f(x).shape == (2, 5, 30, 44)  # logits upsampled to the input
    with pytest.raises(ValueError, match="output_stride"):
        small_resnet((8, 8, 16, 16), output_stride=16)


def test_r101_dilations_and_shapes(r101):
    b = r101.backbone
    assert [len(s) for s in (b.conv2, b.conv3, b.conv4, b.conv5)] == [3, 4, 23, 3]
    assert _block_dilations(b.conv4) == [(2, 2)] * 23 and _block_dilations(b.conv5) == [(4, 4)] * 3
    assert all(tuple(blk.conv2.padding) == tuple(blk.conv2.dilation) for s in (b.conv4, b.conv5) for blk in s)
    assert all(tuple(c.stride) == (1, 1) for s in (b.conv4, b.conv5) for c in _convs(s))
    assert b.out_channels == 2048 and r101.aspp.in_channels == 2048
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        feats = r101.features(x, "conv5")                        # the one R101 forward
        logits = r101.decode(feats, x.shape[-2:])
    assert feats.shape == (1, 2048, 9, 9)
    assert logits.shape == (1, NUM_CLASSES, 65, 65)


def test_r101_wraps_torchvision_modules(r101):
    import torchvision
    b = r101.backbone
    assert isinstance(b.conv2[0], torchvision.models.resnet.Bottleneck)
    assert not hasattr(b, "fc")


# --- ASPP ----------------------------------------------------------------------------------------

def test_aspp_is_sum_of_four_dilated_convs(r101):
    aspp = r101.aspp
    assert isinstance(aspp, ASPP) and len(aspp.convs) == 4
    assert [c.dilation for c in aspp.convs] == [(d, d) for d in (6, 12, 18, 24)]
    assert [c.padding for c in aspp.convs] == [(d, d) for d in (6, 12, 18, 24)]
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in aspp.convs)
    assert all(c.in_channels == 2048 and c.out_channels == NUM_CLASSES for c in aspp.convs)
    x = torch.randn(1, 2048, 7, 9)
    with torch.no_grad():
        aspp.convs[1].bias.normal_()                             # non-zero biases count too
        manual = sum(F.conv2d(x, c.weight, c.bias, padding=d, dilation=d)
                     for c, d in zip(aspp.convs, (6, 12, 18, 24)))
        assert torch.allclose(aspp(x), manual, atol=1e-5)
        aspp.convs[1].bias.zero_()


def test_aspp_init():
    aspp = ASPP(256, 21)
    w = torch.cat([c.weight.flatten() for c in aspp.convs])
    assert abs(w.std().item() - 0.01) < 1e-3 and abs(w.mean().item()) < 1e-3
    assert all(torch.count_nonzero(c.bias) == 0 for c in aspp.convs)


# --- the branches: sharing by identity -----------------------------------------------------------

def test_branch_k2_shares_conv1_to_conv4_and_owns_half_width_conv6():
    model = small(private_blocks=2)
    f, g = model.segmenter.backbone, model.branch
    assert isinstance(g, AuxiliaryBranch) and g.private_blocks == 2
    for name in ("conv1", "conv2", "conv3", "conv4"):
        assert getattr(g, name) is getattr(f, name)
    assert "conv5" not in g.shared_stages
    assert g.conv6 is not f.conv5 and g.aspp is not model.segmenter.aspp
    assert _ids(g.conv6.parameters()).isdisjoint(_ids(model.segmenter.parameters()))
    # conv5's structure: block type, count, dilation; half the channels
    assert [type(b) for b in g.conv6] == [type(b) for b in f.conv5]
    assert _block_dilations(g.conv6) == _block_dilations(f.conv5)
    assert g.conv6.out_channels == f.out_channels // 2 == g.aspp.in_channels
    assert g.aspp.dilations == model.segmenter.aspp.dilations


def test_r101_conv6_structure(r101):
    b = r101.backbone
    conv6 = b.make_stage5(0.5)
    assert conv6.out_channels == 1024 and len(conv6) == len(b.conv5) == 3
    assert [type(x) for x in conv6] == [type(x) for x in b.conv5]
    assert _block_dilations(conv6) == [(4, 4)] * 3
    c5, c6 = _convs(b.conv5), _convs(conv6)
    assert len(c5) == len(c6)
    for a, c in zip(c5, c6):
        assert (a.kernel_size, a.stride, a.dilation, a.padding) == (c.kernel_size, c.stride, c.dilation, c.padding)
        assert c.out_channels == a.out_channels // 2
        assert c.in_channels in (a.in_channels // 2, 1024)       # first block and projection read conv4's 1024
    assert _ids(conv6.parameters()).isdisjoint(_ids(b.parameters()))


def test_branch_k1_shares_conv1_to_conv5_private_aspp_only():
    model = small(private_blocks=1)
    f, g = model.segmenter, model.branch
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        assert getattr(g, name) is getattr(f.backbone, name)
    assert g.conv6 is None and g.aspp is not f.aspp
    assert _ids(g.parameters()) == _ids(g.aspp.parameters())
    assert g.aspp.in_channels == f.backbone.out_channels


@pytest.mark.parametrize("k", [None, 0])
def test_no_branch(k):
    model = small(private_blocks=k)
    assert model.branch is None
    out = model(torch.randn(1, 3, 32, 32))
    assert set(out) == {"f"}


def test_invalid_private_blocks():
    with pytest.raises(ValueError, match="private_blocks"):
        small(private_blocks=3)


@pytest.mark.parametrize("k", [1, 2])
def test_every_parameter_once(k):
    model = small(private_blocks=k)
    named = list(model.named_parameters(remove_duplicate=False))
    assert len(named) == len({id(p) for _, p in named})
    state = model.state_dict()
    ptrs = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(ptrs) == len(set(ptrs))
    assert all(key.startswith(("segmenter.", "branch.")) for key in state)
    branch_ids, f_ids = _ids(model.branch.parameters()), _ids(model.segmenter.parameters())
    assert branch_ids and branch_ids.isdisjoint(f_ids)
    assert branch_ids | f_ids == _ids(model.parameters())


def test_deepcopy_and_state_dict_keep_sharing():
    model = small(private_blocks=2)
    twin = copy.deepcopy(model)
    assert twin.branch.conv1 is twin.segmenter.backbone.conv1 is not model.segmenter.backbone.conv1
    other = small(private_blocks=2)
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 48)
    model.eval(), other.eval(), twin.eval()
    with torch.no_grad():
        a, b, c = model(x), other(x), twin(x)
    for key in ("f", "g"):
        assert torch.allclose(a[key], b[key]) and torch.allclose(a[key], c[key])


# --- forward: trunk once, gradients where they belong -------------------------------------------

@pytest.mark.parametrize("k", [1, 2])
def test_forward_outputs_and_trunk_runs_once(k):
    model = small(private_blocks=k)
    calls = {name: 0 for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    for name in calls:
        getattr(model.segmenter.backbone, name).register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    x = torch.randn(2, 3, 41, 50)
    out = model(x)
    assert set(out) == {"f", "g"}
    assert out["f"].shape == out["g"].shape == (2, NUM_CLASSES, 41, 50)
    assert all(n == 1 for n in calls.values())


def _grads_zero(params):
    return all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in params)


def test_gradients_k2():
    model = small(private_blocks=2)
    f = model.segmenter
    x = torch.randn(2, 3, 32, 32)
    model(x)["g"].square().mean().backward()
    assert torch.count_nonzero(f.backbone.conv1.conv.weight.grad) > 0
    assert torch.count_nonzero(f.backbone.conv4[0].conv1.weight.grad) > 0
    assert _grads_zero(f.aspp.parameters()) and _grads_zero(f.backbone.conv5.parameters())
    assert not _grads_zero(model.branch.conv6.parameters())
    model.zero_grad(set_to_none=True)
    model(x)["f"].square().mean().backward()
    assert _grads_zero(model.branch.parameters())
    assert not _grads_zero(f.aspp.parameters()) and not _grads_zero(f.backbone.conv5.parameters())


def test_gradients_k1():
    model = small(private_blocks=1)
    f = model.segmenter
    x = torch.randn(2, 3, 32, 32)
    model(x)["g"].square().mean().backward()
    assert torch.count_nonzero(f.backbone.conv1.conv.weight.grad) > 0
    assert not _grads_zero(f.backbone.conv5.parameters())
    assert _grads_zero(f.aspp.parameters())
    model.zero_grad(set_to_none=True)
    model(x)["f"].square().mean().backward()
    assert _grads_zero(model.branch.parameters())


@pytest.mark.parametrize("k", [1, 2])
def test_segmenter_is_the_test_time_network(k):
    model = small(private_blocks=k)
    x = torch.randn(2, 3, 37, 45)
    model.train()
    out = model(x)                                              # a step of batch-norm updates first
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert torch.allclose(model.segmenter(x), out["f"], atol=1e-6)
        assert torch.allclose(model.branch(x), out["g"], atol=1e-6)
        assert torch.allclose(model(x, branch=False)["f"], out["f"], atol=1e-6)
    assert type(model.segmenter) is DeepLabV2
    assert _ids(model.segmenter.parameters()).isdisjoint(_ids(model.branch.parameters()))
    assert count_parameters(model) == count_parameters(model.segmenter) + count_parameters(model.branch)


# --- optimiser helpers ---------------------------------------------------------------------------

@pytest.mark.parametrize("k", [None, 1, 2])
def test_param_groups_partition(k):
    model = small(private_blocks=k)
    groups = param_groups(model, lr=1e-3, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == pytest.approx(1e-3)
    flat = [id(p) for g in groups for p in g["params"]]
    assert len(flat) == len(set(flat)) and set(flat) == _ids(model.parameters())
    assert set(map(id, groups[0]["params"])) == _ids(model.segmenter.backbone.parameters())
    head = set(map(id, groups[1]["params"]))
    assert _ids(model.segmenter.aspp.parameters()) <= head
    if model.branch is not None:
        assert _ids(model.branch.parameters()) <= head
    torch.optim.Adam(groups)                                     # accepted as is


def test_param_groups_plain_segmenter_and_bad_model():
    f = build_segmenter("deeplabv2-small", NUM_CLASSES)
    groups = param_groups(f, lr=0.5)
    assert groups[0]["lr"] == groups[1]["lr"] == 0.5
    assert sum(len(g["params"]) for g in groups) == len(list(f.parameters()))
    with pytest.raises(TypeError):
        param_groups(nn.Linear(2, 2), lr=1.0)


def test_freeze_batchnorm_survives_train():
    model = small(private_blocks=2)
    freeze_batchnorm(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    out = model(torch.randn(4, 3, 32, 32))
    (out["f"].mean() + out["g"].mean()).backward()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    teacher = copy.deepcopy(model).train()                      # copies stay frozen
    teacher(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(before[k], teacher.state_dict()[k]) for k in before)
    # the convolutions still train
    assert model.segmenter.backbone.conv1.conv.weight.grad is not None


def test_set_batchnorm_eval():
    model = small(private_blocks=1).train()
    set_batchnorm_eval(model)
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.segmenter.aspp.training


# --- registry ------------------------------------------------------------------------------------

def test_registry():
    assert {"deeplabv2-r101", "deeplabv2-small"} <= set(MODELS)
    with pytest.raises(ValueError) as err:
        build_segmenter("deeplabv3-nope", NUM_CLASSES)
    assert "deeplabv3-nope" in str(err.value) and "deeplabv2-small" in str(err.value)
    f = build_segmenter("deeplabv2-small", 3, widths=(8, 8, 16, 16), blocks=(1, 1, 2, 1))
    assert isinstance(f, DeepLabV2) and f.num_classes == 3 and f.backbone.out_channels == 16
    assert len(f.backbone.conv4) == 2
    with pytest.raises(TypeError):
        build_segmenter("deeplabv2-small", 3, weights="IMAGENET1K_V1")
    with pytest.raises(TypeError):
        MultiTaskDeepLab(nn.Conv2d(3, 3, 1), private_blocks=1)
