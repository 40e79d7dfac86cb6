"""The pieces of a stage: sub-batch sampling, the losses of one step, pre-training."""
import numpy as np
import pytest
import torch

from selftrain_lib.augment import StrongAugment
from selftrain_lib.config import load_config
from selftrain_lib.ema import EMATeacher
from selftrain_lib.losses import pixel_cross_entropy
from selftrain_lib.methods import build as build_method
from selftrain_lib.methods.three_stage import ThreeStage
from selftrain_lib.models import MultiTaskDeepLab, build_segmenter
from selftrain_lib.pretrain import load_pretrained, synthetic_backbone_state
from selftrain_lib.stage import compute_losses
from selftrain_lib.train import BatchSource, EpochSampler, StepBatch, derive_seed


def test_epoch_sampler_visits_everything_once_per_epoch_and_is_pure():
    s = EpochSampler(10, 4, 0, "x")
    first = torch.cat([s.indices(k) for k in range(5)])  # 20 draws = 2 epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    assert torch.equal(EpochSampler(10, 4, 0, "x").indices(3), s.indices(3))  # no hidden state
    assert not torch.equal(EpochSampler(10, 4, 1, "x").indices(0), s.indices(0))


def test_derive_seed_distinguishes_parts():
    assert derive_seed(0, 2, "aug", 5) == derive_seed(0, 2, "aug", 5)
    assert len({derive_seed(0, 2, "aug", 5), derive_seed(1, 2, "aug", 5), derive_seed(0, 3, "aug", 5),
                derive_seed(0, 2, "aug", 6)}) == 4


def test_batch_source_sub_batches(random_view):
    view, masks = random_view
    config = load_config("synth-street", "smoke", crop_size=[16, 16], batch_size=6, labelled_per_batch=2)
    pseudo = torch.randint(0, 3, masks.shape, dtype=torch.uint8)
    b = BatchSource(build_method(config, 2), view, pseudo, config, 2, torch.device("cpu"))(0)
    assert b.images.shape == (6, 3, 16, 16) and b.clean.shape == (6, 3, 16, 16)
    assert b.labels.shape == (2, 16, 16) and b.pseudo.shape == (6, 16, 16)
    # Sub-batch 2 (the last two) is not strongly augmented
    assert torch.equal(b.images[4:], b.clean[4:])
    s1 = BatchSource(build_method(config, 1), view, None, config, 1, torch.device("cpu"))(0)
    assert s1.images.shape[0] == 6 and s1.pseudo is None and s1.labels.shape[0] == 6


def test_losses_follow_the_sub_batches():
    """L_seg on Sub-batch 2 only; L_con and L_pl over both; the teacher's argmax is moved by B."""
    torch.manual_seed(0)
    f = build_segmenter("deeplabv2-small", 3, widths=(4, 4, 8, 8))
    model = MultiTaskDeepLab(f, 2).eval()
    teacher = EMATeacher(f)
    strong = StrongAugment(num_ops=2, magnitude=30, cutout_size=4, ops=["rotate", "translate_x"])
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(5, 3, 16, 16, generator=g)
    params = strong.sample(3, 16, 16, g)
    images = torch.cat([strong.apply_image(clean[:3], params), clean[3:]])
    labels = torch.randint(0, 3, (2, 16, 16), generator=g)
    pseudo = torch.randint(0, 3, (5, 16, 16), generator=g)
    batch = StepBatch(images=images, labels=labels, pseudo=pseudo, clean=clean, aug=params)
    config = load_config("synth-street", "smoke", lambda1=0.5, lambda2=0.25)
    method = ThreeStage(config, 2)
    method.strong = strong  # the ops drawn above
    losses = compute_losses(method, model, teacher, batch, 255)

    out = model(images)
    t = teacher.module(clean).argmax(1)
    t = torch.cat([strong.apply_mask(t[:3], params), t[3:]])
    seg = pixel_cross_entropy(out["f"][3:], labels)
    con = pixel_cross_entropy(out["f"], t)
    pl = pixel_cross_entropy(out["g"], pseudo)
    assert torch.allclose(losses["loss_seg"], seg) and torch.allclose(losses["loss_con"], con)
    assert torch.allclose(losses["loss_pl"], pl)
    assert torch.allclose(losses["loss"], seg + 0.5 * con + 0.25 * pl)
    assert (t[:3] == 255).any()  # B put the ignore value where the warp left the image

    method = ThreeStage(config.replace(cr=False), 2)
    method.strong = strong
    no_cr = compute_losses(method, model, teacher, batch, 255)
    assert "loss_con" not in no_cr and torch.allclose(no_cr["loss"], seg + 0.25 * pl)


def test_synthetic_pretraining_does_not_depend_on_the_callers_thread_count(tmp_path):
    """A sweep's worker (one thread) and a notebook (all cores) build the same backbone, and the
    caller's thread count is given back."""
    kw = dict(widths=(8, 8, 16, 16), steps=4, batch_size=16, num_images=32, progress=False)
    threads = torch.get_num_threads()
    try:
        states = []
        for n in (1, 3):
            torch.set_num_threads(n)
            states.append(synthetic_backbone_state(cache_dir=tmp_path / f"threads{n}", **kw))
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_synthetic_pretraining_is_deterministic_cached_and_loaded(tmp_path, monkeypatch):
    kw = dict(widths=(4, 4, 8, 8), steps=3, cache_dir=tmp_path, batch_size=8, num_images=32, progress=False)
    a = synthetic_backbone_state(**kw)
    files = list((tmp_path / "pretrain").glob("*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = synthetic_backbone_state(**kw)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    c = synthetic_backbone_state(**{**kw, "cache_dir": tmp_path / "other"})  # rebuilt elsewhere: same numbers
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    fresh = build_segmenter("deeplabv2-small", 3, widths=(4, 4, 8, 8)).backbone.state_dict()
    assert any(not torch.equal(a[k], fresh[k]) for k in a if a[k].is_floating_point())

    config = load_config("synth-street", "smoke", pretrained="synthetic", widths=[4, 4, 8, 8], pretrain_steps=3,
                         cache_dir=str(tmp_path))
    # load_pretrained uses the config's own defaults for batch/images: build that cache entry too. Which
    # entry it loads is the point here, not the images (checked above): blank ones stand in for the 8,000
    # the defaults draw (~8 s of CPU), under the same key
    from selftrain_lib import pretrain

    monkeypatch.setattr(pretrain, "generate_pretraining_images",
                        lambda n, seed: (np.zeros((n, 64, 64, 3), np.uint8), np.arange(n) % pretrain.PRETRAIN_NUM_CLASSES))
    net = build_segmenter("deeplabv2-small", 10, widths=(4, 4, 8, 8))
    load_pretrained(net, config)
    expected = synthetic_backbone_state((4, 4, 8, 8), 3, tmp_path, progress=False)
    assert all(torch.equal(net.backbone.state_dict()[k], expected[k]) for k in expected)
    assert len(list((tmp_path / "pretrain").glob("*.pt"))) == 2   # the defaults' entry, built once and loaded


def test_checkpoint_with_wrong_keys_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"model": {"not.a.key": torch.zeros(1)}}, path)
    config = load_config("synth-street", "smoke", pretrained=str(path))
    net = build_segmenter("deeplabv2-small", 10, widths=(8, 8, 16, 16))
    with pytest.raises(ValueError, match=r"bad\.pt.*not\.a\.key"):
        load_pretrained(net, config)


@pytest.mark.parametrize("progress", [False, True])
def test_no_progress_reaches_the_pretraining_message_and_bar(tmp_path, monkeypatch, capsys, progress):
    """`--no-progress` (progress=False) silences the one-off pre-training too: the stage's flag reaches
    the model factory that builds it (it was always built with its message and bar)."""
    from selftrain_lib import pretrain
    from selftrain_lib.pipeline import run_stages

    real = pretrain.generate_pretraining_images
    monkeypatch.setattr(pretrain, "generate_pretraining_images", lambda n, seed=0: real(16, seed=seed))
    config = load_config("synth-street", "smoke", pretrained="synthetic", widths=[4, 4, 8, 8], pretrain_steps=2,
                         cache_dir=str(tmp_path / "cache"))
    run_stages(config, 1, out=tmp_path / "runs", progress=progress)
    err = capsys.readouterr().err
    assert ("pre-training the small backbone" in err) is progress
    assert len(list((tmp_path / "cache" / "pretrain").glob("*.pt"))) == 1
