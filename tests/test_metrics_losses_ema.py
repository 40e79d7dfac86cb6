import math

import pytest
import torch
from torch import nn

from selftrain_lib.ema import EMATeacher, ema_decay
from selftrain_lib.data import ArrayDataset
from selftrain_lib.evaluate import ConfusionMatrix, class_map, evaluate_part, scores
from selftrain_lib.losses import LossWeights, pixel_cross_entropy, total_loss


def test_confusion_matrix_iou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3, 255)
    cm.update(pred, target)
    # class 0: inter 1, union |{p=0}|=2 + |{t=0}|=2 - 1 = 3; class 1: 2/(3+2-2)=2/3; class 2: 1/(1+2-1)=1/2
    assert torch.allclose(cm.iou(), torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
    assert math.isclose(cm.miou(), (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.mat.sum() == 6  # ignored pixels do not count


def test_class_map_is_argmax_over_classes_with_first_maximum_on_ties():
    logits = torch.randn(2, 5, 7, 9, generator=torch.Generator().manual_seed(0))
    logits[0, 1, 0, 0] = logits[0, 3, 0, 0] = 10.0    # a tie: the first class wins
    logits[1, :, 2, 3] = 0.0                            # all equal: class 0
    got = class_map(logits)
    assert got.dtype == torch.int64 and got.shape == (2, 7, 9)
    assert torch.equal(got, logits.argmax(1))
    assert got[0, 0, 0] == 1 and got[1, 2, 3] == 0
    assert torch.equal(class_map(logits.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)), got)


def test_absent_class_is_nan_and_excluded():
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(1, 2, 2, dtype=torch.uint8), torch.zeros(1, 2, 2, dtype=torch.uint8))
    r = scores(cm)
    assert r.miou == 1.0 and math.isnan(r.per_class_iou[1])


def test_out_of_range_target_is_an_error():
    with pytest.raises(ValueError, match="class 7"):
        ConfusionMatrix(3).update(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 255]))


def test_evaluate_whole_images_with_a_perfect_model():
    masks = torch.randint(0, 3, (5, 9, 13), dtype=torch.uint8)
    images = torch.zeros(5, 3, 9, 13, dtype=torch.uint8)

    class Oracle(nn.Module):  # returns one-hot of the masks it was built with, for the images in order
        def __init__(self):
            super().__init__()
            self.i = 0

        def forward(self, x):
            m = masks[self.i:self.i + x.shape[0]].long()
            self.i += x.shape[0]
            return nn.functional.one_hot(m, 3).permute(0, 3, 1, 2).float()

    r = evaluate_part(Oracle(), ArrayDataset(images, masks, [f"v{i}" for i in range(5)]), 3, batch_size=2)
    assert r.miou == 1.0 and r.pixel_accuracy == 1.0


def test_pixel_cross_entropy_excludes_ignore():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0] = 255
    expected = nn.functional.cross_entropy(logits[1:], target[1:])
    assert torch.allclose(pixel_cross_entropy(logits, target), expected)
    all_ignored = pixel_cross_entropy(logits, torch.full_like(target, 255))
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad


def test_total_loss_switches():
    s, c, p = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    assert total_loss(s, c, p, LossWeights(0.5, 0.25)).item() == 1 + 1 + 1
    assert total_loss(s, c, p, LossWeights(0.5, 0.25, cr=False)).item() == 2
    assert total_loss(s, c, p, LossWeights(0.5, 0.25, t2=False)).item() == 2


def test_ema_decay_schedule_matches_the_authors_at_60k():
    assert ema_decay(0, 60_000) == 0.99
    assert ema_decay(19_999, 60_000) == 0.99
    assert ema_decay(20_000, 60_000) == 0.995
    assert ema_decay(45_000, 60_000) == 0.9975
    assert ema_decay(59_999, 60_000) == 0.999
    assert ema_decay(100, 300) == 0.995  # breakpoints scale with the number of steps


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))


def test_ema_averages_parameters_and_batchnorm_buffers():
    student = _net()
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()(torch.randn(8, 3, 4, 4))  # moves running stats
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    teacher.update(student, 0.9)
    after = teacher.module.state_dict()
    s = student.state_dict()
    for k, v in after.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.9 * before[k] + 0.1 * s[k], atol=1e-6), k
        else:
            assert torch.equal(v, s[k]), k
    assert not any(p.requires_grad for p in teacher.module.parameters())


def test_without_ema_the_student_is_the_teacher():
    student = _net()
    teacher = EMATeacher(student, use_ema=False)
    assert teacher.network is student and list(teacher.parameters()) == []
    x = torch.randn(2, 3, 4, 4)
    student.eval()
    assert torch.equal(teacher.predict(x), student(x).argmax(1))
    assert student.training is False  # restores the mode it found


def test_scaled_decays_keep_the_teachers_lag_as_a_fraction_of_the_stage():
    from selftrain_lib.ema import scale_decays

    assert scale_decays((0.99, 0.995), None, 1000) == (0.99, 0.995)
    scaled = scale_decays((0.99, 0.995, 0.9975, 0.999), 60_000, 1_000)
    assert scaled == pytest.approx((0.4, 0.7, 0.85, 0.94))
    # the averaging window 1 / (1 - d) is the same fraction of either stage
    for d, s in zip((0.99, 0.999), (scaled[0], scaled[3])):
        assert (1 / (1 - s)) / 1_000 == pytest.approx((1 / (1 - d)) / 60_000)
    assert scale_decays((0.99,), 60_000, 60_000) == pytest.approx((0.99,))
    assert scale_decays((0.99,), 60_000, 100) == (0.0,)  # shorter than the window: copy the student


def test_stage_parts_use_the_scaled_decays():
    from selftrain_lib.config import load_config
    from selftrain_lib.data import load_data, make_split, training_view
    from selftrain_lib.stage import resolve_device
    from selftrain_lib.train.parts import build_stage_parts

    config = load_config("synth-street", "smoke", ema_reference_steps=600, steps=6)
    data = load_data(config)
    view = training_view(data, make_split(data.pool_size, config.labels, config.seed))
    pseudo = torch.zeros(data.train_images.shape[0], *data.train_images.shape[2:], dtype=torch.uint8)
    parts = build_stage_parts(config, 2, view, pseudo, data.info.num_classes, resolve_device("cpu"))
    assert parts.ema_decay(0) == pytest.approx(0.0)          # 1 - 0.01 * 100 < 0: clipped
    assert parts.ema_decay(5) == pytest.approx(1 - 0.001 * 100)   # 0.999 for 600 steps -> 0.9 for 6
