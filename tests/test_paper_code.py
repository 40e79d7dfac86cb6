"""The ``paper-code`` presets: the authors' released code where it departs from the paper's text.

One test per configuration key (docs/paper_vs_code.md): each changes what is computed when set,
and at its default computes what was computed before the key existed (tests/test_run_hashes.py
pins the hashes)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selftrain_lib.augment import StrongAugment, from_normalised_uint8, to_normalised_uint8
from selftrain_lib.config import load_config
from selftrain_lib.models import MultiTaskDeepLab, build_segmenter, resnet101_os8
from selftrain_lib.models.backbones import CAFFE_MEAN_BGR
from selftrain_lib.precision import resolve_precision
from selftrain_lib.models import config_kwargs as _model_kwargs
from selftrain_lib.train.run_key import stage_key

from test_real_data import make_cityscapes

SMALL = dict(widths=(8, 8, 16, 16))
# the keys of the authors' code (Config's last section)
CODE_KEYS = {"aspp_dilations", "stage1_batch_size", "align_corners", "resnet_stride", "caffe_channel_order",
             "branch_init", "strong_aug_input", "resize_filter", "pseudo_ignore_ego"}
# what paper-code sets beyond the keys of CODE_KEYS (existing keys with the code's values)
PRESET_ONLY = {"stage1_steps", "precision"}
EXPECTED = {
    "cityscapes": CODE_KEYS | PRESET_ONLY,
    "synth-street": CODE_KEYS - {"resize_filter", "pseudo_ignore_ego"} | PRESET_ONLY,
    "voc": CODE_KEYS - {"resize_filter", "pseudo_ignore_ego", "stage1_batch_size"} | PRESET_ONLY,
    "synth-objects": CODE_KEYS - {"resize_filter", "pseudo_ignore_ego", "stage1_batch_size"} | PRESET_ONLY,
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_paper_code_is_paper_plus_the_code_keys(dataset):
    paper, code = load_config(dataset, "paper").to_dict(), load_config(dataset, "paper-code").to_dict()
    differ = {k for k in paper if paper[k] != code[k]} - {"scale"}
    assert differ == EXPECTED[dataset]
    assert code["scale"] == "paper-code"
    assert code["stage1_steps"] == (20000 if dataset in ("cityscapes", "synth-street") else 10000)
    assert code["stage1_batch_size"] == (4 if dataset in ("cityscapes", "synth-street") else None)
    assert code["aspp_dilations"] == (6, 12) and code["precision"] == "fp32"


def test_code_keys_enter_the_run_hash_of_the_stages_that_read_them():
    """Declared by their readers (issue 27): the model factory, the method, the batches, the loop."""
    base = load_config("synth-street", "smoke")
    assert {"aspp_dilations", "align_corners", "strong_aug_input", "branch_init", "pseudo_ignore_ego"} <= \
        set(stage_key(base, 2))
    assert "strong_aug_input" not in stage_key(base, 1) and "branch_init" not in stage_key(base, 1)
    for key, value in (("aspp_dilations", (6, 12)), ("align_corners", True), ("strong_aug_input", "normalised-uint8")):
        assert stage_key(base.replace(**{key: value}), 2)[key] == value
    assert "stage1_batch_size" in stage_key(base.replace(stage1_batch_size=2), 1)
    assert "stage1_batch_size" not in stage_key(base.replace(stage1_batch_size=2), 2)
    assert "branch_init" in stage_key(base.replace(branch_init="normal-0.01"), 2)
    assert "branch_init" not in stage_key(base.replace(branch_init="normal-0.01"), 3)  # g~ has no conv6
    assert "resnet_stride" not in stage_key(base.replace(resnet_stride="1x1"), 1)     # not a deeplabv2-r101


def test_bad_values_name_the_key():
    from selftrain_lib.config import ConfigError
    with pytest.raises(ConfigError, match="branch_init"):
        load_config("synth-street", "smoke", branch_init="zeros")
    with pytest.raises(ConfigError, match="resize_filter.*Cityscapes"):
        load_config("synth-street", "smoke", resize_filter="box")
    with pytest.raises(ConfigError, match="aspp_dilations"):
        load_config("synth-street", "smoke", aspp_dilations=[])


def _kw(**over):
    """The model keywords of the synth-street smoke preset with ``over`` set."""
    return _model_kwargs(load_config("synth-street", "smoke", widths=list(SMALL["widths"]), **over))


def _small(**over):
    torch.manual_seed(0)
    return build_segmenter("deeplabv2-small", 3, **_kw(**over)).eval()


def test_aspp_dilations_6_12_sums_the_first_two_branches():
    four = _small()
    two = _small(aspp_dilations=[6, 12])
    assert two.aspp.dilations == (6, 12)
    two.load_state_dict(four.state_dict(), strict=False)      # the authors' model holds all four, sums two
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        feats = four.backbone(x)
        expected = F.interpolate(four.aspp.convs[0](feats) + four.aspp.convs[1](feats), size=(40, 40),
                                 mode="bilinear", align_corners=False)
        assert torch.allclose(two(x), expected, atol=1e-6)
        assert not torch.allclose(four(x), expected, atol=1e-4)


def test_align_corners_upsamples_the_logits_with_it():
    net = _small(align_corners=True)
    x = torch.rand(2, 3, 36, 36)
    with torch.no_grad():
        logits = net.aspp(net.backbone(x))
        assert torch.allclose(net(x), F.interpolate(logits, size=(36, 36), mode="bilinear", align_corners=True))
        plain = _small()
        assert not torch.allclose(plain(x), net(x))
        model = MultiTaskDeepLab(net, 1)                # the branch upsamples as f does
        g = model.branch.aspp(net.backbone(x))
        assert torch.allclose(model(x)["g"], F.interpolate(g, size=(36, 36), mode="bilinear", align_corners=True))


def test_stage1_batch_size_sets_stage_1s_batch_only():
    from selftrain_lib.methods import build as build_method
    from selftrain_lib.train.batches import StepDraws

    cfg = load_config("synth-street", "smoke", batch_size=5, labelled_per_batch=1, stage1_batch_size=4)
    one = StepDraws(cfg, 1, build_method(cfg, 1).batch, 50, 10, 255)
    two = StepDraws(cfg, 2, build_method(cfg, 2).batch, 50, 10, 255)
    assert len(one.indices(0)[0]) == 4 and len(one.indices(0)[1]) == 0
    assert len(two.indices(0)[0]) == 1 and len(two.indices(0)[1]) == 4
    plain_cfg = cfg.replace(stage1_batch_size=None)
    plain = StepDraws(plain_cfg, 1, build_method(plain_cfg, 1).batch, 50, 10, 255)
    assert len(plain.indices(0)[0]) == 5


def test_resnet_stride_1x1_is_the_authors_imagenet_network():
    cfg = load_config("voc", "paper-code", pretrained="none")
    assert _model_kwargs(cfg) == {"dilations": (6, 12), "align_corners": True, "stride_on_1x1": True}
    theirs, ours = resnet101_os8(stride_on_1x1=True), resnet101_os8()
    first = theirs.conv3[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1) and theirs.conv1.maxpool.ceil_mode
    assert ours.conv3[0].conv2.stride == (2, 2) and not ours.conv1.maxpool.ceil_mode
    assert theirs.input_format == "imagenet"          # torchvision's weights: ImageNet-normalised RGB
    assert all(p.requires_grad for p in theirs.parameters())  # batch-norm freezing is freeze_bn's
    with torch.no_grad():
        # 33 px: the ceil-mode max-pool gives 17 -> 9 -> 5 where torchvision's gives 5 too at 33, so use 31
        assert theirs.eval()(torch.rand(1, 3, 31, 31)).shape[-1] == 5   # ceil(31/2)=16 -> 8+1=9 -> 5
        assert ours.eval()(torch.rand(1, 3, 31, 31)).shape[-1] == 4     # 16 -> 8 -> 4


def test_caffe_channel_order_rgb_feeds_rgb():
    bgr, rgb = resnet101_os8(style="caffe"), resnet101_os8(style="caffe", channel_order="rgb")
    x = torch.rand(1, 3, 4, 4)
    mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    assert torch.allclose(rgb.normalise(x), x * 255 - mean, atol=1e-4)
    assert torch.allclose(bgr.normalise(x), x[:, [2, 1, 0]] * 255 - mean, atol=1e-4)
    cfg = load_config("voc", "paper-code", model="deeplabv2-r101-caffe", pretrained="none")
    assert _model_kwargs(cfg)["channel_order"] == "rgb"


def test_precision_fp32_trains_in_fp32_on_a_gpu():
    cfg = load_config("cityscapes", "paper-code")
    assert resolve_precision(cfg.precision, torch.device("cuda")).dtype is None   # no autocast
    assert load_config("cityscapes", "paper").precision == "auto"


def test_branch_init_normal_001_initialises_conv6():
    def conv6_std(how):
        torch.manual_seed(0)
        model = MultiTaskDeepLab(build_segmenter("deeplabv2-small", 3, **SMALL), 2, conv6_init=how)
        w = torch.cat([m.weight.detach().flatten() for m in model.branch.conv6.modules() if isinstance(m, torch.nn.Conv2d)])
        return float(w.mean()), float(w.std())
    mean, std = conv6_std("normal-0.01")
    assert abs(mean) < 0.002 and 0.008 < std < 0.012
    assert conv6_std("kaiming")[1] > 0.05
    with pytest.raises(ValueError, match="conv6_init"):
        conv6_std("zeros")


def test_strong_aug_input_normalised_uint8():
    x = torch.rand(2, 3, 16, 16)
    u, lo, hi = to_normalised_uint8(x)
    assert torch.equal(u * 255, torch.round(u * 255)) and float(u.amin()) == 0 and float(u.amax()) == 1
    assert torch.allclose(from_normalised_uint8(u, lo, hi), x, atol=(hi - lo).max().item() * 0.229 / 255 + 1e-5)
    kw = dict(num_ops=1, magnitude=20, cutout_size=0, ops=("brightness",))
    rgb, code = StrongAugment(**kw), StrongAugment(**kw, input_space="normalised-uint8")
    params = rgb.sample(2, 16, 16, torch.Generator().manual_seed(0))
    expected = from_normalised_uint8(rgb.apply_image(u, params), lo, hi)
    assert torch.allclose(code.apply_image(x, params), expected)
    assert not torch.allclose(code.apply_image(x, params), rgb.apply_image(x, params), atol=1e-3)
    with pytest.raises(ValueError, match="input_space"):
        StrongAugment(input_space="bgr")


def _block_label(h, w):
    """2x2 blocks: three road (7) pixels and one car (26) at the block's bottom-right, which
    PIL's nearest picks when halving; the top row is the ego vehicle (1)."""
    lab = np.full((h, w), 7, np.uint8)
    lab[1::2, 1::2] = 26
    lab[0, :] = 1
    lab[1, :] = 1
    return lab


def test_resize_filter_box_and_majority_vote(tmp_path):
    from selftrain_lib.data.cityscapes import cityscapes

    root = make_cityscapes(tmp_path / "cs", 8, 16, cities=("ulm",), per_city=1, label=_block_label(8, 16))
    box, plain = cityscapes(root, resize=(4, 8), resize_filter="box"), cityscapes(root, resize=(4, 8))
    src = np.asarray(Image.open(next((root / "leftImg8bit").rglob("*.png")))).astype(float)
    blocks = src.reshape(4, 2, 8, 2, 3).mean((1, 3))
    assert np.abs(box.image(0).permute(1, 2, 0).numpy() - blocks).max() <= 1
    assert (box.mask(0)[1:] == 0).all()            # majority: road (train id 0)
    assert (plain.mask(0)[1:] == 13).all()         # nearest: the car pixel (train id 13)
    assert box.fixed_void(0)[0].all() and not box.fixed_void(0)[1:].any()


def test_pseudo_ignore_ego_writes_ignore_on_the_ego_vehicle(tmp_path):
    from selftrain_lib.stage import run_stage

    root = tmp_path / "cs"
    for k in range(4):
        make_cityscapes(root, 16, 32, cities=(f"c{k}",), per_city=1, label=_block_label(16, 32))
    make_cityscapes(root, 16, 32, cities=("v0",), per_city=1, split="val", label=_block_label(16, 32))
    config = load_config("cityscapes", "smoke", data_root=str(root), resize=[16, 32], crop_size=[16, 16],
                         device="cpu", stage1_steps=1, pseudo_ignore_ego=True, resize_filter="box",
                         num_val_samples=1)
    r1 = run_stage(config, 1, out=tmp_path / "runs", progress=False)
    assert r1.metrics["scale"] == "smoke" and r1.summary()["scale"] == "smoke"   # the preset, with the run
    pm = r1.pseudo_masks
    mask = np.asarray(Image.open(pm.directory / "c2" / "c2_000000_000019.png"))
    assert (mask[:2] == 255).all() and (mask[2:] < 19).all()


def test_tables_and_runs_say_which_preset_made_them(tmp_path):
    from selftrain_lib.results import caption

    code = caption("Table II", ["cityscapes"], "paper-code", [0])
    assert "scale: paper-code (the authors' released code where it departs from the text)" in code
    assert "scale: paper (the paper's text)" in caption("Table II", ["cityscapes"], "paper", [0])
    assert "scale: quick;" in caption("Table II", ["synth-street"], "quick", [0])
