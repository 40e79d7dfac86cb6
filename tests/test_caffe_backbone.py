"""The DeepLab-v2 ResNet-101 of Caffe's release (deeplabv2-r101-caffe), for Hung et al.'s MS-COCO
initialisation: its checkpoint layout, input preprocessing, stride placement and output stride,
and the errors that keep the two ResNet-101 styles from taking each other's weights."""
from __future__ import annotations

import pytest
import torch

from selftrain_lib.config import load_config
from selftrain_lib.models import MultiTaskDeepLab, build_segmenter
from selftrain_lib.models.backbones import CAFFE_MEAN_BGR
from selftrain_lib.pretrain import (checkpoint_layout, load_checkpoint_into, load_pretrained, load_state_into,
                                    pretraining_of)


def _advsemiseg_key(key: str) -> str:
    """Our key -> the Res_Deeplab name (AdvSemiSeg's model/deeplab.py) with isht7's 'Scale.' prefix."""
    key = key.replace("backbone.conv1.conv.", "conv1.").replace("backbone.conv1.bn.", "bn1.")
    for i in range(2, 6):
        key = key.replace(f"backbone.conv{i}.", f"layer{i - 1}.")
    return "Scale." + key.replace("aspp.convs.", "layer5.conv2d_list.")


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory):
    """A checkpoint with the keys and shapes of MS_DeepLab_resnet_pretrained_COCO_init.pth (random
    tensors; Caffe conversions carry no num_batches_tracked), and the network it came from."""
    torch.manual_seed(0)
    src = build_segmenter("deeplabv2-r101-caffe", 21)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that loading them is visible
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    state = {_advsemiseg_key(k): v.clone() for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("ckpt") / "MS_DeepLab_resnet_pretrained_COCO_init.pth"
    torch.save(state, path)
    return path, state, src


def test_every_key_of_the_advsemiseg_layout_loads(coco_like):
    path, state, src = coco_like
    assert checkpoint_layout(state) == "deeplab-caffe"
    assert "Scale.layer3.22.conv2.weight" in state and "Scale.layer5.conv2d_list.3.bias" in state
    dst = build_segmenter("deeplabv2-r101-caffe", 21)
    report = load_checkpoint_into(dst, path)
    own = [k for k in dst.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(report.loaded) == sorted(own) and len(report.loaded) == len(state)  # nothing missing, nothing left
    assert report.head_initialised and not report.dropped and not report.notes
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(dst.state_dict()[k], v), k
    voc = build_segmenter("deeplabv2-r101-caffe", 5)  # another class count: the head stays random
    assert not load_checkpoint_into(voc, path).head_initialised


def test_input_reaches_conv1_as_bgr_0_255_minus_the_caffe_mean():
    net = build_segmenter("deeplabv2-r101-caffe", 21)
    seen = []
    net.backbone.conv1.conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))  # RGB in [0, 1]
    net.features(x, "conv1")
    expected = torch.stack([x[:, 2] * 255 - CAFFE_MEAN_BGR[0], x[:, 1] * 255 - CAFFE_MEAN_BGR[1],
                            x[:, 0] * 255 - CAFFE_MEAN_BGR[2]], 1)
    torch.testing.assert_close(seen[0], expected, atol=1e-4, rtol=0)
    assert net.backbone.input_format == "caffe"
    # the torchvision style keeps ImageNet's mean/std on RGB
    tv = build_segmenter("deeplabv2-r101", 21)
    tv.backbone.conv1.conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    tv.features(x, "conv1")
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[1], (x - mean) / std)


def test_stride_sits_on_the_1x1_conv_and_the_output_stride_is_8():
    net = build_segmenter("deeplabv2-r101-caffe", 21).eval()
    first = net.backbone.conv3[0]  # the first bottleneck of the strided stage (conv3_x, ResNet's layer2)
    assert first.conv1.stride == (2, 2) and first.conv1.kernel_size == (1, 1)
    assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (2, 2)
    assert all(b.conv1.stride == b.conv2.stride == (1, 1) for name in ("conv2", "conv4", "conv5")
               for b in getattr(net.backbone, name))
    shapes = {}
    first.conv1.register_forward_hook(lambda m, a, out: shapes.update(conv1_in=a[0].shape[-2:], conv1_out=out.shape[-2:]))
    # dilations as DeepLab-v2: every 3x3 of conv4_x at 2, of conv5_x at 4, padding = dilation
    assert {b.conv2.dilation for b in net.backbone.conv4} == {(2, 2)}
    assert {b.conv2.dilation for b in net.backbone.conv5} == {(4, 4)}
    assert all(b.conv2.padding == b.conv2.dilation for s in ("conv4", "conv5") for b in getattr(net.backbone, s))
    assert net.backbone.conv1.maxpool.ceil_mode
    with torch.no_grad():
        x = torch.rand(1, 3, 65, 65)  # 8k + 1, DeepLab's sizes: (65 - 1) / 8 + 1 = 9
        feats = net.features(x)
        assert shapes["conv1_in"] == (17, 17) and shapes["conv1_out"] == (9, 9)  # the 1x1 conv itself halves
        assert feats.shape == (1, 2048, 9, 9)
        assert net(x).shape == (1, 21, 65, 65)
        assert net.features(torch.rand(1, 3, 64, 48)).shape[-2:] == (9, 7)  # ceil-mode pool: 32 -> 17 -> 9
    tv = build_segmenter("deeplabv2-r101", 21)
    assert tv.backbone.conv3[0].conv1.stride == (1, 1) and tv.backbone.conv3[0].conv2.stride == (2, 2)


def test_batch_norm_affine_is_never_trained_as_in_advsemiseg():
    net = build_segmenter("deeplabv2-r101-caffe", 21)
    bn = [p for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn and not any(p.requires_grad for p in bn)
    assert all(p.requires_grad for m in net.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters())
    branch = MultiTaskDeepLab(net, private_blocks=2).branch.conv6  # ĝ's conv6, as the authors' layer4_2
    assert not any(p.requires_grad for m in branch.modules() if isinstance(m, torch.nn.BatchNorm2d)
                   for p in m.parameters())
    tv = build_segmenter("deeplabv2-r101", 21)
    assert all(p.requires_grad for p in tv.parameters())


def test_a_caffe_checkpoint_into_the_torchvision_style_names_the_file_and_the_model(coco_like, tmp_path):
    path, state, _ = coco_like
    with pytest.raises(ValueError, match=r"(?s)MS_DeepLab_resnet_pretrained_COCO_init\.pth: a DeepLab-v2 checkpoint "
                                         r"converted from Caffe.*1x1.*BGR.*model: deeplabv2-r101-caffe"):
        load_checkpoint_into(build_segmenter("deeplabv2-r101", 21), path)
    # AdvSemiSeg's own file (resnet101COCO-*.pth) has no 'Scale.' prefix: its layer5 head tells
    plain = {k[len("Scale."):]: v for k, v in state.items()}
    with pytest.raises(ValueError, match="deeplabv2-r101-caffe"):
        load_state_into(build_segmenter("deeplabv2-r101", 21), plain, "resnet101COCO-41f33a49.pth")
    # through the configuration, as `run --pretrained <file>` does
    config = load_config("synth-objects", "smoke", model="deeplabv2-r101", pretrained=str(path))
    with pytest.raises(ValueError, match=r"model: deeplabv2-r101-caffe"):
        load_pretrained(build_segmenter("deeplabv2-r101", 21), config)
    config = load_config("synth-objects", "smoke", model="deeplabv2-r101-caffe", pretrained=str(path))
    net = build_segmenter("deeplabv2-r101-caffe", 21)
    load_pretrained(net, config)
    assert torch.equal(net.backbone.conv4[22].conv2.weight, state["Scale.layer3.22.conv2.weight"])
    assert pretraining_of(config) == "imagenet+mscoco"
    assert pretraining_of(config.replace(model="deeplabv2-r101", pretrained="imagenet")) == "imagenet"


def test_torchvision_weights_into_the_caffe_style_name_the_other_model():
    from torchvision.models import resnet101

    state = resnet101(weights=None).state_dict()  # ImageNet's layout (random values: no download)
    assert checkpoint_layout(state) == "torchvision"
    with pytest.raises(ValueError, match=r"resnet101: torchvision ResNet weights.*3x3.*Set model: deeplabv2-r101 "):
        load_state_into(build_segmenter("deeplabv2-r101-caffe", 21), state, "resnet101")
    config = load_config("synth-objects", "smoke", model="deeplabv2-r101-caffe", pretrained="imagenet")
    with pytest.raises(ValueError, match=r"'imagenet' weights exist for deeplabv2-r101.*Caffe-converted checkpoint"):
        load_pretrained(build_segmenter("deeplabv2-r101-caffe", 21), config)
