"""Every registered figure renders from a small evaluate output, and the report embeds them all."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT

from salbench.evaluate import EvalData, evaluate, parse_config
from salbench.evaluate.artifacts import load_entries, load_models, model_hash, save_report
from salbench.io import write_json
from salbench.plots import FIGURES, load_inputs, png_bytes, render_report
from salbench.plots.base import pyplot

sys.path.insert(0, str(ROOT / "tests" / "evaluate"))
from eval_helpers import EVALUATE, METHODS, write_setup

TASKS, MODELS = ["t"], ["cnn-m", "vit-m"]
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
    """data/ with evaluate outputs of a tiny CNN and ViT (task "t") and a DEPICT results.json."""
    root = tmp_path_factory.mktemp("data")
    for model in MODELS:
        work = root.parent / f"work-{model}"
        s = write_setup(work, model[:3])
        models = load_models(s["model_dir"], torch.device("cpu"), "train")
        data = EvalData(s["x"], torch.from_numpy(s["split"]["label"]), torch.from_numpy(s["split"]["gt_mask"]),
                        s["predicted"])
        entries = load_entries(METHODS, model[:3], work / "maps", models.model, model_hash(s["model_dir"]),
                               s["predicted"], 0, "attribute")
        report = evaluate(models, data, entries, parse_config(EVALUATE))
        save_report(report, root / "metrics" / "evaluate" / "t" / f"{model}.json",
                    root / "plots" / "evaluate" / "t" / model, root / "evaluate" / "t" / model,
                    {"task": "t", "model": model, "n_test": 8, "accuracy": 0.875})
    write_json(root / "concepts" / "permutation" / "results.json", DEPICT)
    return root


@pytest.mark.parametrize("name", FIGURES.names())
def test_figure_renders(data_root, name):
    inputs = load_inputs(data_root, TASKS, MODELS)
    fig = FIGURES.get(name).draw(inputs)
    png = png_bytes(fig, 40)
    pyplot().close(fig)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert fig.axes and any(ax.has_data() for ax in fig.axes)


def test_methods_keep_one_colour(data_root):
    inputs = load_inputs(data_root, TASKS, MODELS)
    assert inputs.methods[:3] == ["gradient", "gradcam", "lrp"] and len(set(map(tuple, inputs.colors.values()))) == len(inputs.methods)


def test_stage_writes_figures_and_a_self_contained_report(data_root, tmp_path):
    params = {"attribute": {"tasks": TASKS}, "train": {"models": {m: {} for m in MODELS}}, "plot": {"figures": FIGURES.names(), "dpi": 40}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "plot.py"), "--params", str(tmp_path / "params.yaml"), "--data",
           str(data_root), "--figures", str(tmp_path / "figures"), "--report", str(tmp_path / "report")]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == FIGURES.names()
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(FIGURES.names())
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing external
    assert "n=7" in page and "red_cube" in page


def test_missing_evaluate_output_names_the_stage(data_root, tmp_path):
    params = {"attribute": {"tasks": TASKS}, "train": {"models": {"cnn-m": {}, "other": {}}}, "plot": {"figures": ["examples"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "plot.py"), "--params", str(tmp_path / "params.yaml"), "--data",
           str(data_root), "--figures", str(tmp_path / "f"), "--report", str(tmp_path / "r")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert proc.returncode == 2 and "dvc repro evaluate@t-other" in proc.stderr


def test_report_tables_show_ci_and_counts(data_root):
    html = render_report(load_inputs(data_root, TASKS, MODELS), {})
    assert re.search(r"1\.000 <small>\[1\.000, 1\.000\] n=7</small>", html)  # gradient's maps are the GT masks
