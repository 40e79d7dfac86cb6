"""Generate notebooks/*.ipynb (committed without outputs). Run: python tools/make_notebooks.py

Each notebook: a title, a ``parameters`` cell (plain literals, one per line, each with a trailing
comment, read by papermill), a cell of derived values, then thin cells that call the library.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat

from selftrain_lib import experiments as ex
from selftrain_lib.data import records
from selftrain_lib.paper_figures import NOTEBOOK_ORDER
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"

COMMON = [("scale: str", '"quick"', "scale preset: smoke (tests), quick, cpu, paper"),
          ("out: \"str or None\"", "None", "run cache folder; None: $SELFTRAIN_RUNS, else runs/ of the checkout"),
          ("figures_dir: \"str or None\"", "None",
           "where tables and figures go; None: $SELFTRAIN_FIGURES, else build/figures/ (make paper-figures: figures/)"),
          ("jobs: \"int or auto\"", "\"auto\"", 'stage runs trained at once, each in a worker process with one thread ("auto": one per core, 1 on a GPU)'),
          ("data_roots: dict", "{}", "folders of datasets read from files, by name (cityscapes, voc); synthetic ones need none"),
          ("config: dict", "{}", 'any other configuration key, as --set does (e.g. {"steps": 500}); a grid\'s own keys win')]


def counts(dataset: str) -> str:
    """``"100, 375, 750, 1500"``: the label counts of ``dataset``'s record, as the grids write them."""
    return ", ".join(map(str, ex.LABEL_COUNTS[dataset]))


# the dataset facts the parameters' comments name, read from the records (selftrain_lib/data/records.py)
STREET, OBJECTS = ex.DATASETS   # the stand-ins of Cityscapes and VOC
STAND_IN_NAMES = " or ".join(f"{d} ({records.paper_of(d).short} stand-in)" for d in ex.DATASETS)
ABLATION_COUNTS = "datasets (ablation label counts " + " and ".join(str(ex.ABLATION_LABELS[d]) for d in ex.DATASETS) + ")"
# the paper's label count (or fraction), scaled to the pool of the scale (selftrain_lib.label_counts)
LABELS = ("labels: \"int or fraction or full\"", "100", f"the paper's label count ({STREET} {counts(STREET)}; {OBJECTS} "
          f"{counts(OBJECTS)}) or fraction ('1/30', '1/50'), scaled to the pool of the scale; or 'full'")
SEEDS = [("seeds: list", "[0]", "seeds to average over (mean ± std)")]
# the ablation switches by name (methods.SWITCHES, checked by ex.switch_overrides; -p sa False also
# works): one parameter, so a new switch needs no new notebook and no new README row
METHOD = [("lambda1: \"float or None\"", "None", "weight of L_con; None: the paper's value for the dataset and label count"),
          ("lambda2: \"float or None\"", "None", "weight of L_pl; None: equal to lambda1"),
          ("switches: dict", "{}", 'ablation switches off (or on) by name, e.g. {"sa": false} or -p sa False; '
           "python -m selftrain_lib run -h lists them (--no-<switch>)")]

SETUP = """\
from selftrain_lib.notebook_params import check_parameters
check_parameters(globals())   # -p lables 5 is an error naming it; -p seeds '[0, 1]', -p config '{"steps": 500}' are parsed
from pathlib import Path
from IPython.display import display
from selftrain_lib import experiments as ex, results, figures, paths
from selftrain_lib.data import load_data
figures.use_style()
out = str(paths.runs_dir(out))   # the same cache whatever the working directory (JupyterLab starts in notebooks/)
fig_dir = paths.figures_dir(figures_dir); fig_dir.mkdir(parents=True, exist_ok=True)
print("run cache:", out); print("tables and figures:", fig_dir)"""


def typed(name: str, value: str) -> str:
    """``name: type`` for papermill's ``--help-notebook`` (else "Unknown type"): the annotation
    given in ``name``, else the type of the literal ``value``. Annotations papermill can read are
    words, so "either" types are strings ("float or None"), which Python leaves unevaluated."""
    if ":" in name:
        return name
    kind = type(ast.literal_eval(value)).__name__
    return f"{name}: {kind}"


def params_cell(params):
    assert not any("=" in c for _, _, c in params), "papermill cannot parse '=' in a parameter comment"
    lines = [(f"{typed(n, v)} = {v}", c) for n, v, c in params]
    width = max(len(code) for code, _ in lines)
    src = "\n".join(code.ljust(width) + f"  # {c}" for code, c in lines)
    return new_code_cell(src, metadata={"tags": ["parameters"]})


def notebook(title: str, intro: str, params, derived: str, cells: list[str]):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "selftrain", "display_name": "selftrain (.venv)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new_markdown_cell(f"# {title}\n\n{intro}"), params_cell(params), new_code_cell(derived)]
    for c in cells:
        nb.cells.append(new_markdown_cell(c[3:].strip()) if c.startswith("md:") else new_code_cell(c.strip()))
    return nb


def stage_notebook(k: int):
    params = [("dataset", '"synth-street"', STAND_IN_NAMES),
              LABELS,
              ("seed", "0", "seed of the split, initialisation and training")] + METHOD + COMMON
    derived = SETUP + f"""
STAGE = {k}
overrides = {{k: v for k, v in dict(lambda1=lambda1, lambda2=lambda2 if lambda2 is not None else lambda1,
             **ex.switch_overrides(switches)).items() if v is not None}}
spec = ex.spec(dataset, labels, seed, stages=STAGE, **overrides)
print(spec.describe(scale))"""
    cells = [
        f"md:## Train (or reuse from the run cache) {'Stage 1' if k == 1 else f'stages 1…{k}'}",
        """grid = ex.run_grid([spec], scale, out, jobs=jobs, data_roots=data_roots, config=config, desc=f"stages 1..{STAGE}")
result = grid.pairs[0][1]
this = result.stages[-1]
runs = results.collect(grid.pairs, scale)   # which="best": val_miou holds the best evaluation instead of the last
# both of each run: the last step's mIoU (what the tables report) and the best evaluation during training, with its step
results.percent(runs[["stage", "labels_used", "val_miou_last", "val_miou_best", "best_step", "pseudo_miou", "run_dir"]])""",
        f"md:## Loss curves and validation mIoU over training (Stage {k})\n\nValidation mIoU is measured on "
        "whole images at each evaluation step; the reported number is the last step's (the table above also "
        "shows the best evaluation, ringed on the curve).",
        """curves = this.curves()
where = results.setting_of(runs[runs["stage"] == STAGE], scale, [seed])   # dataset, the paper's label count (the count used), scale, seed
tag = f"{dataset}_{spec.labels}labels_seed{seed}_{scale}"  # in the file names: another run never overwrites these
fig = figures.plot_losses(curves, title=f"Stage {STAGE} losses: {where}")
figures.show(fig, fig_dir / f"stage{STAGE}_{tag}_losses")
fig = figures.plot_val_miou({f"Stage {r.stage}": r.curves() for r in result.stages}, title=f"validation mIoU, STAGES_SHOWN: {where}")
figures.show(fig, fig_dir / f"stage{STAGE}_{tag}_val_miou")""".replace("STAGES_SHOWN", "Stage 1" if k == 1 else "stages 1..{STAGE}"),
        "md:## Pseudo-mask quality on U before and after this stage",
        """before = result.stages[-2].pseudo_miou if STAGE > 1 else float("nan")
figures.show_markdown(f"Pseudo-masks on U: before Stage {STAGE} (its input) **{100 * before:.2f}**, "
                      f"after (its output) **{100 * this.pseudo_miou:.2f}** mIoU (%).")
fig = figures.plot_pseudo_stages(runs, title=f"pseudo-masks on U after each stage: {where}")
figures.show(fig, fig_dir / f"stage{STAGE}_{tag}_pseudo")""",
        "md:## Example predictions (fixed validation sample)",
        """data = load_data(this.config)
images, columns, truth = results.val_samples(result.stages, data, max_images=4)
fig = figures.prediction_grid(images, {**columns, "ground truth": truth}, dataset, data.info.class_names, data.info.palette,
                              title=f"Predictions on the first validation images: {where}")
figures.show(fig, fig_dir / f"stage{STAGE}_{tag}_predictions")""",
    ]
    intro = (f"Runs Stage {k} of the three-stage method, training (or reusing from the run cache) the earlier "
             f"stages it needs. `papermill notebooks/stage{k}.ipynb out.ipynb -p labels 100` (the paper's count: "
             "20 of the 600-image pool at `quick`; or `-p labels 1/30`).")
    return notebook(f"Stage {k}", intro, params, derived, cells)


# notebooks that need only the runs' metrics and validation curves can read runs from a record of
# run summaries (selftrain_lib.record) in place of training them: `make paper-figures FROM_RECORD=1`
RECORD = ("record: \"str or None\"", "None",
          "a folder of run summaries (figures/cpu/run_summaries): the runs it holds (whole trees of runs sharing a Stage 1) are read from it, not trained")
GRID_CALL = "config=config, desc="


def reading_record(params, cells):
    """``params`` and ``cells`` of a notebook that reads its runs from a record where it can."""
    assert all(GRID_CALL in c for c in cells if "ex.run_grid(" in c), "a grid call without config= and desc="
    return params + [RECORD], [c.replace(GRID_CALL, "config=config, record=record, desc=") for c in cells]


def collector(title, intro, params, derived, cells, record: bool = False):
    """A notebook over a grid of runs, with the seeds; ``record``: it can read its runs from a record."""
    if record:
        params, cells = reading_record(params, cells)
    return notebook(title, intro, params + SEEDS + COMMON, SETUP + "\n" + derived, cells)


NOTEBOOKS = {}
for _k in (1, 2, 3):
    NOTEBOOKS[f"stage{_k}"] = stage_notebook(_k)

NOTEBOOKS["baselines"] = notebook(
    "Baselines trained by the same code",
    "One baseline run on the same data, split, backbone, pre-training, optimiser, step budget (Stage 1's) and "
    "seed as the three-stage method: `supervised` (L_seg on L: the Stage-1 run itself), `mt-cutout` or "
    "`mt-cutmix` (mean teacher with Cutout / CutMix, French et al., BMVC 2020; settings in the README). "
    "`papermill notebooks/baselines.ipynb out.ipynb -p method mt-cutout`.",
    [("method", '"mt-cutmix"', "supervised, or a baseline of ex.BASELINES (mt-cutout, mt-cutmix...)"),
     ("dataset", '"synth-street"', STAND_IN_NAMES),
     LABELS,
     ("seed", "0", "seed of the split, initialisation and training")] + COMMON,
    SETUP + """
spec = ex.baseline_spec(dataset, labels, method, seed)
name = ex.BASELINES.get(method, "Supervised (= Stage 1)")
print(spec.describe(scale))""",
    ["md:## Train (or reuse from the run cache) the baseline",
     """grid = ex.run_grid([spec], scale, out, jobs=jobs, data_roots=data_roots, config=config, desc=method)
this = grid.pairs[0][1].stages[0]
runs = results.collect(grid.pairs, scale)
results.percent(runs[["method", "labels_used", "seed", "val_miou", "pseudo_miou", "train_time_s", "run_dir"]])""",
     "md:## Losses over training\n\n`loss_con` is the masked consistency loss; `conf_rate` the fraction of "
     "pixels where the teacher is confident enough (`conf_threshold`).",
     """curves = this.curves()
tag = f"{dataset}_{spec.labels}labels_seed{seed}_{scale}"  # in the file names: another run never overwrites these
fig = figures.plot_losses(curves, title=f"{name}: {results.setting_of(runs, scale, [seed])}")
figures.show(fig, fig_dir / f"baselines_{method}_{tag}_losses")
curves.dropna(axis=1, how="all").tail()""",
     "md:## Example predictions (fixed validation sample)",
     """data = load_data(this.config)
images, columns, truth = results.val_samples([], data, max_images=4, before={name: this})
fig = figures.prediction_grid(images, {**columns, "ground truth": truth}, dataset, data.info.class_names, data.info.palette,
                              title=f"{name} on the first validation images: {results.setting_of(runs, scale, [seed])}")
figures.show(fig, fig_dir / f"baselines_{method}_{tag}_predictions")"""])

_ABLATION_PARAMS, _ABLATION_CELLS = reading_record(   # its curves are the validation mIoU's: a summary has them
    [("dataset", '"synth-street"', "synth-street or synth-objects"),
     ("drop", '"CR"', "component to drop: none, or a switch's label such as CR (ex.DROPS lists them)"),
     ("seed", "0", "seed of the split, initialisation and training")],
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="ablation")
runs = results.collect(grid.pairs, scale)
results.percent(runs[["variant", "stage", "val_miou", "pseudo_miou"]])""",
     """fig = figures.plot_val_miou({f"{s.variant}, stage {r.stage}": r.curves() for s, res in grid.pairs
                               for r in res.stages[1:]}, title=f"drop {drop}: {results.setting_of(runs, scale, [seed])}",
                         note=results.table_v_note(drop))
figures.show(fig, fig_dir / f"ablation_{drop}")"""])
NOTEBOOKS["ablation"] = notebook(
    "Ablation: drop one component", "The three-stage method with one component dropped, beside the full method.",
    _ABLATION_PARAMS + COMMON,
    SETUP + "\nspecs = ex.ablation_grid([dataset], [seed], drops=list(dict.fromkeys(['none', drop])))",
    _ABLATION_CELLS)

NOTEBOOKS["lambda_curve"] = collector(
    "λ1 curve", "Validation mIoU of Stage 3 against λ1 (λ2 = λ1) for one dataset.",
    [("dataset", '"synth-street"', "synth-street or synth-objects"),
     ("lambdas", "[0.125, 0.25, 0.5, 1.0]", "values of lambda1 (lambda2 equal to lambda1)")],
    "specs = ex.lambda_grid([dataset], lambdas, seeds)",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="lambda")
runs = results.collect(grid.pairs, scale)
table = results.lambda_table(runs)
table""",
     """fig = figures.plot_lambda(table, title=f"Stage 3 against λ1 (= λ2): {results.setting_of(runs, scale, seeds)}")
figures.show(fig, fig_dir / f"lambda_curve_{dataset}")"""], record=True)


def table_cells(stem, report):
    """Run the grid, write the table in the paper's layout (md, tex) and its tidy rows (csv), show it."""
    return [f"""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="{stem}")
runs = results.collect(grid.pairs, scale)
paths = results.write_table(path=fig_dir / "{stem}", **{report})
figures.show_markdown(paths["md"].read_text())"""]


BASELINE_PARAM = ("baselines: \"list or None\"", "None",
                  "baselines run at each label count; None: every one of ex.BASELINES (supervised is Stage 1: always shown)")

def label_table_notebook(stem, title, intro, stand_in, real, counts, caption):
    """Table II (street) or Tables III/IV (objects): the same notebook on a stand-in or its real dataset."""
    return collector(
        title, intro,
        [("dataset", f'"{stand_in}"', f"{stand_in} or {real} (read from files: give data_roots)"),
         ("labels: \"list or None\"", "None", f"the paper's label counts or fractions, scaled to the pool of the scale; None: all ({counts} for {stand_in}; the paper's for {real})"),
         ("full", "True", "also run full supervision (Stage 1 on the whole pool)"), BASELINE_PARAM],
        'specs = ex.label_grid(dataset, seeds, labels, full=full, baselines=list(ex.BASELINES) if baselines is None else baselines)',
        table_cells(stem, f'results.label_report(runs, dataset, scale, seeds, "{caption}")'), record=True)


NOTEBOOKS["table2"] = label_table_notebook(
    "table2", "Table II: synth-street (Cityscapes) label counts",
    "Supervised (= Stage 1), the mean teacher baselines Cutout and CutMix, Stage 2 and the three-stage method at "
    "each label count, and full supervision, beside Table II (French et al.'s published rows for the baselines).",
    STREET, ex.STAND_INS[STREET], counts(STREET), "Table II: mIoU against the number of labelled images")

NOTEBOOKS["table3_4"] = label_table_notebook(
    "table3_4", "Tables III and IV: synth-objects (VOC) label fractions",
    "Supervised (= Stage 1), Cutout and CutMix (mean teacher), Stage 2 and the three-stage method at each "
    "fraction (λ per fraction as in the paper), beside Tables III (ImageNet) and IV (ImageNet+COCO).",
    OBJECTS, ex.STAND_INS[OBJECTS], counts(OBJECTS), "Tables III and IV: mIoU against the labelled fraction")

NOTEBOOKS["table5"] = collector(
    "Table V: ablation study",
    "The full method and one run per switch of Table V dropped (ex.TABLE_V_DROPS); rows decoded as in docs/method.md. "
    "Then the same rows class by class: where each differs from the full method (`table5_per_class`).",
    [("datasets", '["synth-street", "synth-objects"]', ABLATION_COUNTS)],
    "specs = ex.ablation_grid(datasets, seeds)",
    table_cells("table5", 'results.rows_report(runs, "V", scale, seeds, "Table V: ablation study")') + [
        """# where each row differs from the full method, class by class (paired by seed)
per_class = results.ablation_per_class(results.per_class(grid.pairs))
paths = results.write_table(per_class, fig_dir / "table5_per_class",
                            results.caption("Table V class by class: each row's IoU minus the full method's",
                                            datasets, scale, seeds, measure="IoU difference (points) per class on "
                                            "the validation set, paired by seed"))
fig = figures.plot_ablation_per_class(per_class, title=f"Table V class by class: {results.setting_of(runs, scale, seeds)}")
figures.show(fig, fig_dir / "table5_per_class")"""], record=True)

NOTEBOOKS["headline"] = collector(
    "The headline: each published effect, ours beside the paper's",
    "Stages 1-3 of the method and full supervision on both stand-ins at the ablation label count (Table V's "
    "setting), over the seeds: full − Stage 1, Stage 2 − Stage 1 and Stage 3 − Stage 2 per seed (paired: the "
    "same split and initialisation), beside the paper's. The EMA teacher is the reported network in stages ≥ 2. "
    "Writes the per-seed rows (`stages_<scale>.csv`) and the headline (`headline.png`, `headline.md`).",
    [("datasets", '["synth-street", "synth-objects"]', "datasets (ablation label counts 100 and 60)")],
    "specs = ex.headline_grid(datasets, seeds)\nfrom selftrain_lib import headline\nfrom selftrain_lib.runs import atomic_write_text",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="headline")
rows = headline.stage_rows(grid.pairs)
csv = atomic_write_text(fig_dir / f"stages_{scale}.csv", rows.to_csv(index=False))
rows""",
     """table = headline.headline_table({scale: csv})
figures.show(headline.plot_headline(table, [scale]), fig_dir / "headline")
md = atomic_write_text(fig_dir / "headline.md", headline.headline_markdown(table, [scale]))
figures.show_markdown(md.read_text())"""], record=True)

NOTEBOOKS["table6"] = collector(
    "Table VI: EMA teacher", "Stages 2 and 3 with the EMA teacher and with the student as its own teacher.",
    [("datasets", '["synth-street", "synth-objects"]', ABLATION_COUNTS)],
    "specs = ex.ema_grid(datasets, seeds)",
    table_cells("table6", 'results.rows_report(runs, "VI", scale, seeds, "Table VI: the EMA teacher")'), record=True)

NOTEBOOKS["fig2"] = collector(
    "Figure 2: stage 3 with and without pseudo-masks",
    "L_con (left) and validation mIoU (right) over Stage 3 training, with and without L_pl (T2 on / off).",
    [("dataset", '"synth-objects"', "synth-objects (the paper: VOC 1/50) or synth-street")],
    "specs = ex.fig2_grid(dataset, seeds)",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="fig2")
by_variant = {s.variant: res.stages[2].curves() for s, res in grid.pairs if s.seed == seeds[0]}
runs = results.collect(grid.pairs, scale)
fig = figures.plot_fig2(by_variant["full method"], by_variant["without T2"],
                        title=f"Stage 3 with and without L_pl: {results.setting_of(runs, scale, seeds[:1])}")
figures.show(fig, fig_dir / "fig2")
results.percent(runs.query("stage == 3")[["variant", "seed", "val_miou"]])"""])

NOTEBOOKS["fig3"] = collector(
    "Figure 3: mIoU against λ1", "Stage 3 validation mIoU against λ1 (λ2 = λ1), both datasets, as a table beside "
    "the paper's Fig. 3 (read off the figure). The curve itself is drawn by the `lambda_curve` notebook.",
    [("datasets", '["synth-street", "synth-objects"]', ABLATION_COUNTS),
     ("lambdas", "[0.125, 0.25, 0.5, 1.0]", "values of lambda1 (lambda2 equal to lambda1)")],
    "specs = ex.lambda_grid(datasets, lambdas, seeds)",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="fig3")
table = results.lambda_table(results.collect(grid.pairs, scale))
paths = results.write_table(path=fig_dir / "fig3", **results.lambda_report(
    table, scale, seeds, "Figure 3: mIoU against lambda1 (lambda2 = lambda1), Stage 3"))
figures.show_markdown(paths["md"].read_text())"""], record=True)

NOTEBOOKS["fig4_5"] = collector(
    "Figures 4 and 5: example predictions",
    "Image, CutMix (mean teacher baseline), Stage 1, Stage 2, Stage 3, ground truth on the fixed validation "
    "sample (first seed), as in the paper. The runs are the tables' cells at the ablation label count.",
    [("datasets", '["synth-street", "synth-objects"]', "one grid per dataset (ablation label counts)"),
     ("num_images", "4", "rows of each grid")],
    "specs = ex.prediction_grid(datasets, seeds[:1])",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="fig4_5")
cutmix = {s.dataset: res.stages[0] for s, res in grid.pairs if s.options.get("method") == "mt-cutmix"}
runs = results.collect(grid.pairs, scale)
for s, res in grid.pairs:
    if s.stages != 3:
        continue
    data = load_data(res.config)
    images, columns, truth = results.val_samples(res.stages, data, num_images, before={"CutMix": cutmix[s.dataset]})
    fig = figures.prediction_grid(images, {**columns, "ground truth": truth}, s.dataset,
                                  data.info.class_names, data.info.palette,
                                  title="Figs. 4 and 5, the first validation images: "
                                        + results.setting_of(runs[runs["dataset"] == s.dataset], scale, seeds[:1]))
    figures.show(fig, fig_dir / f"fig4_5_{s.dataset}")"""])

NOTEBOOKS["pseudo_stages"] = collector(
    "Pseudo-mask quality on U across stages",
    "mIoU of each stage's pseudo-masks on the unlabelled set U (against its hidden ground truth).",
    [("datasets", '["synth-street", "synth-objects"]', ABLATION_COUNTS),
     ("stages", "4", "number of stages (the paper reports a 4th)")],
    "specs = ex.stages_grid(datasets, seeds, stages=stages)",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="pseudo_stages")
runs = results.collect(grid.pairs, scale)
table = results.pseudo_stage_table(runs)
paths = results.write_table(table, fig_dir / "pseudo_stages",
                            results.caption("Pseudo-mask mIoU on U across stages", datasets, scale, seeds,
                                            measure=results.PSEUDO_MEASURE))
figures.show_markdown(paths["md"].read_text())
fig = figures.plot_pseudo_stages(runs, title=f"Pseudo-masks on U: {results.setting_of(runs, scale, seeds)}")
figures.show(fig, fig_dir / "pseudo_stages")"""], record=True)

NOTEBOOKS["per_class_gains"] = collector(
    "Per-class IoU gains of Stage 3 over Stage 1", "Validation IoU per class, mean ± std over seeds.",
    [("datasets", '["synth-street", "synth-objects"]', ABLATION_COUNTS)],
    "specs = ex.stages_grid(datasets, seeds, stages=3)",
    ["""grid = ex.run_grid(specs, scale, out, jobs=jobs, data_roots=data_roots, config=config, desc="per_class_gains")
runs = results.collect(grid.pairs, scale)
gains = results.per_class_gains(results.per_class(grid.pairs))
results.write_table(gains, fig_dir / "per_class_gains",
                    results.caption("Per-class IoU gain of Stage 3 over Stage 1", datasets, scale, seeds,
                                    measure="IoU gain (points) per class on the validation set"))
fig = figures.plot_per_class_gains(gains, title=f"Stage 3 minus Stage 1: {results.setting_of(runs, scale, seeds)}")
figures.show(fig, fig_dir / "per_class_gains")
gains"""], record=True)

NOTEBOOKS["explore"] = notebook(
    "Explore the run cache",
    "Pick a dataset, a run, a stage and a pool image: Stage 1/2/3 beside the ground truth, the chosen stage's "
    "prediction over the image (opacity slider) and its error map; images ordered by their IoU (worst first), "
    "labelled ones marked; a second run (e.g. the mt-cutmix baseline) beside it. It opens on the run of the "
    "parameters below (trained first if the cache lacks it and `train` is True; else the newest run of `dataset`), "
    "its last stage and image 0. Needs a live kernel for the widgets; the static figure below shows the same choice.",
    [("dataset", '"synth-street"', "dataset the explorer opens on"),
     ("labels: \"int or fraction or full\"", "100", "the paper's label count (or fraction) of the run it opens on, scaled to the pool; or 'full'"),
     ("seed", "0", "seed of that run"),
     ("train: bool", "True", "train that run first if the cache lacks it; False: browse only what the cache holds")]
    + COMMON,
    SETUP + "\nfrom selftrain_lib import explore",
    ["""run = None   # None: the explorer opens on the newest run of `dataset` in the cache
if train:
    run = ex.run_grid([ex.spec(dataset, labels, seed)], scale, out, jobs=jobs, data_roots=data_roots, config=config,
                      desc="explore").pairs[0][1].final.run_hash
cached = results.list_runs(out)   # val_miou: the last step's; val_miou_best: the best evaluation during training
if len(cached):   # the paper's count with the count used beside it, as the explorer names runs
    cached["labels"] = [explore.labels_text(r.dataset, r.labels, r.pool_size) for r in cached.itertuples()]
results.percent(cached[["dataset", "labels", "seed", "method", "stage", "scale", "val_miou", "val_miou_best", "pseudo_miou", "run"]]) \
    if len(cached) else Markdown("The run cache is empty: set `train = True` or run a stage notebook.")""",
     """box = explore.explorer(out, dataset=dataset, run=run)   # its "val mIoU" toggle shows the last or the best
display(box)""",
     """fig = box.figure()   # the explorer's opening choice as a static figure (None: the cache is empty)
if fig is not None:
    figures.show(fig, fig_dir / "explore_example")"""])

ORDER = list(NOTEBOOK_ORDER)  # the execution order of `make paper-figures` (selftrain_lib.paper_figures)
assert sorted(ORDER) == sorted(NOTEBOOKS)


# README's Notebooks table: what each notebook makes (its parameters are read from the notebook). No
# row lists the switches or the baselines: they are taken by name (methods.SWITCHES, METHODS), so a
# new one changes no row.
OUTPUTS = {
    "stage1": "Stage 1: losses, val mIoU, pseudo-mask quality, predictions (`stage1_*`)",
    "stage2": "Stage 2 (runs Stage 1 if needed): `stage2_*`",
    "stage3": "Stage 3 (runs stages 1, 2 if needed): `stage3_*`",
    "baselines": "one baseline (`supervised` or one of `methods.BASELINES`) trained by the same code: losses, "
                 "predictions (`baselines_<method>_*`)",
    "ablation": "one component dropped (`none` or a switch's label, `experiments.DROPS`) beside the full method: "
                "`ablation_<drop>`",
    "lambda_curve": "mIoU against λ1 = λ2, one dataset: `lambda_curve_<dataset>`",
    "headline": "the headline: Stages 1-3 and full supervision on both stand-ins at the ablation label count, "
                "each effect per seed beside the paper's: `headline.{png,md}`, `stages_<scale>.csv`",
    "table2": "Table II (synth-street label counts: Supervised, the baselines, Stage 2, three-stage; full "
              "supervision): `table2.{md,tex,csv}`",
    "table3_4": "Tables III and IV (synth-objects fractions, same rows): `table3_4.*`",
    "table5": "Table V (the full method and one run per switch of Table V dropped): `table5.*`",
    "table6": "Table VI (EMA): `table6.*`",
    "fig2": "Figure 2 (stage 3 with / without L_pl: L_con and val mIoU over training): `fig2`",
    "fig3": "Figure 3's numbers (mIoU against λ1, both datasets, beside the paper's Fig. 3): `fig3` table (the "
            "curve: `lambda_curve_<dataset>`)",
    "fig4_5": "Figures 4, 5 (image, CutMix, Stage 1, 2, 3, ground truth): `fig4_5_<dataset>`",
    "pseudo_stages": "pseudo-mask mIoU on U across stages 1…4: `pseudo_stages` figure and table",
    "per_class_gains": "per-class IoU gain of Stage 3 over Stage 1: `per_class_gains` figure and table",
    "explore": "ipywidgets browser of the run cache: two runs side by side, Stage 1/2/3, overlay (opacity), error "
               "map, ground truth; images by IoU (worst first), labelled marked: `explore_example`",
}
README = ROOT / "README.md"
TABLE_BEGIN = "<!-- notebooks table: generated by tools/make_notebooks.py (edit OUTPUTS there and rerun it) -->"
TABLE_END = "<!-- end of the generated notebooks table -->"


def parameter_names(nb) -> list[str]:
    """The names the ``parameters`` cell of ``nb`` declares, in order."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return [line.split(":")[0].split("=")[0].strip() for line in cell.source.splitlines() if line.strip()]


def readme_table() -> str:
    """README's Notebooks table: one row per notebook (in ORDER), its parameters and what it makes."""
    assert sorted(OUTPUTS) == sorted(NOTEBOOKS), "every notebook needs its README row (OUTPUTS)"
    rows = ["| notebook | parameters | output (in `figures_dir`) |", "|---|---|---|"]
    for name in OUTPUTS:   # in the README's order: the stages, single runs, then the paper's tables and figures
        params = ", ".join(f"`{p}`" for p in parameter_names(NOTEBOOKS[name]))
        rows.append(f"| `{name}.ipynb` | {params} | {OUTPUTS[name]} |")
    return "\n".join(rows) + "\n"


def readme_with_table(text: str) -> str:
    """``text`` (README.md) with the generated table between its two markers."""
    if text.count(TABLE_BEGIN) != 1 or text.count(TABLE_END) != 1:
        raise ValueError(f"README.md: expected the markers {TABLE_BEGIN!r} and {TABLE_END!r} once each")
    head, rest = text.split(TABLE_BEGIN)
    _, tail = rest.split(TABLE_END)
    return f"{head}{TABLE_BEGIN}\n{readme_table()}{TABLE_END}{tail}"


def write(folder: Path = NB_DIR) -> list[Path]:
    """Write every notebook into ``folder``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ORDER:
        nb = NOTEBOOKS[name]
        for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives no spurious diff
            cell.id = f"{name}-{i}"
        nbformat.write(nb, folder / f"{name}.ipynb")
        paths.append(folder / f"{name}.ipynb")
    return paths


def main() -> None:
    print(f"wrote {len(write())} notebooks to {NB_DIR}")
    text = README.read_text(encoding="utf-8")
    new = readme_with_table(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"wrote the notebooks table of {README}")


if __name__ == "__main__":
    main()
