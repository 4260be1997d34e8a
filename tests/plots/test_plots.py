"""Every registered figure renders from a results table and example arrays alone (synthetic, no model), a sweep
edited in params shows up without code edits, and the report embeds every figure with the key tables."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from salbench.findings import Inputs, Results, controls_table, evaluate_findings, load_results, write_outputs
from salbench.io import write_json
from salbench.plots import FIGURES, load_inputs, png_bytes, ranking_agreement, render_report
from salbench.plots.base import pyplot

sys.path.insert(0, str(Path(__file__).parent))
from plot_synthetic import METHODS, VQA_METHODS, write_data, write_vqa_data  # noqa: E402

TASKS, MODELS = ["t"], {"cnn-m": "cnn", "vit-m": "vit"}
VQA_TASKS = {"vqa-simple": ("single_object", "all_objects"),
             "vqa-complex": ("unique", "unique_first_nonempty", "union", "all_objects")}
VQA_MODELS = ["film-m", "rn-m"]
DEPICT = {"models": {m: {
    "true": {"importance": {"red_cube": 0.4, "blue_sphere": 0.3, "green_cylinder": 0.0}, "ranking":
             ["red_cube", "blue_sphere", "green_cylinder"]},
    "generators": {g: {"importance": {c: {"mean": v, "std": 0.02, "values": [v]} for c, v in
                                      (("red_cube", 0.35), ("blue_sphere", 0.2), ("green_cylinder", None))},
                       "ranking": ["red_cube", "blue_sphere", "green_cylinder"], "spearman_true": 1.0,
                       "spearman_saliency": 0.5, "check1": {"f": 0.01}, "check2": {"max_abs_other": 0.03}}
                   for g in ("renderer", "diffusion")}} for m in MODELS}}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """data/ with synthetic results tables and examples of a CNN and a ViT (task "t") and DEPICT results."""
    root = tmp_path_factory.mktemp("data")
    write_data(root, "t", MODELS)
    for task, gts in VQA_TASKS.items():
        write_vqa_data(root, task, VQA_MODELS, gts)
    write_json(root / "concepts" / "permutation" / "results.json", DEPICT)
    results = Results(load_results(root / "results"))
    write_outputs(evaluate_findings(Inputs(results, None)), controls_table(results), root / "findings",
                  root / "metrics" / "findings.json")
    return root


def inputs_with_vqa(root: Path):
    return load_inputs(root, TASKS, list(MODELS), vqa_tasks=list(VQA_TASKS), vqa_models=VQA_MODELS)


@pytest.mark.parametrize("name", FIGURES.names())
def test_figure_renders_from_the_table_alone(data_root, name):
    inputs = inputs_with_vqa(data_root)
    fig = FIGURES.get(name).draw(inputs)
    png = png_bytes(fig, 40)
    pyplot().close(fig)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert fig.axes and any(ax.has_data() for ax in fig.axes)


def test_methods_keep_one_colour_and_controls_come_last(data_root):
    inputs = load_inputs(data_root, TASKS, list(MODELS))
    assert inputs.methods == ["gradcam", "gradient", "normgrad", "edge", "random"]
    assert set(inputs.methods) == set(METHODS) and len(set(map(tuple, inputs.colors.values()))) == len(METHODS)


def test_an_edited_sweep_shows_up_without_code_edits(tmp_path):
    write_data(tmp_path, "t", {"cnn-m": "cnn"}, poolings=["max_norm", "l2"])
    inputs = load_inputs(tmp_path, TASKS, ["cnn-m"], depict=False)
    fig = FIGURES.get("clevr_xai").draw(inputs)
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    pyplot().close(fig)
    assert ticks == ["l2", "max_norm"]  # the table's poolings, in table (sorted) order


def test_ranking_agreement_hand_computed(data_root):
    inputs = load_inputs(data_root, TASKS, ["cnn-m"], depict=False)
    t = inputs.runs[0].table.copy()
    gt = {"gradcam": 0.9, "gradient": 0.5, "normgrad": 0.1}
    morf = {"gradcam": 0.8, "gradient": 0.6, "normgrad": 0.2}  # same order as gt: +1
    lerf = {"gradcam": 0.1, "gradient": 0.2, "normgrad": 0.3}  # lower is better: +1 after the sign flip
    pg = {"gradcam": 0.0, "gradient": 1.0, "normgrad": 0.5}  # ranks 1,3,2 vs 3,2,1: rho = 1 - 6*(4+1+1)/24 = -0.5
    for (metric, v), values in {("mass_accuracy", "pooling=l1"): gt, ("aopc", "order=morf"): morf,
                                ("aopc", "order=lerf"): lerf, ("pointing_game", ""): pg}.items():
        for m, x in values.items():
            t.loc[(t["method"] == m) & (t["metric"] == metric) & (t["variant"] == v), "mean"] = x
    out = {(r["aopc"], r["metric"], r["variant"]): (r["spearman"], r["n_methods"]) for r in ranking_agreement(t)}
    assert out[("morf", "mass_accuracy", "pooling=l1")] == (1.0, 3)  # controls (random, edge) left out
    assert out[("lerf", "mass_accuracy", "pooling=l1")] == (1.0, 3)
    assert out[("morf", "pointing_game", "")] == (-0.5, 3)
    assert ("morf", "mass_accuracy", "pooling=l1,saliency=meta") not in out  # meta-saliency rows are not compared


def _plot_stage(params: dict, data: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "plot.py"), "--params", str(tmp_path / "params.yaml"), "--data",
           str(data), "--figures", str(tmp_path / "figures"), "--report", str(tmp_path / "report")]
    return subprocess.run(cmd, check=False, capture_output=True, text=True)


def test_stage_writes_figures_and_a_self_contained_report(data_root, tmp_path):
    params = {"attribute": {"tasks": TASKS}, "train": {"models": {m: {} for m in MODELS}, "vqa_tasks": list(VQA_TASKS),
                                                       "vqa_models": {m: {} for m in VQA_MODELS}},
              "plot": {"figures": FIGURES.names(), "dpi": 40}}
    proc = _plot_stage(params, data_root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == FIGURES.names()
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(FIGURES.names())
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing external
    assert "red_cube" in page and "exceeds 1" in page  # DEPICT table; S and COSE are not clipped
    # the findings (stage findings) open the report, before the first figure
    assert page.index("Does each paper reproduce?") < page.index("<figure>")
    assert "clevr_xai_ordering_cnn" in page


def test_missing_results_name_the_evaluate_stage(data_root, tmp_path):
    params = {"attribute": {"tasks": TASKS}, "train": {"models": {"cnn-m": {}, "other": {}}},
              "plot": {"figures": ["examples"]}}
    proc = _plot_stage(params, data_root, tmp_path)
    assert proc.returncode == 2 and "dvc repro evaluate@t-other" in proc.stderr


def test_report_tables_show_ci_and_counts(data_root):
    page = render_report(load_inputs(data_root, TASKS, list(MODELS)), {})
    # synthetic gradient (2nd method): mass accuracy (l2_sq) 2/6 ± 0.05 over n = 7; test accuracy 0.875 on 8
    assert re.search(r"0\.333 <small>\[0\.283, 0\.383\] n=7</small>", page)
    assert "test accuracy 0.875 on 8 images" in page and "edge <small>(control)</small>" in page


def test_vqa_figures_skip_without_vqa_results(data_root, tmp_path):
    inputs = load_inputs(data_root, TASKS, list(MODELS), depict=False, vqa_tasks=["vqa-simple"], vqa_models=["none"])
    assert inputs.vqa == [] and "no VQA results" in FIGURES.get("vqa_gt").skip(inputs)
    with_rows = inputs_with_vqa(data_root)
    for run in with_rows.vqa:  # results but no example arrays (evaluate.examples: 0): only vqa_questions skips
        run.examples = {}
    assert FIGURES.get("vqa_gt").skip(with_rows) is None
    with_rows.runs = []  # VQA only (attribute.tasks: []): the classifier figures skip, DEPICT's does not
    assert "no classifier results" in FIGURES.get("clevr_xai").skip(with_rows)
    assert FIGURES.get("depict").skip(with_rows) is None and FIGURES.get("vqa_gt").skip(with_rows) is None
    assert "no VQA example arrays" in FIGURES.get("vqa_questions").skip(with_rows)
    params = {"attribute": {"tasks": TASKS}, "train": {"models": {m: {} for m in MODELS}},
              "plot": {"figures": ["vqa_gt", "vqa_questions"], "dpi": 30}}
    proc = _plot_stage(params, data_root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[plot] skipped vqa_gt: no VQA results" in proc.stdout and "skipped vqa_questions" in proc.stdout
    assert list((tmp_path / "figures").glob("*.png")) == []
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Not drawn: <b>CLEVR-XAI VQA: mass and rank accuracy by ground truth</b> (no VQA results" in page
    assert "Visual question answering" not in page


def test_vqa_gt_draws_every_gt_kind_with_cis(data_root):
    inputs = inputs_with_vqa(data_root)
    assert [(r.task, r.model) for r in inputs.vqa] == [(t, m) for t in VQA_TASKS for m in VQA_MODELS]
    fig = FIGURES.get("vqa_gt").draw(inputs)
    axes = fig.axes
    # 2 metrics x 4 runs, simple before complex; one bar per method x GT kind with the table's mean
    assert [ax.get_title().split("\n")[0] for ax in axes[:4]] == [
        "vqa-simple / film-m", "vqa-simple / rn-m", "vqa-complex / film-m", "vqa-complex / rn-m"]
    assert axes[0].get_title().endswith("mass accuracy (l2_sq)") and axes[4].get_title().endswith("(max_norm)")
    heights = [b.get_height() for b in axes[2].patches]
    assert len(heights) == 4 * len(VQA_METHODS)
    # vqa-complex, GT kind j (first series: unique): lrp, IG, G×I, random have means 0.8, 0.6, 0.4, 0.2 minus 0.05 j;
    # bars in table order (alphabetical, controls last)
    assert heights[:len(VQA_METHODS)] == pytest.approx([0.4, 0.6, 0.8, 0.2])
    assert heights[len(VQA_METHODS):2 * len(VQA_METHODS)] == pytest.approx([0.35, 0.55, 0.75, 0.15])
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == list(VQA_TASKS["vqa-complex"])
    pyplot().close(fig)


def test_vqa_questions_shows_texts_answers_and_gt_outlines(data_root):
    inputs = inputs_with_vqa(data_root)
    fig = FIGURES.get("vqa_questions").draw(inputs)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    run = inputs.vqa[0]
    ex = run.examples
    answer, predicted = (run.answer(int(ex[k][0, 0])) for k in ("vqa/answers", "vqa/predictions"))
    assert texts[0] == (f"vqa-simple / film-m\nWhat colour is the large metal\nthing number 0?\nanswer: {answer}\n"
                        f"predicted: {predicted} " + ("✓" if answer == predicted else "✗"))
    assert answer in ("no", "yes", "0", "1", "2", "red", "blue", "cube", "sphere")  # from vqa.json
    assert len(texts) == 4 * 3  # 4 runs x K = 3 questions (<= QUESTIONS)
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    # question 1 has an empty first GT kind: its outline falls back to the next kind
    assert labels[:3] == ["GT: single_object", "GT: all_objects", "GT: single_object"]
    assert labels[6:9] == ["GT: unique", "GT: unique_first_nonempty", "GT: unique"]
    pyplot().close(fig)


def test_report_has_a_vqa_section_with_accuracies_and_cis(data_root):
    page = render_report(inputs_with_vqa(data_root), {})
    section = page[page.index("Visual question answering"):]
    assert section.index("vqa-simple / film-m") < section.index("vqa-complex / film-m")
    assert "per question family: query_color 0.950 <small>[0.900, 1.000] n=20</small>" in section
    # lrp (1st VQA method): mass accuracy 0.8 for the first GT kind; question sensitivity 0.2; random 1.0
    assert "<th>mass acc. single_object (l2_sq) ↑</th>" in section and "<th>pointing union ↑</th>" in section
    assert "<td>lrp</td><td>0.800 <small>[0.750, 0.850] n=7</small></td>" in section
    assert "0.200 <small>[0.150, 0.250] n=15</small>" in section
