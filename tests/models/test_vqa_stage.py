"""The train stage's VQA path on a tiny render of vqa-simple: the classifier stage's layout, per-family
accuracy, the random-label and random-init twins, gates, task × model mismatches, a tiny `dvc repro`."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, TINY_RENDER, run

from salbench.errors import SalbenchError
from salbench.io import load_shard, read_json
from salbench.models import Questions, answer_accuracy, build_question_model, load_checkpoint, set_deterministic
from salbench.params import ParamsError
from salbench.render import load_split
from salbench.vqa.dataset import load_questions, load_vocabulary

SPLITS = {"train": 16, "val": 6, "test": 6}
RL = {"n_train": 8, "epochs": 40, "batch_size": 8, "lr": 0.02, "weight_decay": 0.0, "flip": False,
      "stop_at_train_accuracy": 1.0}
TINY_VQA_MODELS = {
    "film-tiny": {"model": {"arch": "film", "kwargs": {"stem": [8, 8], "blocks": 1, "embed_dim": 8,
                                                       "question_dim": 16, "head": 16, "f": [16], "pool": 2}},
                  "epochs": 2, "batch_size": 16, "lr": 0.01, "flip": False, "shift": 2, "checkpoint_epochs": [1],
                  "random_labels": RL},
    "rn-tiny": {"model": {"arch": "relation-network",
                          "kwargs": {"conv_channels": [8, 8, 8], "embed_dim": 8, "question_dim": 16, "g": [16],
                                     "f": [16], "pool": 2}},
                "epochs": 1, "batch_size": 16, "lr": 0.01, "flip": False, "random_labels": {**RL, "epochs": 2},
                "group_questions": 3},  # each image's 3 questions in one batch (features once per image)
}
TRAIN = {"seed": 0, "device": "cpu", "tasks": [], "models": {}, "vqa_tasks": ["vqa-simple"],
         "vqa_min_test_accuracy": {"vqa-simple": 0.0}, "vqa_models": TINY_VQA_MODELS}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("vqa-render")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["render"].update({**TINY_RENDER, "splits": SPLITS})
    params["tasks"]["vqa-simple"]["questions_per_image"] = 3
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, str(ROOT / "stages/render.py"), "--task", "vqa-simple", "--params",
                    str(tmp / "params.yaml"), "--out", str(tmp / "vqa-simple"), "--plots", str(tmp / "plots"),
                    "--metrics", str(tmp / "metrics.json")], check=True, capture_output=True)
    return tmp / "vqa-simple"


def train_stage(tmp: Path, task_dir: Path, model: str, train: dict = TRAIN) -> Path:
    """Run stages/train.py's main() in this process; returns the output dir."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump({"train": train}))
    argv = ["train.py", "--task", task_dir.name, "--model", model, "--params", str(tmp / "params.yaml"),
            "--data", str(task_dir), "--out", str(tmp / model)]
    main = runpy.run_path(str(ROOT / "stages/train.py"))["main"].__wrapped__  # raise instead of exit
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        main()
    return tmp / model


@pytest.fixture(scope="module")
def trained(rendered: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_stage(tmp_path_factory.mktemp("train-vqa"), rendered, "film-tiny")


def test_stage_writes_the_classifier_layout_with_per_family_accuracy(trained: Path, rendered: Path) -> None:
    assert sorted(p.name for p in trained.iterdir()) == [
        "checkpoints", "final", "metrics.json", "plots", "random_init", "random_labels"]
    assert [p.name for p in (trained / "checkpoints").iterdir()] == ["epoch_1"]
    kinds = {d: read_json(trained / d / "manifest.json")["kind"]
             for d in ("final", "checkpoints/epoch_1", "random_init", "random_labels")}
    assert kinds == {"final": "final", "checkpoints/epoch_1": "intermediate", "random_init": "random_init",
                     "random_labels": "random_labels"}
    vocab, metrics = load_vocabulary(rendered), read_json(trained / "metrics.json")
    test_q = load_questions(rendered, "test")
    present = {vocab["families"][f] for f in set(test_q["family"].tolist())}
    assert set(metrics["test_accuracy_per_family"]) == present
    assert metrics["epochs"] == 2 and metrics["passed"] is True
    assert metrics["questions"]["test"] == len(test_q["answer"])
    curve = (trained / "plots/train/plots/metrics/val_accuracy.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "val_accuracy"] and len(curve) == 3
    assert (trained / "plots/random_labels/plots/metrics/loss.tsv").exists()


def test_final_checkpoint_reproduces_the_reported_accuracy(trained: Path, rendered: Path) -> None:
    model, man = load_checkpoint(trained / "final")
    vocab = load_vocabulary(rendered)
    assert (man["classes"], man["tokens"], man["family"]) == (vocab["answers"], vocab["tokens"], "film")
    q = {k: torch.from_numpy(v) for k, v in load_questions(rendered, "test").items()}
    acc = answer_accuracy(model, torch.from_numpy(load_split(rendered, "test")["images"]),
                          Questions(q["image_index"], q["tokens"], q["answer"], q["family"]), vocab["families"])
    metrics = read_json(trained / "metrics.json")
    assert acc["all"] == metrics["test_accuracy"] == man["accuracy"]["test"]
    assert {k: v for k, v in acc.items() if k != "all"} == metrics["test_accuracy_per_family"]


def test_twins(trained: Path, rendered: Path) -> None:
    twin, man = load_checkpoint(trained / "random_init")
    set_deterministic(0)
    fresh = build_question_model("film", len(man["classes"]), len(man["tokens"]), 64,
                                 **TINY_VQA_MODELS["film-tiny"]["model"]["kwargs"]).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in twin.state_dict().items())
    saved = load_shard(trained / "random_labels/labels.safetensors")
    train_answers = load_questions(rendered, "train")["answer"]
    assert (saved["true_label"] == train_answers[saved["index"]]).all()
    assert sorted(saved["label"].tolist()) == sorted(saved["true_label"].tolist())  # a permutation
    metrics = read_json(trained / "metrics.json")
    assert metrics["random_labels_train_accuracy"] == 1.0  # fitted the permuted answers
    assert metrics["random_labels_n_train"] == 8


def test_relation_network_trains_too_and_runs_are_deterministic(rendered: Path, tmp_path: Path) -> None:
    a = train_stage(tmp_path / "a", rendered, "rn-tiny")
    b = train_stage(tmp_path / "b", rendered, "rn-tiny")
    assert load_shard(a / "final/model.safetensors").keys() == load_shard(b / "final/model.safetensors").keys()
    assert (a / "final/model.safetensors").read_bytes() == (b / "final/model.safetensors").read_bytes()
    assert read_json(a / "final/manifest.json")["family"] == "relation-network"


def test_gates_fail_after_writing_and_mismatches_are_refused(rendered: Path, fake_task: Path,
                                                              tmp_path: Path) -> None:
    gated = {**TRAIN, "vqa_models": {"rn-tiny": {**TINY_VQA_MODELS["rn-tiny"], "random_labels": {"epochs": 0}}},
             "vqa_min_test_accuracy": {"vqa-simple": {"all": 0.0, "query_color": 1.01}}}
    with pytest.raises(SalbenchError, match="query_color"):
        train_stage(tmp_path / "gate", rendered, "rn-tiny", gated)
    assert read_json(tmp_path / "gate/rn-tiny/metrics.json")["passed"] is False
    with pytest.raises(ParamsError, match="no questions"):
        train_stage(tmp_path / "cls", fake_task, "rn-tiny")
    classifier = {**TRAIN, "min_test_accuracy": 0.0, "models": {"resnet-small": {"model": {"arch": "resnet-small"}}}}
    with pytest.raises(ParamsError, match="VQA task"):
        train_stage(tmp_path / "vqa", rendered, "resnet-small", classifier)
    flipped = {**TRAIN, "vqa_models": {"rn-tiny": {**TINY_VQA_MODELS["rn-tiny"], "random_labels": {"flip": True}}}}
    with pytest.raises(ParamsError, match="flip: false"):  # flips are off unless asked for
        train_stage(tmp_path / "flip", rendered, "rn-tiny", flipped)
    grouped = {**TRAIN, "vqa_models": {"rn-tiny": {**TINY_VQA_MODELS["rn-tiny"], "group_questions": 0}}}
    with pytest.raises(ParamsError, match="group_questions must be an integer >= 1"):
        train_stage(tmp_path / "group", rendered, "rn-tiny", grouped)
    unknown = {**TRAIN, "vqa_min_test_accuracy": {"vqa-simple": {"query_colour": 0.5}}}
    with pytest.raises(ParamsError, match="query_colour"):
        train_stage(tmp_path / "fam", rendered, "rn-tiny", unknown)


@pytest.mark.slow
def test_dvc_repro_train_vqa_in_a_temporary_copy(pipeline_copy) -> None:
    repo = pipeline_copy({"render": {**TINY_RENDER, "splits": SPLITS, "tasks": ["vqa-simple"]},
                          "train": {"tasks": [], "vqa_tasks": ["vqa-simple"], "vqa_min_test_accuracy": {"vqa-simple": 0.0}},
                          "attribute": {"tasks": []}})
    params = yaml.safe_load((repo / "params.yaml").read_text())  # every model of params.yaml, shrunk to tiny
    params["train"]["vqa_models"] = {m: TINY_VQA_MODELS["rn-tiny" if "rn" in m else "film-tiny"]
                                     for m in params["train"]["vqa_models"]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = run([sys.executable, "-m", "dvc", "stage", "list"], repo).stdout
    assert "train_vqa@vqa-simple-film-small" in stages and "train@vqa-simple" not in stages
    run([sys.executable, "-m", "dvc", "repro", "train_vqa@vqa-simple-film-small"], repo)
    out = repo / "data/models/vqa-simple/film-small"
    assert sorted(p.name for p in out.iterdir() if p.name != ".gitignore") == [
        "checkpoints", "final", "metrics.json", "plots", "random_init", "random_labels"]
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo).stdout)
    assert "test_accuracy_per_family" in json.dumps(shown)
