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
from plot_synthetic import METHODS, write_data  # noqa: E402

TASKS, MODELS = ["t"], {"cnn-m": "cnn", "vit-m": "vit"}
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
    write_json(root / "concepts" / "permutation" / "results.json", DEPICT)
    results = Results(load_results(root / "results"))
    write_outputs(evaluate_findings(Inputs(results, None)), controls_table(results), root / "findings",
                  root / "metrics" / "findings.json")
    return root


@pytest.mark.parametrize("name", FIGURES.names())
def test_figure_renders_from_the_table_alone(data_root, name):
    inputs = load_inputs(data_root, TASKS, list(MODELS))
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
    params = {"attribute": {"tasks": TASKS}, "train": {"models": {m: {} for m in MODELS}},
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
