"""Figures that read at a glance: y-axes that do not magnify noise, error bars where seeds exist,
the paper's curve beside ours, a distinct palette, sorted gains with "never predicted" marked."""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from selftrain_lib import figures, results
from selftrain_lib.data import dataset_info


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


def test_lambda_figure_has_error_bars_a_wide_axis_and_the_papers_curve():
    table = pd.DataFrame({"dataset": ["synth-street"] * 3, "lambda1": [0.25, 0.5, 1.0],
                          "miou": [39.5, 39.9, 39.7], "miou_std": [0.3, 0.2, 0.4]})
    fig = figures.plot_lambda(table, title="t")
    ax, rel = fig.axes[:2]
    assert np.diff(ax.get_ylim())[0] >= figures.MIN_SPAN
    assert len(ax.collections) >= 1                               # the error bars
    labels = [l.get_label() for l in rel.get_lines()]
    assert figures.PAPER_FIG3["label"] in labels
    paper = next(l for l in rel.get_lines() if l.get_label() == figures.PAPER_FIG3["label"])
    assert list(paper.get_ydata()) == pytest.approx([-2.0, 0.0, -1.5])   # METHOD.md's reading of Fig. 3


def test_pseudo_stages_one_stage_is_a_labelled_bar_from_zero():
    runs = pd.DataFrame({"dataset": ["synth-objects"] * 2, "stage": [1, 1], "seed": [0, 1],
                         "pseudo_miou": [0.30, 0.32]})
    fig = figures.plot_pseudo_stages(runs)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == 1 and bars[0].get_height() == pytest.approx(31.0)
    assert ax.get_ylim()[0] == 0
    assert [t.get_text() for t in ax.texts] == ["31.0"]


def test_per_class_gains_sorted_and_never_predicted_distinguished():
    frame = pd.DataFrame([{"dataset": "d", "labels": 1, "variant": "v", "seed": 0, "stage": st, "class": c, "iou": i}
                          for st, c, i in [(1, "a", 0.5), (3, "a", 0.5), (1, "b", 0.2), (3, "b", 0.4),
                                           (1, "c", 0.0), (3, "c", 0.0), (1, "e", 0.3), (3, "e", 0.1)]])
    g = results.per_class_gains(frame)
    assert list(g["class"]) == ["b", "a", "c", "e"]               # by gain, largest first
    assert list(g["never_predicted"]) == [False, False, True, False]   # "a" (no change) is not "c" (IoU 0)
    fig = figures.plot_per_class_gains(g)
    ax = fig.axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_width() > 0       # visible, unlike a 0 gain
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a", "c", "e"]


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
