"""Checkpoints: safetensors + manifest round trip, loading as init, compatibility checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from models.model_specs import MODEL_SPECS

from salbench.models import ModelSpecError, build_model, load_checkpoint, read_manifest, save_checkpoint


CLASSES = ["a", "b", "c"]


def manifest(**over: object) -> dict:
    return {"task": "fake", "classes": CLASSES, "accuracy": {"test": 0.5}, "params_hash": "0" * 16, "seed": 0,
            "versions": {"torch": torch.__version__}, **over}


def trained_like(name: str | dict, size: int = 32) -> torch.nn.Module:
    """A model whose BatchNorm statistics and weights differ from a fresh init (so a lost buffer shows)."""
    torch.manual_seed(3)
    model = build_model(name, len(CLASSES), size)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, size, size))  # moves BatchNorm running statistics
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_round_trip_gives_identical_logits(spec: dict, tmp_path: Path) -> None:
    model = trained_like(spec)
    save_checkpoint(tmp_path / "ckpt", model, manifest())
    loaded, man = load_checkpoint(tmp_path / "ckpt")
    assert not loaded.training
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert {k for k in man} >= {"arch", "family", "task", "classes", "input_size", "mean", "std", "accuracy",
                                "params_hash", "seed", "versions"}
    assert (man["arch"], man["family"], man["input_size"], man["classes"]) == (spec["arch"], model.family, 32, CLASSES)
    assert man["kwargs"] == json.loads(json.dumps(spec.get("kwargs", {})))


def test_checkpoint_as_initialisation(tmp_path: Path) -> None:
    model = trained_like("resnet-small")
    save_checkpoint(tmp_path / "ckpt", model, manifest())
    again = build_model({"arch": "resnet-small", "checkpoint": str(tmp_path / "ckpt")}, 3, 32).eval()
    alone = build_model({"checkpoint": str(tmp_path / "ckpt")}, 3, 32).eval()  # arch from the checkpoint
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x)) and torch.equal(alone(x), model(x))


@pytest.mark.parametrize("classes, size", [(4, 32), (3, 64)])
def test_mismatched_checkpoint_is_rejected_naming_both(tmp_path: Path, classes: int, size: int) -> None:
    save_checkpoint(tmp_path / "ckpt", trained_like("resnet-small"), manifest())
    with pytest.raises(ModelSpecError, match=f"has 3 classes at 32 px but the task has {classes} classes at {size} px"):
        build_model({"arch": "resnet-small", "checkpoint": str(tmp_path / "ckpt")}, classes, size)
    with pytest.raises(ModelSpecError, match="holds a 'resnet-small' but the spec asks for 'vit-tiny'"):
        build_model({"arch": "vit-tiny", "checkpoint": str(tmp_path / "ckpt")}, 3, 32)


def test_save_rejects_incomplete_or_inconsistent_manifests(tmp_path: Path) -> None:
    model = trained_like("resnet-small")
    with pytest.raises(ValueError, match=r"lacks \['seed'\]"):
        save_checkpoint(tmp_path / "a", model, {k: v for k, v in manifest().items() if k != "seed"})
    with pytest.raises(ValueError, match="lists 2 classes but the model has 3 outputs"):
        save_checkpoint(tmp_path / "b", model, manifest(classes=["a", "b"]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_loading_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ckpt", trained_like("vit-tiny"), manifest())
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(torch.rand(3), want)


def test_missing_checkpoint_names_the_stage(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc repro train"):
        read_manifest(tmp_path / "nope")
