"""Figures that read at a glance: y-axes that do not magnify noise, error bars where seeds exist,
the paper's curve beside ours, a distinct palette, sorted gains with "never predicted" marked."""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from selftrain_lib import figures, results
from selftrain_lib.data import dataset_info


@pytest.fixture(autouse=True)
def _close_figures():
    """Each test's figures closed after it (pyplot keeps them open otherwise)."""
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_miou_axis_spans_at_least_ten_points_within_0_100():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    lo, hi = figures.miou_axis(ax, [39.6, 40.1])                 # a 0.5-point wobble
    assert hi - lo >= figures.MIN_SPAN and lo < 39.6 and hi > 40.1
    lo, hi = figures.miou_axis(ax, [1.0, 2.0])                    # near 0: clipped, still the span
    assert lo == 0.0 and hi - lo >= figures.MIN_SPAN
    lo, hi = figures.miou_axis(ax, [20.0, 60.0])                  # a wide range is left as it is (plus margin)
    assert lo < 20 and hi > 60 and hi - lo < 45
    plt.close(fig)


def _errorbars(ax):
    from matplotlib.container import ErrorbarContainer

    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _lambda_table(seeds):
    return pd.DataFrame({"dataset": ["synth-street"] * 3, "lambda1": [0.25, 0.5, 1.0],
                         "miou": [39.5, 39.9, 39.7], "miou_std": [0.3, 0.2, 0.4], "seeds": [seeds] * 3})


def test_lambda_figure_has_error_bars_a_wide_axis_and_the_papers_curve():
    fig = figures.plot_lambda(_lambda_table(3), title="t")
    ax, rel = fig.axes[:2]
    assert np.diff(ax.get_ylim())[0] >= figures.MIN_SPAN
    assert len(_errorbars(ax)) == 1                               # the error bars: 3 seeds
    labels = [l.get_label() for l in rel.get_lines()]
    assert figures.PAPER_FIG3["label"] in labels
    paper = next(l for l in rel.get_lines() if l.get_label() == figures.PAPER_FIG3["label"])
    assert list(paper.get_ydata()) == pytest.approx([-2.0, 0.0, -1.5])   # docs/method.md's reading of Fig. 3
    legend = fig.legends[0]
    assert "synth-street (± std over 3 seeds)" in [t.get_text() for t in legend.get_texts()]


def test_lambda_reference_point_has_no_error_bar_and_one_seed_none_at_all():
    fig = figures.plot_lambda(_lambda_table(3))
    rel = fig.axes[1]
    (bars,) = _errorbars(rel)
    xs = {round(float(x), 6) for seg in bars.lines[2][0].get_segments() for x, _ in seg}
    assert xs == {0.25, 1.0}                                      # not on λ1 = 1/2, 0 by definition
    fig = figures.plot_lambda(_lambda_table(1))
    assert all(not _errorbars(a) for a in fig.axes)               # one seed: no std to draw
    assert "synth-street (1 seed)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_pseudo_stages_one_bar_per_stage_in_the_stage_colour_error_bars_only_with_two_seeds():
    runs = pd.DataFrame({"dataset": ["synth-objects"] * 2, "stage": [1, 1], "seed": [0, 1],
                         "pseudo_miou": [0.30, 0.32]})
    fig = figures.plot_pseudo_stages(runs)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == 1 and bars[0].get_height() == pytest.approx(31.0)
    assert matplotlib.colors.to_hex(bars[0].get_facecolor()) == figures.colour("Stage 1")
    assert ax.get_ylim()[0] == 0
    assert [t.get_text() for t in ax.texts] == ["31.0"]
    assert len(_errorbars(ax)) == 1
    assert "error bars: ± std over 2 seeds" in [t.get_text() for t in ax.get_legend().get_texts()]
    fig = figures.plot_pseudo_stages(runs.iloc[:1])
    assert not _errorbars(fig.axes[0])
    assert all("std" not in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_per_class_gains_sorted_and_never_predicted_cannot_read_as_a_gain():
    frame = pd.DataFrame([{"dataset": "d", "labels": 1, "variant": "v", "seed": 0, "stage": st, "class": c, "iou": i}
                          for st, c, i in [(1, "a", 0.5), (3, "a", 0.5), (1, "b", 0.2), (3, "b", 0.4),
                                           (1, "c", 0.0), (3, "c", 0.0), (1, "e", 0.3), (3, "e", 0.1)]])
    g = results.per_class_gains(frame)
    assert list(g["class"]) == ["b", "a", "c", "e"]               # by gain, largest first
    assert list(g["never_predicted"]) == [False, False, True, False]   # "a" (no change) is not "c" (IoU 0)
    fig = figures.plot_per_class_gains(g)
    ax = fig.axes[0]
    assert not [p for p in ax.patches if p.get_hatch()]           # no hatched bar that reads as a small gain
    rows = {round(p.get_y() + p.get_height() / 2): p for p in ax.patches}
    assert 2 not in rows                                          # "c" (the third row) has no bar at all
    assert matplotlib.colors.to_hex(rows[0].get_facecolor()) == figures.colour("Stage 3")   # b: Stage 3 higher
    assert matplotlib.colors.to_hex(rows[3].get_facecolor()) == figures.colour("Stage 1")   # e: Stage 1 higher
    assert [t.get_text() for t in ax.texts] == ["n/p"]
    assert figures.NEVER_PREDICTED in [t.get_text() for t in fig.legends[0].get_texts()]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a", "c", "e"]
    assert not _errorbars(ax)                                     # one seed


def test_ablation_per_class_grid_marks_never_predicted_and_centres_at_zero(ablation_frame):
    t = results.ablation_per_class(ablation_frame())
    fig = figures.plot_ablation_per_class(t, title="synth-street, cpu")
    ax = fig.axes[0]
    texts = [x.get_text() for x in ax.texts]
    assert len(texts) == 3 * 3 and texts.count("n/p") == 3          # pole: never predicted in every row
    assert "+21.0" in texts and "-4.0" in texts
    assert [x.get_text() for x in ax.get_xticklabels()] == ["road", "car", "pole"]
    mesh = ax.collections[0]
    lo, hi = mesh.get_clim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(21.0)     # diverging, centred at 0
    assert "over 2 seeds" in fig._suptitle.get_text()
    one = figures.plot_ablation_per_class(results.ablation_per_class(ablation_frame(seeds=(0,))))
    assert "seeds" not in one._suptitle.get_text() and "n/p" in one._suptitle.get_text()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _curves():
    return pd.DataFrame({"step": [0, 100, 200], "val_miou": [0.2, 0.3, 0.35], "loss": [1, 0.5, 0.3],
                         "loss_seg": [1, 0.4, 0.2], "loss_con": [0.1, 0.1, 0.1], "loss_pl": [0.2, 0.2, 0.1]})


def test_legends_are_off_the_data():
    c = _curves()
    g = results.per_class_gains(pd.DataFrame(
        [{"dataset": "d", "labels": 1, "variant": "v", "seed": 0, "stage": st, "class": k, "iou": i}
         for st, k, i in [(1, "a", 0.5), (3, "a", 0.6), (1, "c", 0.0), (3, "c", 0.0)]]))
    runs = pd.DataFrame({"dataset": ["d"] * 3, "stage": [1, 2, 3], "seed": [0] * 3, "pseudo_miou": [0.3, 0.4, 0.5]})
    made = {"lambda": figures.plot_lambda(_lambda_table(3)), "per_class": figures.plot_per_class_gains(g),
            "pseudo": figures.plot_pseudo_stages(runs), "val": figures.plot_val_miou({"Stage 1": c, "Stage 2": c}),
            "losses": figures.plot_losses(c), "fig2": figures.plot_fig2(c, c)}
    for name, fig in made.items():
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        assert legends, name
        for legend in legends:
            for ax in fig.axes:
                assert not _overlaps(legend.get_window_extent(r), ax.get_window_extent(r)), name


def test_one_colour_per_meaning_across_figures():
    assert len(set(figures.PALETTE.values())) == len(figures.PALETTE)   # no colour means two things
    c = _curves()
    val = figures.plot_val_miou({"Stage 2": c, "without CR, stage 3": c})
    lines = {l.get_label(): matplotlib.colors.to_hex(l.get_color()) for l in val.axes[0].get_lines()}
    runs = pd.DataFrame({"dataset": ["d"] * 2, "stage": [1, 2], "seed": [0, 0], "pseudo_miou": [0.3, 0.4]})
    bars = figures.plot_pseudo_stages(runs).axes[0].patches
    assert matplotlib.colors.to_hex(bars[1].get_facecolor()) == lines["Stage 2"] == figures.colour("Stage 2")
    assert lines["without CR, stage 3"] == figures.colour("without CR") != figures.colour("Stage 3")
    fig2 = figures.plot_fig2(c, c)
    fig2_lines = {l.get_label(): matplotlib.colors.to_hex(l.get_color()) for l in fig2.axes[0].get_lines()}
    assert fig2_lines["with $L_{pl}$ (Stage 3)"] == figures.colour("Stage 3")
    assert fig2_lines["without $L_{pl}$ (T2 off)"] == figures.colour("without T2")
    t = pd.concat([_lambda_table(1), _lambda_table(1).assign(dataset="synth-objects")])
    lam = {l.get_label(): matplotlib.colors.to_hex(l.get_color()) for l in figures.plot_lambda(t).axes[0].get_lines()}
    assert lam["synth-objects (1 seed)"] == figures.colour("synth-objects") == figures.colour("voc")
    assert figures.colour("synth-objects") not in {figures.colour(f"Stage {k}") for k in (1, 2, 3, 4)}
    assert figures.colour("mt-cutmix") == figures.colour("CutMix")
    assert figures.colour("Supervised (= Stage 1)") == figures.colour("Stage 1")


def test_setting_text_names_dataset_labels_used_and_the_papers_scale_and_seeds():
    text = results.setting_text([("synth-street", 20, "100")], "quick", [0, 1, 2])
    assert text == "synth-street (Cityscapes stand-in), 100 labels (20 used); scale quick; 3 seeds [0, 1, 2]"
    runs = pd.DataFrame({"dataset": ["synth-objects"] * 2, "labels_used": [12, 96], "paper_labels": ["1/50", "full"]})
    assert results.setting_of(runs, "cpu", [0]) == ("synth-objects (PASCAL VOC 2012 stand-in), labels 1/50 "
                                                    "(12 used); scale cpu; 1 seed [0]")
    assert "full supervision (96 images)" in results.setting_text([("synth-objects", 96, "full")], "cpu", [0])


def _title_clear_of_headings(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(r)
    for ax in fig.axes:
        assert title.y0 >= ax.get_tightbbox(r).y1 - 0.5, (fig._suptitle.get_text(), ax.get_title())


def test_prediction_grid_and_explorer_titles_sit_above_the_column_headings():
    from selftrain_lib import explore

    info = dataset_info("synth-street")
    img = np.zeros((2, 3, 20, 30), np.uint8)
    m = np.zeros((2, 20, 30), np.int64)
    title = "Figs. 4 and 5: " + results.setting_text([("synth-street", 20, "100")], "quick", [0])
    fig = figures.prediction_grid(img, {"Stage 1": m, "ground truth": m}, "synth-street", info.class_names,
                                  info.palette, title=title)
    assert fig._suptitle.get_text().replace("\n", " ") == title
    _title_clear_of_headings(fig)
    fig = explore.compare_figure(img[0], m[0], [{"title": "run", "masks": [m[0], m[0]], "selected": 1}], 0.5,
                                 info.class_names, info.palette, title="synth-street: pool image #0")
    _title_clear_of_headings(fig)


def _hue(rgb):
    import colorsys

    r, g, b = (v / 255 for v in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    return h, s, v


def test_synth_objects_palette_is_distinct_with_no_near_black_and_one_red():
    pal = dataset_info("synth-objects").palette
    assert len(pal) == len(set(pal)) == dataset_info("synth-objects").num_classes
    dist = min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(pal, 2))
    assert dist > 60
    assert all(max(c) > 90 for c in pal)                          # no near-black class
    reds = [c for c in pal if _hue(c)[1] > 0.5 and (_hue(c)[0] < 0.03 or _hue(c)[0] > 0.95)]
    assert len(reds) <= 1
    assert (255, 255, 255) not in pal                             # white stays "ignore"


def test_save_writes_the_same_bytes_for_the_same_figure(tmp_path, monkeypatch):
    # regenerated figures/ must diff clean: no creation date (or other clock) in the PDF
    from matplotlib import pyplot as plt

    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [3, 1, 2])
        return fig

    first = figures.save(draw(), tmp_path / "a")
    monkeypatch.setattr("time.time", lambda: 2e9)  # a later clock, as a later regeneration has
    second = figures.save(draw(), tmp_path / "b")
    for a, b in zip(first, second):
        assert a.suffix in (".pdf", ".png") and a.read_bytes() == b.read_bytes(), a.name
    assert b"CreationDate" not in first[0].read_bytes()


def test_the_ring_around_the_best_evaluation_is_in_the_legend():
    """A ringed point without a legend entry reads as data: the validation curves and Fig. 2 name it."""
    c = _curves()
    val = figures.plot_val_miou({"Stage 1": c, "Stage 2": c})
    texts = [t.get_text() for t in val.axes[0].get_legend().get_texts()]
    assert texts == ["Stage 1", "Stage 2", figures.BEST_LABEL]
    fig2 = figures.plot_fig2(c, c)
    assert figures.BEST_LABEL in [t.get_text() for t in fig2.legends[0].get_texts()]
