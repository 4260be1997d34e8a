"""The `train` stage: artifacts on a fake task, the accuracy gate, and a tiny `dvc repro` in a temporary copy."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, TINY_RENDER, run

from salbench.errors import SalbenchError
from salbench.io import load_shard, read_json
from salbench.models import accuracy, build_model, load_checkpoint, set_deterministic
from salbench.params import ParamsError
from salbench.registry import UnknownNameError
from salbench.render import load_split

TINY_MODEL = {"epochs": 3, "batch_size": 16, "lr": 0.01, "shift": 2, "checkpoint_epochs": [1, 2],
              "random_labels": {"n_train": 32, "epochs": 40, "lr": 0.01, "batch_size": 16, "flip": False,
                                "weight_decay": 0.0, "stop_at_train_accuracy": 1.0}}
TINY_TRAIN = {"seed": 0, "device": "cpu", "tasks": ["fake"], "min_test_accuracy": 0.0,
              "models": {"resnet-small": {"model": {"arch": "resnet-small"}, **TINY_MODEL}}}


def train_stage(tmp: Path, task_dir: Path, train: dict) -> None:
    """Run stages/train.py's main() in this process (no interpreter start-up per call)."""
    (tmp / "params.yaml").write_text(yaml.safe_dump({"train": train}))
    argv = ["train.py", "--task", task_dir.name, "--model", "resnet-small", "--params", str(tmp / "params.yaml"),
            "--data", str(task_dir), "--out", str(tmp / "out")]
    main = runpy.run_path(str(ROOT / "stages/train.py"))["main"].__wrapped__  # raise instead of exit
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        main()


@pytest.fixture(scope="module")
def trained(fake_task: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    train_stage(tmp, fake_task, TINY_TRAIN)
    return tmp / "out"


def test_stage_writes_every_artifact(trained: Path) -> None:
    assert sorted(p.name for p in trained.iterdir()) == [
        "checkpoints", "final", "metrics.json", "plots", "random_init", "random_labels"]
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]
    kinds = {d: read_json(trained / d / "manifest.json")["kind"]
             for d in ("final", "checkpoints/epoch_1", "random_init", "random_labels")}
    assert kinds == {"final": "final", "checkpoints/epoch_1": "intermediate", "random_init": "random_init",
                     "random_labels": "random_labels"}
    metrics = read_json(trained / "metrics.json")
    assert metrics["epochs"] == 3 and metrics["passed"] is True
    curve = (trained / "plots/train/plots/metrics/val_accuracy.tsv").read_text().splitlines()  # dvclive layout
    assert curve[0].split("\t") == ["step", "val_accuracy"] and [r.split("\t")[0] for r in curve[1:]] == ["1", "2", "3"]
    assert not (trained / "plots/train/metrics.json").exists()  # dvclive's summary: the stage's metrics.json has it
    assert (trained / "plots/random_labels/plots/metrics/loss.tsv").exists()


def test_final_manifest_accuracy_matches_the_loaded_model(trained: Path, fake_task: Path) -> None:
    model, man = load_checkpoint(trained / "final")
    test = load_split(fake_task, "test")
    acc = accuracy(model, torch.from_numpy(test["images"]), torch.from_numpy(test["label"]))
    assert man["accuracy"]["test"] == acc == read_json(trained / "metrics.json")["test_accuracy"]
    assert (man["task"], man["input_size"], man["family"]) == ("fake", 32, "cnn")


def test_random_init_is_the_untrained_seeded_twin(trained: Path) -> None:
    twin, _ = load_checkpoint(trained / "random_init")
    set_deterministic(0, torch.device("cpu"))
    fresh = build_model("resnet-small", 4, 32).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in twin.state_dict().items())
    final, _ = load_checkpoint(trained / "final")
    assert not torch.equal(final.state_dict()["net.fc.weight"], fresh["net.fc.weight"])


def test_random_label_model_fits_a_permutation_of_the_training_labels(trained: Path, fake_task: Path) -> None:
    saved = load_shard(trained / "random_labels/labels.safetensors")
    train_labels = load_split(fake_task, "train")["label"]
    idx, perm = torch.from_numpy(saved["index"]), torch.from_numpy(saved["label"])
    assert len(idx) == 32 and torch.equal(torch.from_numpy(saved["true_label"]), torch.from_numpy(train_labels)[idx])
    assert torch.equal(perm.sort().values, idx.new_tensor(train_labels)[idx].sort().values)
    assert (perm != torch.from_numpy(train_labels)[idx]).any()
    model, man = load_checkpoint(trained / "random_labels")
    images = torch.from_numpy(load_split(fake_task, "train")["images"])[idx]
    assert accuracy(model, images, perm) == man["accuracy"]["train_permuted"] == 1.0
    assert read_json(trained / "metrics.json")["random_labels_train_accuracy"] == 1.0


def test_accuracy_gate_fails_after_writing(fake_task: Path, tmp_path: Path) -> None:
    gated = {**TINY_TRAIN, "min_test_accuracy": {"fake": 1.01},
             "models": {"resnet-small": {**TINY_TRAIN["models"]["resnet-small"], "epochs": 1, "checkpoint_epochs": [],
                                         "random_labels": {"n_train": 16, "epochs": 1}}}}
    with pytest.raises(SalbenchError, match="below train.min_test_accuracy=1.01"):
        train_stage(tmp_path, fake_task, gated)
    assert read_json(tmp_path / "out/metrics.json")["passed"] is False


def test_bad_params_fail_before_training(fake_task: Path, tmp_path: Path) -> None:
    bad = {**TINY_TRAIN, "models": {"resnet-small": {"model": {"arch": "resnet-smal"}}}}
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet-small'"):
        train_stage(tmp_path, fake_task, bad)
    with pytest.raises(ParamsError, match=r"unknown model 'resnet-small'; train.models has \['other'\]"):
        train_stage(tmp_path, fake_task, {**TINY_TRAIN, "models": {"other": {}}})
    with pytest.raises(ParamsError, match=r"min_test_accuracy has no entry for task 'fake' \(it has \['other'\]\)"):
        train_stage(tmp_path, fake_task, {**TINY_TRAIN, "min_test_accuracy": {"other": 0.5}})
    with pytest.raises(ParamsError, match="unknown key train.models.resnet-small.random_labels.epoch"):
        train_stage(tmp_path, fake_task, {**TINY_TRAIN, "models": {"resnet-small": {"model": {"arch": "resnet-small"},
                                                                            "random_labels": {"epoch": 1}}}})
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dvc_repro_train_in_a_temporary_copy(pipeline_copy) -> None:
    """Tiny render + train of both default models through DVC; a forced rerun gives identical outputs."""
    tiny = {k: v for k, v in TINY_MODEL.items() if k != "checkpoint_epochs"}
    models = {m: {**tiny, "batch_size": 8, "checkpoint_epochs": [1], "random_labels": {"n_train": 8, "epochs": 2}}
              for m in yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["models"]}
    repo = pipeline_copy({"render": {**TINY_RENDER, "tasks": ["unique-query"]},
                          "train": {"tasks": ["unique-query"], "min_test_accuracy": 0.0, "models": models}})
    run([sys.executable, "-m", "dvc", "repro", "train"], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    trains = sorted(k for k in lock if k.startswith("train@"))
    assert trains == sorted(f"train@unique-query-{m}" for m in models)
    for m in models:
        out = repo / "data/models/unique-query" / m
        assert read_json(out / "final/manifest.json")["classes"] == read_json(
            repo / "data/render/unique-query/manifest.json")["classes"]
        ignored = run(["git", "check-ignore", f"data/models/unique-query/{m}/final"], repo).stdout
        assert ignored.strip() == f"data/models/unique-query/{m}/final"  # cached by DVC, not in git
    assert "unique-query" in run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo).stdout
    plots = json.loads(run([sys.executable, "-m", "dvc", "plots", "show", "--json"], repo).stdout)
    assert any(k.endswith("resnet-small/plots/train/plots/metrics/val_accuracy.tsv") for k in plots["data"])
    run([sys.executable, "-m", "dvc", "repro", "--force", "train"], repo)
    again = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in trains:
        outs = {o["path"]: o.get("md5") for o in lock[stage]["outs"]
                if not o["path"].endswith("metrics.json")}  # its seconds differ; curves do not
        assert outs == {o["path"]: o.get("md5") for o in again[stage]["outs"] if o["path"] in outs}
