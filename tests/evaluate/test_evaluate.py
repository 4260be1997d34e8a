"""The evaluate runner and stage on a tiny fabricated setup (eval_helpers.write_setup)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from eval_helpers import ATTRIBUTE, EVALUATE, METHODS, write_setup
from helpers import ROOT

from salbench.evaluate import EvalData, evaluate, headlines, parse_config, run_metric, summarise
from salbench.evaluate.artifacts import load_entries, load_models, model_hash, table_rows
from salbench.evaluate.suite import flat_perturbation
from salbench.io import StaleArtifactError
from salbench.metrics import Combined, MetricInputs, Values, summary
from salbench.params import ParamsError
from salbench.registry import UnknownNameError
from salbench.results import check_rows

POOLINGS = EVALUATE["metrics"]["mass_accuracy"]["sweep"]["pooling"]


def _run(root: Path, family: str):
    s = write_setup(root, family)
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    labels = torch.from_numpy(s["split"]["label"])
    data = EvalData(s["x"], labels, torch.from_numpy(s["split"]["gt_mask"]), s["predicted"])
    entries = load_entries(METHODS, family, root / "maps", models.model, model_hash(s["model_dir"]), data,
                           s["predicted"], 0, "attribute@t-m")
    report = evaluate(models, data, entries, parse_config(EVALUATE))
    return check_rows(table_rows(report, "t", "m", family)), report


def _get(rows, **match):
    out = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return out


@pytest.fixture(scope="module", params=["cnn", "vit"])
def run(request, tmp_path_factory):
    return (request.param, *_run(tmp_path_factory.mktemp(request.param), request.param))


def test_every_metric_for_every_method_with_counts(run):
    family, rows, report = run
    compared = {"gradient", "gradcam", "random"} | ({"lrp"} if family == "cnn" else set())
    scalar = {r["method"] for r in rows if r["metric"] == "mass_accuracy" and "layer_study" not in r["variant"]}
    assert scalar == compared  # gradcam@1 is a layer-study extra, lrp is CNN-only
    for method in compared:
        metrics = {r["metric"] for r in _get(rows, method=method)}
        expected = {"mass_accuracy", "rank_accuracy", "pointing_game", "aopc", "perturbation_curve"}
        expected |= {n for n, s in EVALUATE["metrics"].items() if method in (s.get("methods") or [])}
        if method == "gradcam":
            expected |= {"class_sensitivity"}
        assert metrics == expected, method
        assert {r["variant"] for r in _get(rows, method=method, metric="mass_accuracy")} >= {
            f"pooling={p}" for p in POOLINGS}
    (acc,) = _get(rows, metric="accuracy")
    assert (acc["method"], acc["role"], acc["mean"], acc["n"]) == ("", "", 7 / 8, 8)
    (ma,) = _get(rows, method="gradient", metric="mass_accuracy", variant="pooling=l2_sq")
    assert ma["n"] + ma["n_undefined"] == 7  # sample 0 is misclassified and not scored
    (cs,) = _get(rows, method="gradcam", metric="class_sensitivity", variant="")
    assert cs["n"] + cs["n_undefined"] == 3  # over all `samples` images
    assert {r["role"] for r in _get(rows, method="random")} == {"control"}


def test_conventions_of_curves_layers_and_meta(run):
    family, rows, report = run
    cascading = _get(rows, method="gradcam", metric="cascading_randomization")
    steps = sorted({(r["step"], r["step_label"]) for r in cascading})
    assert [s for s, _ in steps] == list(range(1, len(steps) + 1)) and {r["statistic"] for r in cascading} == {
        "spearman_abs", "ssim"}
    assert steps[0][1].endswith("fc" if family == "cnn" else "head")  # output block first
    curve = _get(rows, method="gradient", metric="perturbation_curve", variant="order=morf")
    assert [r["step"] for r in curve] == [0.0, 0.5, 1.0] and {r["statistic"] for r in curve} == {"score"}
    layers = sorted(_get(rows, metric="mass_accuracy", variant="layer_study=1,pooling=l1"), key=lambda r: r["step"])
    assert [(r["method"], r["step"]) for r in layers] == [("gradcam", 1.0), ("gradcam", 2.0)]  # input to output
    assert layers[0]["step_label"] == ("layer1" if family == "cnn" else "blocks.0.norm1")
    meta = {(r["metric"], r["variant"]) for r in _get(rows, method="gradcam") if "saliency" in r["variant"]}
    assert meta == {("mass_accuracy", "pooling=l1,saliency=plain"), ("mass_accuracy", "pooling=l1,saliency=meta"),
                    ("class_sensitivity", "saliency=plain"), ("class_sensitivity", "saliency=meta")}
    cose = {(r["variant"], r["statistic"]) for r in _get(rows, metric="cose")}
    assert cose == {(f"split={s}", st) for s in ("geometric", "photometric", "model_change", "all")
                    for st in ("C", "S", "cose")}
    assert report.examples["cascade/gradcam"].shape[:2] == (2, len(steps) + 1)
    assert {"layer/gradcam/1", "layer/gradcam/2", "map/gradient"} <= set(report.examples)


def test_maps_equal_to_the_gt_mask_score_one(tmp_path):
    rows, _ = _run(tmp_path, "cnn")
    gradient = [r for r in _get(rows, method="gradient") if r["metric"] in ("mass_accuracy", "rank_accuracy",
                                                                            "pointing_game")
                and "saliency" not in r["variant"]]
    assert len(gradient) == 2 * len(POOLINGS) + 1  # its cached maps are the GT masks (eval_helpers)
    for r in gradient:
        assert r["mean"] == pytest.approx(1.0) and r["n"] == 7, r
    (random,) = _get(rows, method="random", metric="mass_accuracy", variant="pooling=l1")
    assert random["mean"] < 0.5


def test_summarise_known_values():
    values = torch.tensor([0.2, 0.4, math.nan, 0.9, 1.0], dtype=torch.float64)
    scored = torch.tensor([True, True, True, True, False])
    s = summarise(Values(values), scored, n_boot=200, seed=3)
    assert s == summary(values, scored, n_boot=200, seed=3)
    assert s["mean"] == pytest.approx(0.5) and (s["n"], s["n_undefined"]) == (3, 1)
    # values of other samples (pairs): a value counts where its sample is scored
    pairs = summarise(Values(torch.tensor([1.0, 3.0, 5.0]), sample=torch.tensor([4, 0, 0])), scored, 50, 0)
    assert pairs["mean"] == 4.0 and pairs["n"] == 2
    # a combined statistic: both parts resampled from one generator in order, then combined
    c = Values(torch.tensor([0.9, 0.7], dtype=torch.float64), sample=torch.tensor([0, 1]))
    s2 = Values(torch.tensor([0.8, 0.6, 0.4], dtype=torch.float64), sample=torch.tensor([1, 2, 3]))
    both = summarise(Combined((c, s2), lambda a, b: (a * b).sqrt(), "cose"), torch.ones(5, dtype=torch.bool), 100, 0)
    assert both["mean"] == pytest.approx(math.sqrt(0.8 * 0.6)) and (both["n"], both["n_undefined"]) == (5, 0)
    g = torch.Generator().manual_seed(0)
    from salbench.metrics.bootstrap import bootstrap_means, percentile_interval

    boot = (bootstrap_means(c.values, 100, g) * bootstrap_means(s2.values, 100, g)).sqrt()
    assert (both["ci_low"], both["ci_high"]) == pytest.approx(percentile_interval(boot, 0.95))
    nothing = Values(torch.empty(0), sample=torch.empty(0, dtype=torch.long))
    empty = summarise(Combined((c, nothing), lambda a, b: a, "x"), torch.ones(5, dtype=torch.bool), 10, 0)
    assert math.isnan(empty["mean"]) and empty["n"] == 0


def test_run_metric_rows_follow_the_sweep_and_the_scored_samples(tmp_path):
    s = write_setup(tmp_path, "cnn")
    labels = torch.from_numpy(s["split"]["label"])
    maps = torch.from_numpy(s["split"]["gt_mask"]).float()[:, None]
    inputs = MetricInputs(s["model"], s["x"], labels, s["predicted"], maps, torch.from_numpy(s["split"]["gt_mask"]))
    spec = parse_config({"metrics": {"mass_accuracy": {"sweep": {"pooling": ["l1", "max_norm"]}}}}).specs[0]
    rows = run_metric(spec, inputs, n_boot=20, seed=0)
    assert [(r["metric"], r["variant"], r["statistic"], r["n"]) for r in rows] == [
        ("mass_accuracy", "pooling=l1", "value", 7), ("mass_accuracy", "pooling=max_norm", "value", 7)]
    spec = parse_config({"metrics": {"aopc": {"steps": 3, "patch": 8, "sweep": {"order": ["lerf"]}}}}).specs[0]
    rows = run_metric(spec, inputs, n_boot=20, seed=0)
    assert [(r["metric"], r["variant"], r["statistic"], r["step"]) for r in rows][:2] == [
        ("aopc", "order=lerf", "value", rows[0]["step"]), ("perturbation_curve", "order=lerf", "score", 0.0)]
    assert math.isnan(rows[0]["step"]) and len(rows) == 4
    with torch.no_grad():
        p = s["model"](s["x"]).softmax(1).max(1).values
    assert rows[1]["mean"] == pytest.approx(p[labels == s["predicted"]].double().mean().item())


def test_headlines_pick_the_best_saliency_method():
    def row(method, metric, variant, statistic, mean, step=math.nan, role="method"):
        return {"method": method, "role": role, "metric": metric, "variant": variant, "statistic": statistic,
                "step": step, "mean": mean, "n": 10}

    rows = [row("", "accuracy", "", "value", 0.9, role=""),
            row("a", "mass_accuracy", "pooling=l2_sq", "value", 0.4), row("b", "mass_accuracy", "pooling=l2_sq",
                                                                          "value", 0.6),
            row("edge", "mass_accuracy", "pooling=l2_sq", "value", 0.9, role="control"),  # controls are left out
            row("c", "mass_accuracy", "pooling=l1", "value", 0.99),
            row("a", "class_sensitivity", "", "value", 0.2), row("b", "class_sensitivity", "", "value", math.nan),
            row("a", "cascading_randomization", "", "spearman_abs", 0.1, 1.0),
            row("a", "cascading_randomization", "", "spearman_abs", 0.5, 2.0),
            row("b", "cascading_randomization", "", "spearman_abs", 0.3, 2.0)]
    out = headlines(rows)
    assert out == {"accuracy": 0.9, "n_test": 10, "mass_accuracy": {"best": "b", "value": 0.6},
                   "class_sensitivity": {"lowest": "a", "value": 0.2},
                   "cascading_final": {"lowest": "b", "value": 0.3}}


@pytest.mark.parametrize("change, message", [
    ({"metrics": {"mass_acuracy": {}}}, "Did you mean 'mass_accuracy'"),
    ({"metric": {}}, "did you mean 'metrics'"),
    ({"metrics": {"mass_accuracy": {"sweep": {"pooling": "l1"}}}}, "non-empty list"),
    ({"metrics": {"aopc": {"sweep": {"order": ["most"]}}}}, "unknown order 'most'"),
    ({"metrics": {"aopc": {"baseline": "black"}}}, "unknown baseline .black.; known: a number or one of"),
    ({"perturbation": {}}, "unknown key"),
    ({"meta_saliency": {"lr": 0, "methods": ["gradient"]}}, "positive learning rate"),
])
def test_bad_params_name_the_fix(change, message):
    with pytest.raises((ParamsError, UnknownNameError), match=message):
        parse_config({**EVALUATE, **change})


def _stage(root: Path, evaluate_params: dict) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(yaml.safe_dump({"attribute": ATTRIBUTE, "evaluate": evaluate_params}))
    cmd = [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--task", "t", "--model", "m", "--params",
           str(root / "params.yaml"), "--data", str(root / "render"), "--models", str(root / "models"),
           "--maps", str(root / "maps"), "--results", str(root / "results" / "t" / "m.csv"), "--metrics",
           str(root / "metrics.json"), "--out", str(root / "out")]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=root)


@pytest.mark.slow  # three stage subprocesses: ~30 s on an idle 2-core machine, much more when it is shared
def test_stage_writes_the_table_headlines_and_examples(tmp_path):
    from salbench.results import read_results

    write_setup(tmp_path, "cnn")
    proc = _stage(tmp_path, EVALUATE)
    assert proc.returncode == 0, proc.stderr
    table = read_results(tmp_path / "results" / "t" / "m.csv")
    first = (tmp_path / "results" / "t" / "m.csv").read_bytes()
    row = table[(table["method"] == "gradient") & (table["metric"] == "mass_accuracy")
                & (table["variant"] == "pooling=l2_sq")].iloc[0]
    assert row["mean"] == pytest.approx(1.0) and row["n"] == 7 and row["family"] == "cnn"
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["accuracy"] == pytest.approx(7 / 8) and out["n_test"] == 8
    assert out["mass_accuracy"] == {"best": "gradient", "value": 1.0}
    assert len(json.dumps(out)) < 1000  # a few headline numbers, not the whole table
    assert (tmp_path / "out" / "examples.safetensors").exists()

    assert _stage(tmp_path, EVALUATE).returncode == 0
    assert (tmp_path / "results" / "t" / "m.csv").read_bytes() == first  # byte-identical rerun

    (tmp_path / "maps" / "lrp" / "manifest.json").unlink()
    proc = _stage(tmp_path, EVALUATE)
    assert proc.returncode == 2 and "dvc repro attribute@t-m" in proc.stderr


def test_stale_maps_name_the_attribute_stage(tmp_path):
    s = write_setup(tmp_path, "cnn")
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    other_targets = (s["predicted"] + 1) % 3  # maps were cached for other targets
    labels = torch.from_numpy(s["split"]["label"])
    with pytest.raises(StaleArtifactError, match=r"explained targets changed.*dvc repro attribute@t-m"):
        load_entries(METHODS, "cnn", tmp_path / "maps", models.model, model_hash(s["model_dir"]),
                     EvalData(s["x"], labels, torch.from_numpy(s["split"]["gt_mask"]), s["predicted"]),
                     other_targets, 0, "attribute@t-m")


def test_flat_perturbation_flags_curves_that_ignore_the_maps() -> None:
    """The black-baseline failure seen on the default models: after the first step every curve sits at the same
    value whatever the method and order."""
    fractions = [0.0, 0.5, 1.0]

    def rows(curves: dict) -> list[dict]:
        return [{"method": m, "metric": "perturbation_curve", "variant": f"order={o}", "step": f, "mean": v}
                for (m, o), values in curves.items() for f, v in zip(fractions, values)]

    flat = {(m, o): [0.873, 0.1111, 0.1111] for m in ("gradient", "gradcam") for o in ("morf", "lerf")}
    flat[("gradient", "lerf")] = [0.873, 0.1127, 0.1111]  # as measured: a spread of 0.0016 at the first step
    assert flat_perturbation(rows(flat))
    informative = {**flat, ("gradcam", "lerf"): [0.89, 0.80, 0.15625]}
    assert not flat_perturbation(rows(informative))
    assert not flat_perturbation(rows({("gradient", "morf"): [0.9, 0.1, 0.1]}))  # one curve: nothing to compare


def test_an_entry_with_its_own_explain_loads_the_maps_the_stage_keyed(tmp_path):
    """attribute.methods.<entry>.explain: the attribute stage keys such an entry's maps by the classes it explains
    (here the true labels), not by the stage's predicted classes; evaluate must find them."""
    from salbench.attribution.cache import save_maps

    s = write_setup(tmp_path, "cnn")
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    labels = torch.from_numpy(s["split"]["label"])
    spec = {"method": "gradient", "explain": "true"}
    maps = torch.rand(len(labels), 3, 32, 32)
    save_maps(tmp_path / "maps" / "gradient_true", maps, labels, model_hash=model_hash(s["model_dir"]),
              method="gradient_true", params=spec, layer=None, seed=0)
    data = EvalData(s["x"], labels, torch.from_numpy(s["split"]["gt_mask"]), s["predicted"])
    entries = load_entries({"gradient_true": spec}, "cnn", tmp_path / "maps", models.model, model_hash(s["model_dir"]),
                           data, s["predicted"], 0, "attribute@t-m")
    loaded, targets = entries["gradient_true"].read(0, None)
    assert torch.equal(targets, labels) and not torch.equal(labels, s["predicted"])
    torch.testing.assert_close(loaded, maps)
