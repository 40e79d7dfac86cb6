"""results.py on constructed frames: mean ± std, the published numbers, the table writers; and the
experiment grids."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selftrain_lib import experiments as ex
from selftrain_lib import results


def _runs(rows):
    base = {c: None for c in results.RUN_COLUMNS}
    return pd.DataFrame([{**base, **r} for r in rows], columns=results.RUN_COLUMNS)


def test_mean_std_over_seeds_in_percent():
    df = pd.DataFrame({"dataset": ["a"] * 3 + ["b"], "val_miou": [0.50, 0.52, 0.54, 0.60]})
    s = results.mean_std(df, ["dataset"]).set_index("dataset")
    assert s.loc["a", "mean"] == pytest.approx(52.0)
    assert s.loc["a", "std"] == pytest.approx(2.0)          # sample std (ddof 1)
    assert s.loc["a", "n"] == 3 and s.loc["a", "reproduced"] == "52.00 ± 2.00"
    assert math.isnan(s.loc["b", "std"]) and s.loc["b", "reproduced"] == "60.00"


def test_format_mean_std():
    assert results.format_mean_std(float("nan"), float("nan")) == "–"
    assert results.format_mean_std(1.234, 0.5, 2, digits=1) == "1.2 ± 0.5"


def test_published_numbers_are_shipped_and_looked_up():
    assert len(results.published()) > 100
    assert results.published_miou("II", "cityscapes", "Ours (three-stage)", "100") == pytest.approx(54.85)
    assert results.published_miou("V", "pascal_voc_aug", "S1+S2+S3 full", "1/50") == pytest.approx(70.77)
    assert math.isnan(results.published_miou("II", "cityscapes", "Ours (three-stage)", "12345"))


def test_join_published_maps_our_datasets_and_label_counts():
    s = pd.DataFrame({"dataset": ["synth-street", "synth-objects", "synth-street"], "labels": [375, 60, 100],
                      "paper_method": ["Ours (three-stage)", "Ours (three-stage)", np.nan]})
    out = results.join_published(s, "II", column="pub")
    assert out["pub"].iloc[0] == pytest.approx(62.82)      # 375 ↔ Cityscapes 372
    assert math.isnan(out["pub"].iloc[1]) and math.isnan(out["pub"].iloc[2])
    out = results.join_published(s, "III", column="pub")
    assert out["pub"].iloc[1] == pytest.approx(62.71)      # 60 ↔ VOC 1/50


def test_label_table_reproduced_beside_published():
    rows = []
    for seed, (a, b, c) in enumerate([(0.40, 0.45, 0.50), (0.42, 0.47, 0.52)]):
        for stage, v in ((1, a), (2, b), (3, c)):
            rows.append({"dataset": "synth-street", "labels": 100, "paper_labels": "100", "variant": "full method",
                         "seed": seed, "stage": stage, "val_miou": v})
        rows.append({"dataset": "synth-street", "labels": "full", "paper_labels": "2975",
                     "variant": "full supervision", "seed": seed, "stage": 1, "val_miou": 0.7})
    t = results.label_table(_runs(rows), "synth-street")
    assert list(t["method"]) == ["Supervised (= Stage 1)", "Stage 2", "Ours (three-stage)",
                                 "full supervision (Stage 1 on the pool)"]
    ours = t[t["method"] == "Ours (three-stage)"].iloc[0]
    assert ours["reproduced mIoU (%)"] == "51.00 ± 1.41" and ours["seeds"] == 2
    assert ours["published (Table II)"] == pytest.approx(54.85)
    full = t[t["method"].str.startswith("full")].iloc[0]
    assert full["published (Table II)"] == pytest.approx(66.0)
    assert math.isnan(t[t["method"] == "Supervised (= Stage 1)"]["published (Table II)"].iloc[0])  # no 100 in II


def test_label_table_has_reproduced_baseline_rows_beside_french_et_al():
    rows = []
    for n, paper in ((30, "1/100"), (60, "1/50")):
        for stage in (1, 2, 3):
            rows.append({"dataset": "synth-objects", "labels": n, "paper_labels": paper, "variant": "full method",
                         "method": "three-stage", "seed": 0, "stage": stage, "val_miou": 0.3 + 0.01 * stage})
        for method, variant in ex.BASELINES.items():
            rows.append({"dataset": "synth-objects", "labels": n, "paper_labels": paper, "variant": variant,
                         "method": method, "seed": 0, "stage": 1, "val_miou": 0.35})
    t = results.label_table(_runs(rows), "synth-objects")
    assert list(dict.fromkeys(t["method"])) == ["Supervised (= Stage 1)", "Cutout (mean teacher)",
                                                "CutMix (mean teacher)", "Stage 2", "Ours (three-stage)"]
    assert len(t) == 10 and set(t["labels (ours)"]) == {30, 60}
    cutmix = t[(t["method"] == "CutMix (mean teacher)") & (t["labels (ours)"] == 60)].iloc[0]
    assert cutmix["reproduced mIoU (%)"] == "35.00"
    assert cutmix["published (Table III, ImageNet)"] == pytest.approx(64.81)
    assert cutmix["published (Table IV, ImageNet+COCO)"] == pytest.approx(67.3)   # the paper's own reproduction
    cutout = t[(t["method"] == "Cutout (mean teacher)") & (t["labels (ours)"] == 30)].iloc[0]
    assert cutout["published (Table III, ImageNet)"] == pytest.approx(48.73)
    assert math.isnan(cutout["published (Table IV, ImageNet+COCO)"])


def test_label_grid_adds_the_baselines_at_every_label_count():
    g = ex.label_grid("synth-street", [0])
    methods = [dict(s.overrides).get("method", "three-stage") for s in g]
    assert methods.count("mt-cutout") == methods.count("mt-cutmix") == 4
    assert all(s.stages == 1 and "lambda1" not in dict(s.overrides) for s in g if dict(s.overrides).get("method"))
    assert len(ex.label_grid("synth-street", [0], baselines=())) == 5
    fig = ex.grid("fig4_5")
    assert {dict(s.overrides).get("method") for s in fig if s.stages == 1} == {"mt-cutmix"}
    assert set(fig) <= set(ex.label_grid("synth-street") + ex.label_grid("synth-objects")
                           + ex.stages_grid(stages=3))               # figures 4, 5 add no run


def test_ablation_and_ema_tables_pick_the_decoded_rows():
    rows = []
    for variant, stage in [("full method", 1), ("full method", 2), ("full method", 3), ("without CR", 2),
                           ("without CR", 3), ("without EMA", 2), ("without EMA", 3)]:
        rows.append({"dataset": "synth-objects", "labels": 60, "paper_labels": "1/50", "variant": variant,
                     "seed": 0, "stage": stage, "val_miou": 0.5})
    t5 = results.ablation_table(_runs(rows))
    assert list(t5["row"]) == ["S1 only", "S1+S2 (CR, T2, SA)", "S1+S2+S3 without CR", "S1+S2+S3 full"]
    assert list(t5["published (Table V)"]) == pytest.approx([55.2, 68.5, 59.82, 70.77])
    t6 = results.ema_table(_runs(rows))
    assert list(t6["published (Table VI)"]) == pytest.approx([68.5, 70.77, 64.88, 66.83])


def test_write_table_markdown_latex_csv(tmp_path):
    df = pd.DataFrame({"method": ["a_b", "c"], "reproduced mIoU (%)": ["50.00 ± 1.00", "–"],
                       "published": [54.85, float("nan")]})
    cap = results.caption("Table X", ["synth-street"], "smoke", [0, 1])
    paths = results.write_table(df, tmp_path / "sub" / "tableX", cap)
    md = paths["md"].read_text()
    assert "scale: smoke" in md and "Cityscapes" in md and "last step" in md
    assert "| a_b | 50.00 ± 1.00 | 54.85 |" in md and "| c | – | – |" in md
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}{lll}" in tex and r"a\_b & 50.00 $\pm$ 1.00 & 54.85 \\" in tex
    assert r"\caption{" in tex and "%" not in tex.replace(r"\%", "")
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(df.columns) and len(back) == 2
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))


def test_per_class_gains():
    frame = pd.DataFrame([{"dataset": "d", "labels": 1, "variant": "v", "seed": s, "stage": st, "class": c, "iou": i}
                          for s in (0, 1) for st, c, i in [(1, "road", 0.5), (3, "road", 0.6 + 0.02 * s),
                                                           (1, "car", 0.3), (3, "car", 0.2)]])
    g = results.per_class_gains(frame).set_index("class")
    assert g.loc["road", "gain"] == pytest.approx(11.0) and g.loc["car", "gain"] == pytest.approx(-10.0)
    assert g.loc["road", "n_seeds"] == 2


def test_ablation_per_class_pairs_each_row_with_the_full_method_by_seed(ablation_frame):
    t = results.ablation_per_class(ablation_frame())
    assert list(dict.fromkeys(t["row"])) == ["S1 only", "S1+S2 (CR, T2, SA)", "S1+S2+S3 without CR"]   # Table V's order
    assert "S1+S2+S3 full" not in set(t["row"])                       # the reference is no row of its own
    assert list(t[t["row"] == "S1 only"]["class"]) == ["road", "car", "pole"]   # by the full method's IoU
    cr = t[t["row"] == "S1+S2+S3 without CR"].set_index("class")
    assert cr.loc["car", "difference"] == pytest.approx(21.0)          # 35 - (15, 13): +20, +22
    assert cr.loc["car", "difference_std"] == pytest.approx(2 ** 0.5)
    assert cr.loc["car", "n_seeds"] == 2 and cr.loc["car", "iou_full"] == pytest.approx(14.0)
    assert cr.loc["road", "difference"] == pytest.approx(-1.0)
    # IoU 0 in both is "never predicted", not "no difference"
    assert cr.loc["pole", "never_predicted"] and not cr.loc["road", "never_predicted"]
    s1 = t[t["row"] == "S1 only"].set_index("class")
    assert s1.loc["road", "difference"] == pytest.approx(-4.0)
    # one seed: no std; no runs of Table V: an empty table with its columns
    one = results.ablation_per_class(ablation_frame(seeds=(0,)))
    assert one["difference_std"].isna().all() and (one["n_seeds"] == 1).all()
    assert list(results.ablation_per_class(ablation_frame().iloc[:0]).columns) == results.PER_CLASS_COLUMNS


def test_scaled_labels_and_grids():
    assert ex.scaled_labels("synth-street", 100, "paper") == 100
    assert ex.scaled_labels("synth-street", 100, "quick") == 20            # quick's 600-image pool
    assert ex.scaled_labels("synth-objects", 60, "quick") == 12
    assert ex.scaled_labels("synth-street", 1500, "smoke") == 48          # half of the 96-image pool
    assert ex.scaled_labels("synth-objects", 30, "smoke") == 2            # at least labelled_per_batch
    assert ex.scaled_labels("synth-street", "full", "smoke") == "full"
    assert ex.paper_lambda("synth-objects", 150) == 1.25
    t2 = ex.grid("table2", seeds=[0, 1], baselines=())
    assert len(t2) == 4 * 2 + 2 and {s.labels for s in t2} == {100, 375, 750, 1500, "full"}
    t5 = ex.grid("table5")
    assert {s.variant for s in t5} == {"full method", "without CR", "without T2", "without SA", "without N2"}
    assert all(dict(s.overrides)["lambda1"] == (0.5 if s.dataset == "synth-street" else 0.25) for s in t5)
    f3 = ex.grid("fig3", lambdas=[0.5], datasets=["synth-street"])
    assert dict(f3[0].overrides)["lambda2"] == 0.5
    with pytest.raises(ValueError, match="drop"):
        ex.ablation_grid(drops=["XX"])
    kw = ex.spec("synth-objects", 375, 3).run_kwargs("smoke")
    assert kw["labels"] == 12 and kw["seed"] == 3 and kw["lambda1"] == 0.625


def test_voc_runs_meet_the_coco_numbers_only_when_they_started_from_coco():
    rows = []
    for pre, v in (("imagenet", 0.60), ("imagenet+mscoco", 0.70)):
        for stage in (1, 2, 3):
            rows.append({"dataset": "voc", "labels": 212, "paper_labels": "1/50", "variant": "full method",
                         "method": "three-stage", "seed": 0, "stage": stage, "val_miou": v, "pretraining": pre})
    t = results.label_table(_runs(rows), "voc")
    ours = t[t["method"] == "Ours (three-stage)"].set_index("pretraining")
    assert ours.loc["imagenet", "published (Table III, ImageNet)"] == pytest.approx(62.71)
    assert math.isnan(ours.loc["imagenet", "published (Table IV, ImageNet+COCO)"])
    assert ours.loc["imagenet+mscoco", "published (Table IV, ImageNet+COCO)"] == pytest.approx(70.77)
    assert math.isnan(ours.loc["imagenet+mscoco", "published (Table III, ImageNet)"])
    t5 = results.ablation_table(_runs(rows)).set_index(["row", "pretraining"])  # VOC's Table V is COCO's
    assert t5.loc[("S1+S2+S3 full", "imagenet+mscoco"), "published (Table V)"] == pytest.approx(70.77)
    assert math.isnan(t5.loc[("S1+S2+S3 full", "imagenet"), "published (Table V)"])
    # the stand-in (synthetic pre-training) keeps both references; one pre-training adds no column
    stand_in = [{**r, "dataset": "synth-objects", "labels": 60, "pretraining": "synthetic"} for r in rows[:3]]
    t = results.label_table(_runs(stand_in), "synth-objects")
    assert "pretraining" not in t.columns
    row = t[t["method"] == "Ours (three-stage)"].iloc[0]
    assert row["published (Table III, ImageNet)"] == pytest.approx(62.71)
    assert row["published (Table IV, ImageNet+COCO)"] == pytest.approx(70.77)


def _label_rows(teacher: bool = False):
    rows = []
    for seed, (s1, s3, cm) in enumerate([(0.40, 0.46, 0.43), (0.42, 0.48, 0.45)]):
        for n, paper in ((100, "100"), (375, "372")):
            for stage, v in ((1, s1), (3, s3)):
                rows.append({"dataset": "synth-street", "labels": n, "paper_labels": paper, "labels_used": n,
                             "variant": "full method", "method": "three-stage", "seed": seed, "stage": stage,
                             "val_miou": v, "eval_model": "student",
                             "val_miou_teacher": v + 0.01 if teacher and stage > 1 else np.nan})
            rows.append({"dataset": "synth-street", "labels": n, "paper_labels": paper, "labels_used": n,
                         "variant": "CutMix (mean teacher)", "method": "mt-cutmix", "seed": seed, "stage": 1,
                         "val_miou": cm, "eval_model": "student", "val_miou_teacher": np.nan})
    return _runs(rows)


SUP = "DeepLabV2 (supervised) · ours: Stage 1"
OURS = "Ours (three-stage) · ours: Stages 1–3"


def test_label_report_is_the_papers_table_at_a_glance_with_gains_beside_the_papers():
    r = results.label_report(_label_rows(), "synth-street", "smoke", [0, 1], "Table II")
    t = r["df"].set_index("method")
    assert list(t.index[:2]) == [SUP, "Hung et al."]                       # the paper's rows, in its order
    assert "French et al. (CutMix) · ours: mean teacher + CutMix" in t.index   # ours in the row it reproduces
    # the paper's label columns (fraction and count), each beside its gain over Supervised; no all-"–" column
    assert list(t.columns) == ["1/30 (100)", "1/30 (100) gain", "1/8 (372)", "1/8 (372) gain", "1/4 (744)",
                               "1/4 (744) gain", "1/2 (1488)", "full (2975)", "full (2975) gain"]
    assert t.loc[OURS, "1/8 (372)"] == "47.00 ± 1.41 | 62.82"              # ours (two seeds) | the paper's
    assert t.loc[OURS, "1/8 (372) gain"] == "+6.00 | +6.62"                # over Supervised: ours | 62.82 - 56.2
    # Table II has no supervised 100: Table V's S1 only (46.91), marked and explained
    assert t.loc[SUP, "1/30 (100)"] == "41.00 ± 1.41 | 46.91†"
    assert t.loc[OURS, "1/30 (100) gain"] == "+6.00 | +7.94†"              # 54.85 - 46.91
    assert "† Table II has no supervised row at 100 labels" in r["caption_text"]
    assert t.loc["Hung et al. (ImageNet+COCO)", "1/8 (372) gain"] == "– | –"   # no gain across pre-trainings
    assert t.loc["Mittal et al.", "1/4 (744)"] == "– | 61.90"              # a paper-only row keeps its numbers
    assert all(not all(c == "– | –" for c in t[col]) for col in t.columns)
    cap = r["caption_text"]
    assert "Dataset: synth-street" in cap and "scale: smoke" in cap and "2 seeds [0, 1]" in cap
    assert "1/8 (372): 375 labelled images" in cap and "ours | the paper's" in cap
    assert "reproduced mIoU (%)" in r["data"]                              # long CSV
    assert [h for h, _, _ in r["sections"]] == []                          # no teacher kept


def test_label_report_tables_iii_and_iv_both_present_for_an_objects_dataset():
    rows = [{"dataset": "synth-objects", "labels": 60, "paper_labels": "1/50", "labels_used": 12,
             "variant": "full method", "method": "three-stage", "seed": 0, "stage": st, "val_miou": v,
             "eval_model": "student"} for st, v in ((1, 0.1), (3, 0.12))]
    r = results.label_report(_runs(rows), "synth-objects", "quick", [0], "Tables III and IV")
    (name, iv, cap), = r["sections"]
    assert "Table IV" in name and "ImageNet+COCO" in cap + name
    assert iv.set_index("method").loc[OURS, "1/50"] == "12.00 | 70.77"
    assert r["df"].set_index("method").loc[OURS, "1/50"] == "12.00 | 62.71"   # Table III
    assert "1/50: 12 labelled images (nominal 60)" in r["caption_text"] and "scale: quick" in r["caption_text"]


def _cell_of(df: pd.DataFrame, row: str, header: str) -> str:
    """The cell of ``df`` (a glance table) in the row named ``row`` (or ``row · ours: ...``)."""
    first = df.columns[0]
    hit = df[(df[first] == row) | df[first].str.startswith(row + " · ")]
    assert len(hit) == 1, f"row {row!r}: {len(hit)} rows in {list(df[first])}"
    return hit.iloc[0][header]


@pytest.mark.parametrize("table", ["II", "III", "IV"])
def test_every_published_number_of_a_label_table_is_in_its_rendered_table(table, tmp_path):
    dataset = "synth-street" if table == "II" else "synth-objects"
    paper = "100" if table == "II" else "1/50"
    rows = [{"dataset": dataset, "labels": ex.ABLATION_LABELS[dataset], "paper_labels": paper, "labels_used": 20,
             "variant": "full method", "method": "three-stage", "seed": 0, "stage": st, "val_miou": 0.3,
             "eval_model": "student"} for st in (1, 2, 3)]
    r = results.label_report(_runs(rows), dataset, "smoke", [0], "T")
    df = r["df"] if table != "IV" else r["sections"][0][1]
    md = results.write_table(path=tmp_path / "t", **r)["md"].read_text()
    pub = results.published(table)
    assert len(pub) > 10
    main = pub["pretraining"].iloc[0]
    for _, p in pub.iterrows():
        row = p["method"] + (f" ({results.PRETRAINING_NAME[p['pretraining']]})" if p["pretraining"] != main else "")
        header = dict(results.PAPER_COLUMNS[p["dataset"]])[p["labels"]]
        cell = _cell_of(df, row, header)
        assert cell.split(" | ")[1].rstrip("†") == f"{p['miou']:.2f}", (table, row, header, cell)
        assert cell.replace("|", "\\|") in md


@pytest.mark.parametrize("table", ["V", "VI"])
def test_every_published_number_of_tables_v_and_vi_is_in_its_rendered_table(table, tmp_path):
    rows = [{"dataset": "synth-street", "labels": 100, "paper_labels": "100", "labels_used": 20, "variant": v,
             "seed": 0, "stage": st, "val_miou": 0.3} for v in ("full method", "without EMA") for st in (1, 2, 3)]
    r = results.rows_report(_runs(rows), table, "quick", [0], "T")
    md = results.write_table(path=tmp_path / "t", **r)["md"].read_text()
    rows_def = results.ABLATION_ROWS if table == "V" else results.EMA_ROWS
    label = {m: lab for _, _, lab, m in rows_def}
    for _, p in results.published(table).iterrows():
        short = results.PAPER_SHORT[p["dataset"]]
        header = next(c for c in r["df"].columns if c.endswith(f"{short} {p['labels']}"))
        cell = r["df"].set_index("row").loc[label[p["method"]], header]
        assert cell.split(" | ")[1] == f"{p['miou']:.2f}" and cell.replace("|", "\\|") in md, (p["method"], cell)


def test_label_report_adds_the_teacher_when_runs_kept_it(tmp_path):
    r = results.label_report(_label_rows(teacher=True), "synth-street", "smoke", [0, 1], "Table II")
    (heading, teacher, cap), = r["sections"]
    assert "teacher" in heading.lower() and "teacher" in cap
    assert list(teacher["method"]) == [SUP, OURS]       # stages with a teacher, and Stage 1's student as the base
    t = teacher.set_index("method")
    assert t.loc[OURS, "1/30 (100)"] == "48.00 ± 1.41 | 54.85"                 # the teacher: +1
    assert t.loc[OURS, "1/30 (100) gain"] == "+7.00 | +7.94†"                  # over Stage 1's student (41)
    assert "1/2 (1488)" not in t.columns                                       # no column without ours
    paths = results.write_table(path=tmp_path / "t2", **r)
    md = paths["md"].read_text()
    assert md.count("| method |") == 2 and "### " in md
    assert "reproduced mIoU (%)" in pd.read_csv(paths["csv"]).columns      # the tidy rows


def test_rows_report_table_v_names_ours_and_the_papers_dataset_in_each_column():
    rows = [{"dataset": "synth-objects", "labels": 60, "paper_labels": "1/50", "labels_used": 12, "variant": v,
             "seed": 0, "stage": st, "val_miou": x}
            for v, st, x in [("full method", 1, 0.5), ("full method", 2, 0.55), ("full method", 3, 0.6)]]
    r = results.rows_report(_runs(rows), "V", "smoke", [0], "Table V")
    t = r["df"].set_index("row")
    assert list(t.columns) == ["synth-street | Cityscapes 100", "synth-street | Cityscapes 100 gain",
                               "synth-objects | VOC 1/50", "synth-objects | VOC 1/50 gain"]
    assert t.loc["S1+S2+S3 full", "synth-objects | VOC 1/50"] == "60.00 | 70.77"
    assert t.loc["S1+S2+S3 full", "synth-objects | VOC 1/50 gain"] == "+10.00 | +15.57"   # 70.77 - 55.2
    assert t.loc["S1+S2+S3 full", "synth-street | Cityscapes 100"] == "– | 54.85"
    assert "synth-objects: 12 labelled images (nominal 60; the paper's 1/50)" in r["caption_text"]
    assert "scale: smoke" in r["caption_text"] and "1 seed [0]" in r["caption_text"]
    pseudo = results.caption("P", ["synth-objects"], "smoke", [0], measure=results.PSEUDO_MEASURE)
    assert "unlabelled set U" in pseudo and "Published" not in pseudo and "validation set," not in pseudo


def test_lambda_report_rows_are_lambdas_with_the_papers_fig3_and_no_gain_std_on_the_reference():
    table = pd.DataFrame({"dataset": ["synth-street"] * 2, "labels": [100, 100], "lambda1": [0.25, 0.5],
                          "miou": [30.0, 31.0], "miou_std": [0.5, 0.4], "seeds": [2, 2]})
    r = results.lambda_report(table, "quick", [0, 1], "Figure 3")
    t = r["df"].set_index("λ1 (= λ2)")
    assert list(t.index) == ["1/4", "1/2", "1"]
    assert t.loc["1/4", "synth-street | Cityscapes 100"] == "30.00 ± 0.50 | 52.85"
    assert t.loc["1/4", "synth-street | Cityscapes 100 vs λ1 = 1/2"] == "-1.00 | -2.00"
    assert t.loc["1", "synth-street | Cityscapes 100"] == "– | 53.35"
    assert r["data"] is table and "approximate" in r["caption_text"]
    counted = table.assign(labels_used=20, paper_labels="100")          # lambda_table keeps both counts
    assert "synth-street (Cityscapes stand-in), 100 labels (20 used)" in \
        results.lambda_report(counted, "quick", [0, 1], "Figure 3")["caption_text"]


def test_percent_names_and_scales_miou_columns():
    df = results.percent(pd.DataFrame({"val_miou": [0.5], "stage": [1]}))
    assert list(df.columns) == ["val mIoU (%)", "stage"] and df.iloc[0, 0] == pytest.approx(50.0)


def test_list_runs_leaves_out_a_damaged_metrics_json_with_a_warning_naming_it(tmp_path):
    from selftrain_lib import results

    (tmp_path / "0123456789abcdef").mkdir()
    bad = tmp_path / "0123456789abcdef" / "metrics.json"
    bad.write_text("{}")
    (tmp_path / "0123456789abcdef" / "config.json").write_text('{"config": {}}')
    with pytest.warns(UserWarning, match=rf"{bad}: not a finished run's metrics.json \(KeyError"):
        runs = results.list_runs(tmp_path)
    assert runs.empty


def test_retable_rewrites_the_markdown_from_a_committed_csv_with_the_published_numbers(tmp_path, load_tool):
    retable = load_tool("retable")
    rows = [{"dataset": "synth-street", "labels": 100, "paper_labels": "100", "labels_used": 20,
             "variant": "full method", "method": "three-stage", "seed": 0, "stage": st, "val_miou": v,
             "eval_model": "teacher"} for st, v in ((1, 0.317), (3, 0.3336))]
    report = results.label_report(_runs(rows), "synth-street", "quick", [0], "T")
    results.write_table(path=tmp_path / "table2", **report)
    (tmp_path / "table2.md").write_text("old (the evaluated model: student / teacher) text")
    csv = (tmp_path / "table2.csv").read_bytes()
    assert retable.retable(tmp_path, "quick", [0]) == [tmp_path / "table2"]
    md = (tmp_path / "table2.md").read_text()
    assert "33.36 \\| 54.85" in md and "– \\| 62.82" in md and "student / teacher" in md and "scale: quick" in md
    assert (tmp_path / "table2.csv").read_bytes() == csv                  # the tidy rows untouched


def test_table_v_rows_and_drops_are_derived_from_the_switches():
    """Table V's rows and runs follow methods.SWITCHES (a 6th switch adds its row and its run there),
    and are the paper's rows for the five switches of today."""
    assert results.ABLATION_ROWS == [
        ("full method", 1, "S1 only", "S1 only"),
        ("full method", 2, "S1+S2 (CR, T2, SA)", "S1+S2 (CR,T2,SA)"),
        ("without CR", 3, "S1+S2+S3 without CR", "S1+S2+S3 without CR"),
        ("without T2", 3, "S1+S2+S3 without T2", "S1+S2+S3 without T2"),
        ("without SA", 3, "S1+S2+S3 without SA", "S1+S2+S3 without SA"),
        ("without N2", 3, "S1+S2+S3 without N2 (ĝ in stage 3)", "S1+S2+S3 without N2 (g-hat in stage 3)"),
        ("full method", 3, "S1+S2+S3 full", "S1+S2+S3 full")]
    assert ex.TABLE_V_DROPS == ("none", "CR", "T2", "SA", "N2")
    assert [s.variant for s in ex.ablation_grid(["synth-street"])] == [
        "full method", "without CR", "without T2", "without SA", "without N2"]
