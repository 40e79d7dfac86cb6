"""The headline figure's numbers: paired differences per seed, the paper's effects, the table."""
import matplotlib

matplotlib.use("Agg")
import pandas as pd
import pytest

from selftrain_lib import headline


def _measurement(tmp_path, seeds=(0, 1, 2)):
    rows = []
    for s in seeds:
        rows += [("synth-street", "100", "Stage 1 (supervised)", s, 30.0 + s, None),
                 ("synth-street", "100", "Stage 2", s, 31.0, 32.0 + 2 * s),
                 ("synth-street", "100", "Stage 3", s, 31.5, 33.0 + 2 * s),
                 ("synth-street", "full", "full supervision (Stage 1, every label)", s, 45.0, None)]
    path = tmp_path / "stages.csv"
    pd.DataFrame(rows, columns=["dataset", "labels", "row", "seed", "student", "teacher"]).to_csv(path, index=False)
    return path


def test_effects_are_paired_per_seed_on_the_reported_network(tmp_path):
    e = headline.measured_effects(_measurement(tmp_path)).set_index(["effect", "seed"])["value"]
    # Stage 2 − Stage 1: teacher of Stage 2 (32 + 2s) minus student of Stage 1 (30 + s)
    assert [e[("Stage 2 − Stage 1", s)] for s in (0, 1, 2)] == [2.0, 3.0, 4.0]
    assert [e[("Stage 3 − Stage 2", s)] for s in (0, 1, 2)] == [1.0, 1.0, 1.0]
    assert [e[("labels matter: full − Stage 1", s)] for s in (0, 1, 2)] == [15.0, 14.0, 13.0]


def test_the_papers_effects_come_from_its_tables():
    p = headline.paper_effects().set_index(["dataset", "effect"])["value"]
    assert p[("synth-street", "Stage 2 − Stage 1")] == pytest.approx(53.25 - 46.91)
    assert p[("synth-street", "Stage 3 − Stage 2")] == pytest.approx(54.85 - 53.25)
    assert p[("synth-street", "labels matter: full − Stage 1")] == pytest.approx(66.0 - 46.91)
    assert p[("synth-objects", "Stage 2 − Stage 1")] == pytest.approx(68.5 - 55.2)
    assert p[("synth-objects", "labels matter: full − Stage 1")] == pytest.approx(73.6 - 55.2)


def test_table_and_figure_with_three_seeds_and_with_one(tmp_path):
    table = headline.headline_table({"cpu": _measurement(tmp_path)})
    row = table[(table.dataset == "synth-street") & (table.effect == "Stage 2 − Stage 1")].iloc[0]
    assert (row["cpu mean"], row["cpu std"], row["cpu seeds"]) == (3.0, 1.0, 3)
    md = headline.headline_markdown(table, ["cpu"])
    assert "+3.0 ± 1.0 (+2.00, +3.00, +4.00)" in md and "+6.3" in md
    # objects was not measured: its cells say so, the paper's number is still there
    assert "| Stage 2 − Stage 1 | synth-objects (VOC, 1/50) | +13.3 | – |" in md
    # the caption above the table: the labels each stand-in used of its pool at the scale, and the seeds
    caption = md.split("\n\n")[0]
    assert "synth-street 20 of 600 at `cpu`" in caption and "synth-objects 30 of 1,500 at `cpu`" in caption
    assert "Seeds: `cpu` 3 seeds" in caption and "EMA teacher" in caption
    fig = headline.plot_headline(table, ["cpu"])
    assert any("± std over 3 seeds" in t.get_text() for t in fig.legends[0].get_texts())

    one = tmp_path / "one"
    one.mkdir()
    table1 = headline.headline_table({"quick": _measurement(one, seeds=(0,))})
    md1 = headline.headline_markdown(table1, ["quick"])
    assert "(1 seed)" in md1 and "Seeds: `quick` 1 seed." in md1 and "synth-objects 12 of 600 at `quick`" in md1
    fig1 = headline.plot_headline(table1, ["quick"])
    labels = [t.get_text() for t in fig1.legends[0].get_texts()]
    assert "ours, quick" in labels and not any("std" in t for t in labels)
    # no error bars with one seed: a bar container's errorbar is None
    assert all(c.errorbar is None for ax in fig1.axes for c in ax.containers)


def test_a_file_that_is_not_a_measurement_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: not a stage measurement"):
        headline.measured_effects(bad)
