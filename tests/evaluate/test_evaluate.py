"""The evaluate library and stage on a tiny fabricated setup (eval_helpers.write_setup)."""
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

from salbench.evaluate import (
    EvalData,
    evaluate,
    parse_config,
    perturbation_scores,
    randomization_rows,
    ranking_agreement,
)
from salbench.evaluate.artifacts import load_entries, load_models, model_hash
from salbench.evaluate.suite import flat_perturbation
from salbench.io import StaleArtifactError
from salbench.metrics import METRICS, MetricInputs
from salbench.params import ParamsError
from salbench.registry import UnknownNameError

POOLINGS = EVALUATE["metrics"]["mass_accuracy"]["sweep"]["pooling"]


def _run(root: Path, family: str):
    s = write_setup(root, family)
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    data = EvalData(s["x"], torch.from_numpy(s["split"]["label"]), torch.from_numpy(s["split"]["gt_mask"]),
                   s["predicted"])
    entries = load_entries(METHODS, family, root / "maps", models.model, model_hash(s["model_dir"]), s["predicted"],
                           0, "attribute@t-m")
    return evaluate(models, data, entries, parse_config(EVALUATE)), models, data


def _expected_prefixes(entry: str) -> set[str]:
    out = {"aopc_morf", "aopc_lerf"}
    for name, spec in EVALUATE["metrics"].items():
        if spec.get("methods") is None or entry in spec["methods"]:
            out.add(name)
    return out


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_every_metric_for_every_method_with_counts(tmp_path, family):
    report, _, _ = _run(tmp_path, family)
    compared = {"gradient", "gradcam", "random"} | ({"lrp"} if family == "cnn" else set())
    assert set(report.methods) == compared  # gradcam@1 is a layer-study extra, lrp is CNN-only
    for entry, results in report.methods.items():
        prefixes = {k.split("/")[0] for k in results}
        assert prefixes == _expected_prefixes(entry), entry
        assert all({"mean", "ci_low", "ci_high", "n", "n_undefined"} <= set(s) for s in results.values())
        assert {f"mass_accuracy/{p}" for p in POOLINGS} <= set(results)
        assert results["mass_accuracy/l2_sq"]["n"] == 7  # sample 0 is misclassified and not scored
    assert report.methods["gradcam"]["class_sensitivity"]["n"] + \
        report.methods["gradcam"]["class_sensitivity"]["n_undefined"] == 3  # over all `samples` images
    cascading = {k for k in report.methods["gradcam"] if k.startswith("cascading_randomization/")}
    assert len(cascading) == 2 * len(report.blocks)  # two similarities per block
    assert set(report.layers[0]) >= {"group", "entry", "layer", "metric", "mean", "n"}
    assert [r["entry"] for r in report.layers] == ["gradcam@1", "gradcam"]  # input to output, as listed
    assert set(report.meta["gradcam"]) == {"plain", "meta"}
    assert report.examples["cascade/gradcam"].shape == (2, len(report.blocks) + 1, 32, 32)


def test_maps_equal_to_the_gt_mask_score_one(tmp_path):
    report, _, _ = _run(tmp_path, "cnn")
    gradient = report.methods["gradient"]  # its cached maps are the GT masks (eval_helpers)
    for key in [f"{m}/{p}" for m in ("mass_accuracy", "rank_accuracy") for p in POOLINGS] + ["pointing_game"]:
        assert gradient[key]["mean"] == pytest.approx(1.0) and gradient[key]["n"] == 7, key
    assert report.methods["random"]["mass_accuracy/l1"]["mean"] < 0.5


def test_perturbation_scores_match_the_registered_aopc_metrics(tmp_path):
    s = write_setup(tmp_path, "cnn")
    model, x, predicted = s["model"], s["x"], s["predicted"]
    labels = torch.from_numpy(s["split"]["label"])
    maps = torch.randn(len(x), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    data = EvalData(x, labels, torch.from_numpy(s["split"]["gt_mask"]), predicted)
    p = {"orders": ["morf", "lerf"], "steps": 3, "patch": 8}
    results, rows = perturbation_scores(model, data, maps, predicted, p, n_boot=50, seed=0, batch_size=4)
    inputs = MetricInputs(model, x, labels, predicted, maps)
    for order in ("morf", "lerf"):
        assert results[f"aopc_{order}"] == METRICS.get(f"aopc_{order}")(inputs, steps=3, patch=8, n_boot=50)[f"aopc_{order}"]
    assert [(r["order"], r["fraction"]) for r in rows] == [(o, f) for o in ("morf", "lerf") for f in (0.0, 0.5, 1.0)]
    assert rows[0]["score"] == pytest.approx(model(x).softmax(1)[labels == predicted].max(1).values.mean().item())


def test_randomization_rows_order_steps_by_block():
    s = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3}
    keys = ["cascading_randomization/fc/ssim", "cascading_randomization/layer4/ssim", "cascading_randomization/fc/hog",
            "cascading_randomization/layer4/hog"]
    rows = randomization_rows("cascading_randomization", dict.fromkeys(keys, s))
    assert [(r["mode"], r["step"], r["block"], r["similarity"]) for r in rows] == [
        ("cascading", 1, "fc", "ssim"), ("cascading", 2, "layer4", "ssim"), ("cascading", 1, "fc", "hog"),
        ("cascading", 2, "layer4", "hog")]
    (row,) = randomization_rows("data_randomization", {"data_randomization/ssim": s})
    assert (row["mode"], row["step"], row["block"], row["value"]) == ("data", 1, "labels", 0.5)


def _summary(mean: float) -> dict:
    return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": 5, "n_undefined": 0}


def test_ranking_agreement_hand_computed():
    gt = [0.9, 0.5, 0.3, 0.1]
    morf = [0.8, 0.6, 0.2, 0.1]  # same order as gt: +1
    lerf = [0.1, 0.2, 0.3, 0.4]  # smaller is better: same order as gt after the sign flip: +1
    pg = [0.0, 1.0, 0.5, 0.7]    # ranks 1,4,2,3 vs gt ranks 4,3,2,1: rho = 1 - 6*(9+1+0+4)/60 = -0.4
    methods = {f"m{i}": {"aopc_morf": _summary(morf[i]), "aopc_lerf": _summary(lerf[i]),
                         "mass_accuracy/l1": _summary(gt[i]), "pointing_game": _summary(pg[i])} for i in range(4)}
    methods["m3"]["pointing_game"] = _summary(math.nan)  # left out of that pair only
    out = ranking_agreement(methods)
    assert out["aopc_morf"]["mass_accuracy/l1"] == {"spearman": 1.0, "n_methods": 4}
    assert out["aopc_lerf"]["mass_accuracy/l1"]["spearman"] == 1.0
    # without m3: morf ranks (3,2,1) vs pointing (1,3,2): rho = 1 - 6*(4+1+1)/24 = -0.5
    assert out["aopc_morf"]["pointing_game"] == {"spearman": -0.5, "n_methods": 3}
    two = {k: v for k, v in methods.items() if k in ("m0", "m1")}
    assert ranking_agreement(two)["aopc_morf"]["mass_accuracy/l1"]["spearman"] is None


@pytest.mark.parametrize("change, message", [
    ({"metrics": {"mass_acuracy": {}}}, "Did you mean 'mass_accuracy'"),
    ({"metric": {}}, "did you mean 'metrics'"),
    ({"metrics": {"mass_accuracy": {"sweep": {"pooling": "l1"}}}}, "non-empty list"),
    ({"perturbation": {"orders": ["most"]}}, "unknown order 'most'"),
    ({"perturbation": {"baseline": "black"}}, "unknown baseline .black.; known: a number or one of"),
    ({"meta_saliency": {"lr": 0, "methods": ["gradient"]}}, "positive learning rate"),
])
def test_bad_params_name_the_fix(change, message):
    with pytest.raises((ParamsError, UnknownNameError), match=message):
        parse_config({**EVALUATE, **change})


def _stage(root: Path, evaluate_params: dict) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(yaml.safe_dump({"attribute": ATTRIBUTE, "evaluate": evaluate_params}))
    cmd = [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--task", "t", "--model", "m", "--params",
           str(root / "params.yaml"), "--data", str(root / "render"), "--models", str(root / "models"),
           "--maps", str(root / "maps"), "--metrics", str(root / "metrics.json"), "--plots", str(root / "plots"),
           "--out", str(root / "out")]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=root)


@pytest.mark.slow  # two stage subprocesses: ~25 s on an idle 2-core machine, much more when it is shared
def test_stage_writes_json_csvs_and_examples(tmp_path):
    write_setup(tmp_path, "cnn")
    proc = _stage(tmp_path, EVALUATE)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["methods"]["gradient"]["mass_accuracy/l2_sq"]["mean"] == pytest.approx(1.0)
    assert out["methods"]["gradient"]["mass_accuracy/l2_sq"]["n"] == 7
    assert out["n_test"] == 8 and out["accuracy"] == pytest.approx(7 / 8)
    assert set(out["layer_study"]["gradcam"]) == {"gradcam@1", "gradcam"}
    header = (tmp_path / "plots" / "randomization.csv").read_text().splitlines()[0]
    assert header == "method,mode,step,block,similarity,value,ci_low,ci_high,n"
    assert (tmp_path / "plots" / "perturbation.csv").read_text().startswith("method,order,fraction,score,n\n")
    assert (tmp_path / "out" / "examples.safetensors").exists()

    (tmp_path / "maps" / "lrp" / "manifest.json").unlink()
    proc = _stage(tmp_path, EVALUATE)
    assert proc.returncode == 2 and "dvc repro attribute@t-m" in proc.stderr


def test_stale_maps_name_the_attribute_stage(tmp_path):
    s = write_setup(tmp_path, "cnn")
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    other_targets = (s["predicted"] + 1) % 3  # maps were cached for other targets
    with pytest.raises(StaleArtifactError, match=r"explained targets changed.*dvc repro attribute@t-m"):
        load_entries(METHODS, "cnn", tmp_path / "maps", models.model, model_hash(s["model_dir"]), other_targets,
                     0, "attribute@t-m")


def test_flat_perturbation_flags_curves_that_ignore_the_maps() -> None:
    """The black-baseline failure seen on the default models: after the first step every curve sits at the same
    value whatever the method and order."""
    fractions = [0.0, 0.5, 1.0]

    def rows(curves: dict) -> list[dict]:
        return [{"method": m, "order": o, "fraction": f, "score": v}
                for (m, o), values in curves.items() for f, v in zip(fractions, values)]

    flat = {(m, o): [0.873, 0.1111, 0.1111] for m in ("gradient", "gradcam") for o in ("morf", "lerf")}
    flat[("gradient", "lerf")] = [0.873, 0.1127, 0.1111]  # as measured: a spread of 0.0016 at the first step
    assert flat_perturbation(rows(flat))
    informative = {**flat, ("gradcam", "lerf"): [0.89, 0.80, 0.15625]}
    assert not flat_perturbation(rows(informative))
    assert not flat_perturbation(rows({("gradient", "morf"): [0.9, 0.1, 0.1]}))  # one curve: nothing to compare
