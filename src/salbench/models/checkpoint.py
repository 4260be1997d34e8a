"""Checkpoints: a directory with ``model.safetensors`` (the Classifier's state dict) and ``manifest.json``.

Manifest keys: ``arch``, ``kwargs`` (rebuild the network), ``family`` ("cnn" | "vit"), ``task``,
``classes``, ``input_size``, ``mean``, ``std`` (normalisation applied inside the model),
``accuracy`` (split -> float), ``params_hash``, ``seed``, ``versions``, and whatever else the caller adds.
A question-conditioned model's manifest also has ``tokens`` (its vocabulary; ``classes`` are the answers).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_dir, read_json, require, write_json
from .question import QuestionModel, build_question_model
from .zoo import Classifier, ModelSpecError, build_model

WEIGHTS = "model.safetensors"
CALLER_KEYS = ("task", "classes", "accuracy", "params_hash", "seed", "versions")


def save_checkpoint(path: str | Path, model: Classifier | QuestionModel, manifest: Mapping[str, Any]) -> None:
    """Write ``model`` and ``manifest`` (plus the model's arch, kwargs, family, input_size, mean, std) atomically."""
    missing = [k for k in CALLER_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"checkpoint manifest lacks {missing}; give all of {list(CALLER_KEYS)}")
    if len(manifest["classes"]) != model.num_classes:
        raise ValueError(f"manifest lists {len(manifest['classes'])} classes but the model has "
                         f"{model.num_classes} outputs")
    full = {
        **manifest, "arch": model.arch, "kwargs": model.kwargs, "family": model.family,
        "input_size": model.input_size, "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
    }
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS))
        write_json(tmp / "manifest.json", full)


def read_manifest(path: str | Path) -> dict[str, Any]:
    return read_json(require(Path(path) / "manifest.json", "train"))


def check_compatible(manifest: Mapping[str, Any], num_classes: int, input_size: int, where: str | Path) -> None:
    """Reject a checkpoint whose class count or input size differs from the task's, naming both."""
    have = (len(manifest["classes"]), int(manifest["input_size"]))
    if have != (num_classes, input_size):
        raise ModelSpecError(
            f"checkpoint {where} has {have[0]} classes at {have[1]} px but the task has {num_classes} classes "
            f"at {input_size} px; use a checkpoint trained on this task or render the task to match"
        )


def load_state(path: str | Path, num_classes: int, input_size: int, arch: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a compatible checkpoint (class count, input size and, if given, arch must match)."""
    manifest = read_manifest(path)
    check_compatible(manifest, num_classes, input_size, path)
    if arch is not None and manifest["arch"] != arch:
        raise ModelSpecError(f"checkpoint {path} holds a {manifest['arch']!r} but the spec asks for {arch!r}")
    return load_file(str(Path(path) / WEIGHTS))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[Classifier | QuestionModel, dict[str, Any]]:
    """(model in eval mode on ``device``, manifest) from a checkpoint dir written by :func:`save_checkpoint`
    (a :class:`QuestionModel` when the manifest has ``tokens``)."""
    manifest = read_manifest(path)
    spec = {"arch": manifest["arch"], "kwargs": manifest["kwargs"], "mean": manifest["mean"], "std": manifest["std"]}
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not shift the caller's seeded RNG
        if "tokens" in manifest:
            model = build_question_model(manifest["arch"], len(manifest["classes"]), len(manifest["tokens"]),
                                         int(manifest["input_size"]), **manifest["kwargs"])
        else:
            model = build_model(spec, len(manifest["classes"]), int(manifest["input_size"]))
    model.load_state_dict(load_file(str(Path(path) / WEIGHTS)))
    return model.to(device).eval(), manifest
