"""The attribute and evaluate stages on a VQA task (tiny render of vqa-simple, a tiny trained FiLM): maps per
question with the tokens in the cache key, the results rows and example arrays of the VQA contract."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, TINY_RENDER, run

from salbench.attribution.cache import read_manifest
from salbench.io import load_shard
from salbench.results import read_results
from salbench.vqa.dataset import load_questions, load_vocabulary

from models.test_vqa_stage import TRAIN, TINY_VQA_MODELS, train_stage

QUESTIONS = 10
METHODS = {"gradient": {}, "integrated_gradients": {"steps": 4}, "lrp": {}, "gradcam": {}, "random": {},
           "gt_mask": {}, "gradcam@1": {"method": "gradcam", "layer": {"cnn": "layer1", "vit": "blocks.0.norm1"}}}


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny vqa-simple render, film-tiny trained on it, and a full params.yaml for the stages."""
    tmp = tmp_path_factory.mktemp("vqa-stages")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["render"].update({**TINY_RENDER, "splits": {"train": 16, "val": 6, "test": 6}})
    params["tasks"]["vqa-simple"]["questions_per_image"] = 3
    params["train"].update({k: TRAIN[k] for k in ("vqa_tasks", "vqa_min_test_accuracy", "vqa_models")})
    params["attribute"].update({"vqa_questions": QUESTIONS, "methods": METHODS, "shard_size": 4, "batch_size": 8})
    ev = params["evaluate"]
    ev.update({"n_boot": 20, "examples": 2, "layer_study": None, "meta_saliency": None})
    keep = ("mass_accuracy", "rank_accuracy", "pointing_game", "aopc", "cascading_randomization", "cose")
    ev["metrics"] = {k: v for k, v in ev["metrics"].items() if k in keep}
    ev["metrics"]["aopc"].update({"samples": None, "steps": 3})
    for k in ("cascading_randomization", "cose"):
        ev["metrics"][k].update({"samples": 6, "methods": ["gradient", "gradcam"]})
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, str(ROOT / "stages/render.py"), "--task", "vqa-simple", "--params",
                    str(tmp / "params.yaml"), "--out", str(tmp / "render/vqa-simple"), "--plots", str(tmp / "plots"),
                    "--metrics", str(tmp / "metrics.json")], check=True, capture_output=True)
    train_stage(tmp / "models/vqa-simple", tmp / "render/vqa-simple", "film-tiny")
    return {"tmp": tmp, "data": tmp / "render/vqa-simple", "models": tmp / "models"}


def _stage(script: str, d: dict[str, Path], *extra: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(ROOT / f"stages/{script}.py"), "--task", "vqa-simple", "--model", "film-tiny",
                "--params", str(d["tmp"] / "params.yaml"), "--data", str(d["data"]), "--models", str(d["models"]),
                *extra], d["tmp"])


@pytest.mark.slow
def test_attribute_and_evaluate_stages_on_questions(stage_dirs: dict[str, Path]) -> None:
    d = stage_dirs
    maps = d["tmp"] / "maps"
    proc = _stage("attribute", d, "--out", str(maps))
    assert "gradcam@1" in proc.stderr  # a ResNet layer: left out for FiLM, with a note
    assert sorted(p.name for p in maps.iterdir()) == sorted(set(METHODS) - {"gradcam@1"})
    manifest = read_manifest(maps / "lrp")
    assert "tokens" in manifest["inputs"] and manifest["shape"][0] == QUESTIONS
    assert "masks" in read_manifest(maps / "gt_mask")["inputs"]

    out = d["tmp"] / "evaluate"
    _stage("evaluate", d, "--maps", str(maps), "--out", str(out), "--results", str(d["tmp"] / "results.csv"),
           "--metrics", str(d["tmp"] / "headlines.json"))
    table = read_results(d["tmp"] / "results.csv")
    assert set(table["family"]) == {"cnn"}
    kinds = load_vocabulary(d["data"])["gt_kinds"]
    assert kinds == ["single_object", "all_objects"]
    mass = table[(table["metric"] == "mass_accuracy") & (table["method"] == "lrp")]
    assert sorted(mass["variant"]) == sorted(f"gt={k},pooling={p}" for k in kinds
                                             for p in ("l1", "l2", "l2_sq", "max_norm", "sum_abs", "sum_pos"))
    pg = table[(table["metric"] == "pointing_game") & (table["method"] == "gradient")]
    assert sorted(pg["variant"]) == [f"gt={k},pooling=max_norm,tolerance=0" for k in sorted(kinds)]
    # the oracle's mass accuracy on its own GT kind is 1 (where any question is answered correctly)
    oracle = table[(table["metric"] == "mass_accuracy") & (table["method"] == "gt_mask")
                   & (table["variant"] == f"gt={kinds[0]},pooling=l1")]
    assert oracle["n"].item() == 0 or oracle["mean"].item() == pytest.approx(1.0)
    qs = table[table["metric"] == "question_sensitivity"]
    assert set(qs["method"]) >= {"gradient", "lrp", "gt_mask"} and (qs["variant"] == "").all()
    accuracy = table[table["metric"] == "accuracy"]
    questions = load_questions(d["data"], "test")
    families = load_vocabulary(d["data"])["families"]
    present = {f"family={families[f]}" for f in questions["family"][:QUESTIONS].tolist()}
    assert set(accuracy["variant"]) == {""} | present
    assert accuracy[accuracy["variant"] == ""]["n"].item() == QUESTIONS
    assert {"aopc", "perturbation_curve", "cascading_randomization"} <= set(table["metric"])

    ex = load_shard(out / "examples.safetensors")
    index = torch.from_numpy(ex["vqa/question_index"])
    e, k = index.shape
    assert 1 <= e <= 2 and k == 3
    image_of = torch.from_numpy(questions["image_index"])[index]
    assert (image_of == image_of[:, :1]).all()  # K questions of one image per row
    assert ex["vqa/images"].shape == (e, 3, 64, 64)
    assert ex["vqa/map/lrp"].shape == (e, k, 64, 64) and ex["vqa/gt/all_objects"].shape == (e, k, 64, 64)
    assert ex["vqa/predictions"].shape == ex["vqa/answers"].shape == (e, k)
    assert (torch.from_numpy(ex["vqa/answers"]) == torch.from_numpy(questions["answer"])[index]).all()
