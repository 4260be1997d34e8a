"""Test helpers shared across areas: tiny params, deep merge, running commands."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The default presence task (params.yaml tasks.presence) with the spurious concept in train only.
PRESENCE = {
    "concepts": {
        "red_cube": {"color": "red", "shape": "cube"},
        "blue_sphere": {"color": "blue", "shape": "sphere"},
        "green_cylinder": {"color": "green", "shape": "cylinder"},
        "yellow_object": {"color": "yellow"},
    },
    "rule": "red_cube and not blue_sphere",
    "spurious": {"concept": "green_cylinder", "p": 0.9, "splits": ["train"]},
}

TINY_RENDER = {
    "resolution": 64,
    "splits": {"train": 24, "val": 8, "test": 8},
    "min_pixels": 12,
    "max_objects": 5,
    "workers": 1,
    "preview": 4,
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's bin dir first on PATH (so `python` and `dvc` are ours)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


TINY_MODEL = {"epochs": 1, "batch_size": 8, "checkpoint_epochs": [1], "random_labels": {"n_train": 8, "epochs": 2}}
TINY_PIPELINE = {  # every stage of dvc.yaml in about a minute on 2 cores
    "render": TINY_RENDER,
    "train": {"min_test_accuracy": 0.0,
              "models": {m: TINY_MODEL for m in yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["models"]}},
    "attribute": {"batch_size": 16},
    "concepts": {
        "n_images": 8, "permutations": 2, "batch_size": 16, "preview": 4,
        "diffusion": {"resolution": 16, "steps": 2, "batch_size": 4, "channels": [8, 16], "text_dim": 16,
                      "inference_steps": 2, "sample_batch_size": 16, "sample_every": 1},
        "h": {"epochs": 1, "batch_size": 8},
    },
}
