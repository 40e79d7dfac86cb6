"""The explorer's logic without a browser: per-image IoU, error map, overlay, the worst-first
order, labelled marking from ``labelled_ids.txt``, paths relative to the cache; and the widgets
driven as the browser test drives them (opacity, worst first, a compared run) on a smoke cache."""
from __future__ import annotations

import math

import numpy as np
import pytest

import selftrain_lib
from selftrain_lib import explore

V = 255  # void


def test_image_iou_is_the_mean_over_classes_in_prediction_or_truth_ignoring_void():
    truth = np.array([[0, 0, 1, 1],
                      [0, 0, 1, V]])
    pred = np.array([[0, 0, 1, 2],
                     [0, 1, 1, 2]])     # the void pixel's 2 does not count
    # class 0: 3 / 4 (4 true, 3 predicted), class 1: 2 / 4 (3 true, 3 predicted, 2 shared),
    # class 2: 0 / 1 (predicted once where truth is 1); class 3 in neither: left out
    assert explore.image_iou(pred, truth, num_classes=4) == pytest.approx((3 / 4 + 2 / 4 + 0) / 3)
    assert explore.image_iou(truth, truth, num_classes=4) == 1.0
    assert math.isnan(explore.image_iou(pred, np.full((2, 4), V), num_classes=4))


def test_error_map_marks_wrong_and_void_pixels():
    truth = np.array([[0, 1, V], [2, 2, 1]])
    pred = np.array([[0, 2, 0], [2, 1, 1]])
    assert explore.error_map(pred, truth).tolist() == [[0, 1, 2], [0, 1, 0]]
    colours = explore.ERROR_COLOURS[explore.error_map(pred, truth)]
    assert colours[0, 2].tolist() == explore.ERROR_COLOURS[2].tolist()       # void: the neutral grey
    assert len({tuple(c) for c in explore.ERROR_COLOURS}) == 3


def test_overlay_blends_at_the_opacity_and_keeps_void_pixels():
    image = np.full((1, 2, 3), 100, np.uint8)
    mask = np.array([[0, V]])
    palette = [(200, 0, 0)]
    assert explore.overlay(image, mask, palette, 0.0).tolist() == image.tolist()
    assert explore.overlay(image, mask, palette, 1.0)[0, 0].tolist() == [200, 0, 0]
    assert explore.overlay(image, mask, palette, 0.25)[0, 0].tolist() == [125, 75, 75]
    assert explore.overlay(image, mask, palette, 1.0)[0, 1].tolist() == [100, 100, 100]   # void: the image
    with pytest.raises(ValueError, match="opacity.*1.5"):
        explore.overlay(image, mask, palette, 1.5)


def test_image_order_worst_first_with_ties_by_index_and_nan_last():
    ious = [0.5, float("nan"), 0.2, 0.5, 0.9]
    assert explore.image_order(ious, worst_first=True) == [2, 0, 3, 4, 1]
    assert explore.image_order(ious, worst_first=False) == [0, 1, 2, 3, 4]


def test_labelled_marking_reads_labelled_ids_txt(tmp_path):
    (tmp_path / "labelled_ids.txt").write_text("# 2 labelled of a pool of 5\ntrain_00001\ntrain_00003\n")
    marks = explore.labelled_ids(tmp_path)
    assert marks == {"train_00001", "train_00003"}
    assert explore.image_choice(3, "train_00003", 0.4321, marks) == "#3 train_00003 · IoU 43.2% · labelled"
    assert explore.image_choice(2, "train_00002", float("nan"), marks) == "#2 train_00002 · IoU – · unlabelled"
    assert explore.labelled_ids(tmp_path / "older-run") is None                # no file: unknown, not "unlabelled"
    assert explore.image_choice(2, "train_00002", 0.5, None) == "#2 train_00002 · IoU 50.0%"


def test_relative_path_names_the_cache_folder_never_an_absolute_path(tmp_path):
    out = tmp_path / "runs"
    assert explore.relative_path(out / "3f2a9c", out) == "runs/3f2a9c"
    assert explore.relative_path(out / "3f2a9c" / "pseudo_masks", str(out)) == "runs/3f2a9c/pseudo_masks"
    assert explore.relative_path(tmp_path / "elsewhere" / "x", out) == "x"


def test_compare_figure_has_a_row_per_run_and_blank_cells_for_a_shorter_chain():
    truth = np.array([[0, 1], [1, V]])
    image = np.zeros((3, 2, 2), np.uint8)
    rows = [{"title": "three-stage", "masks": [truth, truth, truth], "selected": 2},
            {"title": "mt-cutmix", "masks": [np.zeros((2, 2), np.uint8)], "selected": 0}]
    fig = explore.compare_figure(image, truth, rows, 0.5, ["a", "b"], [(0, 0, 0), (255, 255, 255)])
    axes = fig.axes
    assert len(axes) == 2 * (3 + 3)          # overlay, 3 stages, errors, ground truth; per run
    titles = [a.get_title() for a in axes]
    assert titles[:6] == ["Stage 3 over image", "Stage 1", "Stage 2", "Stage 3", "errors, Stage 3 (IoU 100%)",
                          "ground truth"]
    assert titles[6:] == ["Stage 1 over image", "Stage 1", "", "", "errors, Stage 1 (IoU 17%)", "ground truth"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """synth-objects at smoke scale on a smaller pool, seed 0: two stages of the method and the
    mt-cutmix baseline."""
    out = tmp_path_factory.mktemp("runs")
    small = {"pool_size": 32, "val_size": 8, "steps": 3, "stage1_steps": 3}
    three = selftrain_lib.run("synth-objects", scale="smoke", stages=2, out=out, progress=False, **small)
    cutmix = selftrain_lib.run("synth-objects", scale="smoke", method="mt-cutmix", out=out, progress=False, **small)
    return out, three, cutmix


def test_explorer_sorts_worst_first_marks_labelled_and_compares_two_runs(cache):
    out, three, cutmix = cache
    box = explore.explorer(out, dataset="synth-objects", run=three.final.run_hash)
    c = box.controls
    assert [h for _, h in c["stage"].options] == [r.run_hash for r in three.stages]
    assert c["stage"].value == three.final.run_hash and c["image"].value == 0
    status = c["status"].value
    assert f"<code>{out.name}/{three.final.run_hash}</code>" in status and str(out) not in status
    # the image list: every pool image once, marked labelled or not as labelled_ids.txt says
    choices = [label for label, _ in c["image"].options]
    labelled = explore.labelled_ids(three.final.run_dir)
    assert len(choices) == len(list((three.final.run_dir / "pseudo_masks").glob("*.png")))
    assert sum(s.endswith(" · labelled") for s in choices) == len(labelled) > 0
    assert sum(s.endswith(" · unlabelled") for s in choices) == len(choices) - len(labelled) > 0
    # worst first: the list's IoUs ascend and the worst image is selected and drawn
    png = c["view"].value
    c["order"].value = "worst first"
    ious = explore.pool_ious(three.final.run_dir, selftrain_lib.data.load_data(three.config))
    assert [i for _, i in c["image"].options] == explore.image_order(ious, worst_first=True)
    assert c["image"].value == int(np.nanargmin(ious)) and c["view"].value != png
    assert f"this image: IoU {100 * np.nanmin(ious):.1f}%" in c["status"].value
    # the opacity redraws; the compare list offers the baseline of the same labels and seed first
    png = c["view"].value
    c["opacity"].value = 1.0
    assert c["view"].value != png
    assert c["compare"].value == "" and c["compare"].options[1][1] == cutmix.final.run_hash
    c["compare"].value = cutmix.final.run_hash
    assert f"compared: <code>{out.name}/{cutmix.final.run_hash}</code>" in c["status"].value
    fig = box.figure()
    assert len(fig.axes) == 2 * 5 and fig.axes[5].get_title() == "Stage 1 over image"   # two stages + 3


def test_explorer_opens_on_the_newest_run_when_the_notebooks_run_is_absent(cache, tmp_path):
    out, three, cutmix = cache
    box = explore.explorer(out, dataset="synth-objects", run="0" * 16)       # not trained
    assert box.controls["run"].value == cutmix.final.run_hash                 # written last
    assert f"run {'0' * 12} does not end a chain of synth-objects" in box.controls["status"].value
    assert box.controls["view"].value[:8] == b"\x89PNG\r\n\x1a\n"
    empty = explore.explorer(tmp_path / "runs")
    assert "No finished runs" in empty.controls["status"].value and empty.figure() is None
    assert str(tmp_path) not in empty.controls["status"].value


def test_comparable_runs_share_dataset_and_scale_and_put_same_labels_and_seed_first():
    import pandas as pd

    def row(run, labels, seed, method, stage=1, parent=None, scale="smoke", dataset="synth-objects"):
        return {"run": run, "dataset": dataset, "labels": labels, "seed": seed, "method": method, "stage": stage,
                "parent": parent, "scale": scale}

    runs = pd.DataFrame([row("a1", 60, 0, "three-stage"), row("a2", 60, 0, "three-stage", 2, "a1"),
                         row("b", 12, 0, "mt-cutmix"), row("c", 60, 1, "mt-cutmix"), row("d", 60, 0, "mt-cutmix"),
                         row("e", 60, 0, "mt-cutmix", scale="quick"), row("f", 60, 0, "supervised", dataset="synth-street")])
    assert explore.comparable(runs, "a2") == ["d", "b", "c"]     # a1 is a2's Stage 1, not a run of its own
    old = runs.assign(scale=[None, None, None, None, None, "quick", None])   # runs older than the scale key
    assert explore.comparable(old, "a2") == ["d", "b", "c"]


def test_figure_rows_select_the_stage_in_both_runs_and_mark_labelled(cache):
    out, three, cutmix = cache
    runs = selftrain_lib.results.list_runs(out)
    labelled = sorted(explore.labelled_ids(three.final.run_dir))[0]
    rows, note = explore.figure_rows(out, runs, three.final.run_hash, three.stages[1].run_hash,
                                     cutmix.final.run_hash, labelled)
    assert note == "" and [r["selected"] for r in rows] == [1, 0] and [len(r["masks"]) for r in rows] == [2, 1]
    assert rows[0]["title"].endswith("\nlabelled") and rows[1]["title"].startswith("mt-cutmix\n")
    assert (rows[0]["masks"][1] == explore.stage_masks(three.final.run_dir, [labelled])[0]).all()
    (cutmix.final.run_dir / "pseudo_masks" / f"{labelled}.png").rename(cutmix.final.run_dir / "moved.png")
    try:   # a compared run on another pool: its row left out, and said
        rows, note = explore.figure_rows(out, runs, three.final.run_hash, three.final.run_hash,
                                         cutmix.final.run_hash, labelled)
        assert len(rows) == 1 and note == f"the compared run has no prediction for {labelled}: another pool"
    finally:
        (cutmix.final.run_dir / "moved.png").rename(cutmix.final.run_dir / "pseudo_masks" / f"{labelled}.png")


def test_explorer_shows_the_last_or_the_best_miou(cache):
    out, three, _ = cache
    final = three.final
    box = explore.explorer(out, dataset="synth-objects", run=final.run_hash)
    c = box.controls
    assert c["miou"].value == "last"
    assert f"val mIoU {100 * final.miou('last'):.1f}% (last)" in c["status"].value
    c["miou"].value = "best"      # the toggle redraws the status with the best evaluation and its step
    assert f"val mIoU {100 * final.miou('best'):.1f}% (best, step {final.best_step})" in c["status"].value
    opened = explore.explorer(out, dataset="synth-objects", run=final.run_hash, which="best")
    assert opened.controls["miou"].value == "best" and "(best, step" in opened.controls["status"].value
    with pytest.raises(ValueError, match="which"):
        explore.explorer(out, which="mean")
