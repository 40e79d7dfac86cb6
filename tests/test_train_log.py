"""Each run writes a readable train.log and TensorBoard events; a resumed run appends and purges."""
import re

import pytest
import torch

import selftrain_lib
from selftrain_lib.config import load_config
from selftrain_lib.stage import run_stage
from selftrain_lib.train.log import LOG_FILE, TENSORBOARD_DIR, TrainingLog, _duration


def _scalars(run_dir):
    """Every (tag, step, value) of the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return selftrain_lib.run(dataset="synth-street", scale="smoke", stages=2, out=out, progress=False)


def test_train_log_has_a_line_per_interval_and_each_evaluation(two_stages):
    stage2 = two_stages.stages[1]
    text = (stage2.run_dir / LOG_FILE).read_text()
    config = stage2.config
    steps = config.steps
    interval_lines = re.findall(r"step +(\d+)/(\d+) \| lr ([0-9.e+-]+).*\| loss ([0-9.]+) seg ([0-9.]+) con ([0-9.]+) "
                                r"pl ([0-9.]+) \| ema ([0-9.]+) \|.*s/step, eta .* \| mem (\d+) MB", text)
    curves = stage2.curves()
    assert [int(m[0]) for m in interval_lines] == curves["step"].tolist()
    assert all(int(m[1]) == steps for m in interval_lines)
    assert float(interval_lines[-1][3]) == pytest.approx(curves["loss"].iloc[-1], abs=1e-4)
    assert float(interval_lines[0][2]) == pytest.approx(config.lr)
    assert all(int(m[8]) > 0 for m in interval_lines)
    # each evaluation: both networks' mIoU, as the curves hold them, and their per-class IoU
    evals = re.findall(r"eval at step (\d+): student mIoU ([0-9.]+) \| teacher mIoU ([0-9.]+)", text)
    evaluated = curves.dropna(subset=["val_miou_student"])
    assert [int(e[0]) for e in evals] == evaluated["step"].tolist()
    assert float(evals[-1][1]) == pytest.approx(100 * evaluated["val_miou_student"].iloc[-1], abs=0.01)
    names = stage2.metrics["class_names"]
    per_class = re.findall(r"teacher per-class IoU: (.*)", text)[-1]
    assert [item.rsplit(" ", 1)[0] for item in per_class.split(", ")] == names
    assert text.splitlines()[0].endswith(f"stage 2 run {stage2.run_hash}: started, {steps} steps on cpu")


def test_tensorboard_events_hold_the_curves(two_stages):
    stage2 = two_stages.stages[1]
    scalars = _scalars(stage2.run_dir)
    curves = stage2.curves()
    assert [s for s, _ in scalars["train/loss"]] == curves["step"].tolist()
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(curves["loss"].tolist(), abs=1e-5)
    evaluated = curves.dropna(subset=["val_miou_teacher"])
    assert [v for _, v in scalars["val/miou_teacher"]] == pytest.approx(
        (100 * evaluated["val_miou_teacher"]).tolist(), abs=1e-3)
    assert "lr/group0" in scalars and "train/ema_decay" in scalars
    assert any(tag.startswith("val_iou_student/") for tag in scalars)
    assert "val/miou_teacher" not in _scalars(two_stages.stages[0].run_dir)  # Stage 1 has no teacher


def test_a_resumed_run_appends_to_its_log_and_purges_later_events(two_stages, tmp_path, interrupt_at_step):
    first = two_stages.stages[0]
    config = load_config("synth-street", "smoke")
    crash = interrupt_at_step(config.checkpoint_every + 1)  # past the first checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, 2, first.pseudo_masks, out=tmp_path, progress=False)
    crash.restore()
    resumed = run_stage(config, 2, first.pseudo_masks, out=tmp_path, progress=False)
    text = (resumed.run_dir / LOG_FILE).read_text()
    assert "started," in text and f"resumed at step {config.checkpoint_every} of {config.steps}" in text
    steps = [s for s, _ in _scalars(resumed.run_dir)["train/loss"]]
    assert steps == resumed.curves()["step"].tolist()  # no step twice


def test_log_without_tensorboard_and_on_other_ranks(tmp_path, monkeypatch):
    import selftrain_lib.train.log as log_mod

    monkeypatch.setattr(log_mod, "_summary_writer", lambda *a, **k: None)  # tensorboard not installed
    log = TrainingLog(tmp_path, 1, 10, 0, device=torch.device("cpu"))
    log.interval({"step": 5, "loss": 1.5, "loss_seg": 1.5, "ema_decay": ""}, [1e-3, 1e-4], 2.0)
    log.close("done")
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert "step  5/10 | lr 1.00e-03 / 1.00e-04 | loss 1.5000 seg 1.5000 | 0.400 s/step, eta 2s | mem" in lines[1]
    assert lines[-1].endswith(" done") and not (tmp_path / TENSORBOARD_DIR).exists()
    other = tmp_path / "rank1"
    other.mkdir()
    TrainingLog(other, 1, 10, 0, device=torch.device("cpu"), enabled=False).interval({"step": 1}, [1.0], 1.0)
    assert list(other.iterdir()) == []


def test_duration():
    assert [_duration(s) for s in (0, 41.4, 725, 11040)] == ["0s", "41s", "12m05s", "3h04m"]
