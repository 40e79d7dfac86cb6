"""Pre-trained weights: ImageNet's offline error, local checkpoints in common layouts."""
from __future__ import annotations

import pytest
import torch

from selftrain_lib.config import load_config
from selftrain_lib.models import build_segmenter
from selftrain_lib.pretrain import load_checkpoint_into, load_pretrained, map_checkpoint_key

WIDTHS = (4, 4, 8, 8)


def _net(num_classes=5, seed=0):
    torch.manual_seed(seed)
    return build_segmenter("deeplabv2-small", num_classes, widths=WIDTHS)


def _to_torchvision(key: str) -> str:
    """Our key -> torchvision ResNet / DeepLab-v2 Res_Deeplab naming."""
    key = key.replace("backbone.conv1.conv.", "conv1.").replace("backbone.conv1.bn.", "bn1.")
    for i in range(2, 6):
        key = key.replace(f"backbone.conv{i}.", f"layer{i - 1}.")
    return key.replace("aspp.convs.", "layer5.conv2d_list.")


def _same(a, b, prefix=""):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith(prefix))


def test_key_mapping_of_common_layouts():
    assert map_checkpoint_key("module.layer3.4.conv2.weight") == "backbone.conv4.4.conv2.weight"
    assert map_checkpoint_key("Scale.bn1.running_mean") == "backbone.conv1.bn.running_mean"
    assert map_checkpoint_key("module.module.conv1.weight") == "backbone.conv1.conv.weight"
    assert map_checkpoint_key("layer5.conv2d_list.3.bias") == "aspp.convs.3.bias"
    assert map_checkpoint_key("backbone.layer1.0.downsample.0.weight") == "backbone.conv2.0.downsample.0.weight"
    assert map_checkpoint_key("module.backbone.conv5.0.bn2.bias") == "backbone.conv5.0.bn2.bias"
    assert map_checkpoint_key("fc.weight") is None and map_checkpoint_key("classifier.4.weight") is None


def test_our_checkpoint_with_module_prefix_loads_whole(tmp_path):
    src = _net(seed=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pt")
    dst = _net(seed=2)
    report = load_checkpoint_into(dst, tmp_path / "ddp.pt")
    assert report.head_initialised and _same(src, dst)


def test_deeplab_layout_with_other_classes_keeps_a_random_head(tmp_path):
    src = _net(num_classes=21, seed=1)  # e.g. the MS-COCO / VOC initialisation, loaded for 5 classes
    state = {"Scale." + _to_torchvision(k): v for k, v in src.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # Caffe conversions have none
    torch.save(state, tmp_path / "coco_init.pth")
    dst, fresh = _net(seed=2), _net(seed=2)
    report = load_checkpoint_into(dst, tmp_path / "coco_init.pth")
    assert _same(src, dst, "backbone.conv") and not report.head_initialised
    assert torch.equal(dst.aspp.convs[0].weight, fresh.aspp.convs[0].weight)
    assert "does not fit" in report.notes[0]


def test_torchvision_imagenet_layout_drops_fc(tmp_path):
    src = _net(seed=1)
    state = {_to_torchvision(k): v for k, v in src.state_dict().items() if not k.startswith("aspp")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 8), torch.zeros(1000)
    torch.save(state, tmp_path / "tv.pth")
    config = load_config("synth-street", "smoke", pretrained=str(tmp_path / "tv.pth"), widths=list(WIDTHS))
    dst = _net(num_classes=9, seed=2)
    load_pretrained(dst, config)
    assert _same(src, dst, "backbone.")
    report = load_checkpoint_into(_net(seed=3), tmp_path / "tv.pth")
    assert report.dropped == ["fc.weight", "fc.bias"] and "has none" in report.notes[0]


def test_mismatched_checkpoints_list_the_keys(tmp_path):
    src = _net(seed=1)
    state = dict(src.state_dict())
    del state["backbone.conv3.0.conv1.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt.*unexpected keys: \['backbone\.extra\.weight'\].*"
                                         r"missing keys: \['backbone\.conv3\.0\.conv1\.weight'\]"):
        load_checkpoint_into(_net(), tmp_path / "bad.pt")
    wide = build_segmenter("deeplabv2-small", 5, widths=(4, 4, 8, 16))
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide\.pt.*shape mismatches: \['backbone\.conv5"):
        load_checkpoint_into(_net(), tmp_path / "wide.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state dict"):
        load_checkpoint_into(_net(), tmp_path / "list.pt")


def test_imagenet_offline_error_says_how_to_supply_the_file(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    config = load_config("synth-street", "smoke", model="deeplabv2-r101", pretrained="imagenet")
    net = _net()  # never reached: the download fails first
    with pytest.raises(RuntimeError, match=r"(?s)network is unreachable.*resnet101-63fe2227\.pth.*"
                                           r"hub/checkpoints.*TORCH_HOME.*pretrained=<path"):
        load_pretrained(net, config)


def test_imagenet_state_maps_onto_r101():
    """torchvision's ResNet-101 state dict (random here: no download) loads into DeepLabv2-R101."""
    from torchvision.models import resnet101

    state = resnet101(weights=None).state_dict()
    net = build_segmenter("deeplabv2-r101", 19)
    from selftrain_lib.pretrain import load_state_into

    report = load_state_into(net, state, "resnet101")
    assert report.dropped == ["fc.weight", "fc.bias"] and not report.head_initialised
    assert torch.equal(net.backbone.conv4[22].conv2.weight, state["layer3.22.conv2.weight"])
