"""Checkpoints: a directory with ``model.safetensors`` (the Classifier's state dict) and ``manifest.json``.

Manifest keys: ``arch``, ``kwargs`` (rebuild the network), ``family`` ("cnn" | "vit"), ``task``,
``classes``, ``input_size``, ``mean``, ``std`` (normalisation applied inside the model),
``accuracy`` (split -> float), ``params_hash``, ``seed``, ``versions``, and whatever else the caller adds.
The weights carry a sha256 in their header (salbench.io), checked on every load. A question-conditioned
model's manifest also has ``tokens`` (its vocabulary; ``classes`` are the answers).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ..io import atomic_dir, corrupt, read_json, read_safetensors, write_json, write_safetensors
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
        write_safetensors(tmp / WEIGHTS, save(state))
        write_json(tmp / "manifest.json", full)


def train_stage(path: str | Path) -> str | None:
    """The DVC stage that writes checkpoint ``path``: ``train@<task>-<model>`` for a checkpoint under
    ``.../models/<task>/<model>/`` (``final``, ``random_init``, ``checkpoints/epoch_<n>``...), else None."""
    path = Path(path)
    if path.parent.name == "checkpoints":
        path = path.parent
    model, task = path.parent, path.parent.parent
    return f"train@{task.name}-{model.name}" if task.parent.name == "models" else None


def read_manifest(path: str | Path, stage: str | None = None) -> dict[str, Any]:
    """The manifest of checkpoint ``path``; a missing one names ``stage`` (default :func:`train_stage`)."""
    return read_json(Path(path) / "manifest.json", stage or train_stage(path) or "train")


def read_weights(path: str | Path, stage: str | None = None) -> dict[str, torch.Tensor]:
    """The checksum-verified state dict of checkpoint ``path``; a missing or damaged file names ``stage``."""
    stage = stage or train_stage(path)
    blob = read_safetensors(Path(path) / WEIGHTS, stage)
    try:
        return load(blob)
    except SafetensorError as e:
        raise corrupt(Path(path) / WEIGHTS, str(e), stage) from None


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
    return read_weights(path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", stage: str | None = None
                    ) -> tuple[Classifier | QuestionModel, dict[str, Any]]:
    """(model in eval mode on ``device``, manifest) from a checkpoint dir written by :func:`save_checkpoint`
    (a :class:`QuestionModel` when the manifest has ``tokens``); a missing or damaged file names ``stage``
    (default :func:`train_stage`)."""
    manifest = read_manifest(path, stage)
    spec = {"arch": manifest["arch"], "kwargs": manifest["kwargs"], "mean": manifest["mean"], "std": manifest["std"]}
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not shift the caller's seeded RNG
        if "tokens" in manifest:
            model = build_question_model(manifest["arch"], len(manifest["classes"]), len(manifest["tokens"]),
                                         int(manifest["input_size"]), **manifest["kwargs"])
        elif manifest.get("external"):  # an entry-point or TorchScript model (salbench.models.external)
            from .external import rebuild

            model = rebuild(Path(path), manifest)
        else:
            model = build_model(spec, len(manifest["classes"]), int(manifest["input_size"]))
    model.load_state_dict(read_weights(path, stage))
    return model.to(device).eval(), manifest
