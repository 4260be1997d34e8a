"""A per-entry `explain` through the attribute stage: the entry explains the class it asks for even though
the stage explains predicted classes (attribute.explain: predicted) for every other entry."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from salbench.attribution import METHODS
from salbench.attribution.cache import load_maps
from salbench.io import save_shard
from salbench.models import build_model, load_checkpoint, preprocess, save_checkpoint
from salbench.render import load_split

from helpers import ROOT

METHODS_PARAMS = {
    "gradient": {},
    "gradient_true": {"method": "gradient", "explain": "true"},
    "gradient_lowest": {"method": "gradient", "explain": "lowest"},
}


@pytest.mark.slow  # one stage subprocess: ~15-35 s on the shared 2-core machine
def test_per_entry_explain_through_the_stage(tmp_path):
    torch.manual_seed(0)
    model = build_model({"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 8, 8]}}, 3, 16)
    save_checkpoint(tmp_path / "models" / "t" / "m" / "final", model.eval(),
                    {"task": "t", "classes": ["a", "b", "c"], "accuracy": {}, "params_hash": "x", "seed": 0,
                     "versions": {}})
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    loaded, manifest = load_checkpoint(tmp_path / "models" / "t" / "m" / "final")
    save_shard(tmp_path / "render" / "test.safetensors", {"images": images, "label": np.zeros(6, dtype=np.int64)})
    x = preprocess(load_split(tmp_path / "render", "test")["images"], manifest)
    with torch.no_grad():
        logits = loaded(x)
    labels = (logits.argmax(1) + torch.tensor([1, 2, 0, 1, 2, 0])) % 3  # labels != predictions for 4 of 6
    save_shard(tmp_path / "render" / "test.safetensors", {"images": images, "label": labels.numpy()})
    params = {"attribute": {"seed": 0, "device": "cpu", "batch_size": 4, "split": "test", "checkpoint": "final",
                            "explain": "predicted", "methods": METHODS_PARAMS}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "attribute.py"), "--task", "t", "--model", "m", "--params",
           str(tmp_path / "params.yaml"), "--data", str(tmp_path / "render"), "--models", str(tmp_path / "models"),
           "--out", str(tmp_path / "maps")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path)

    gradient = METHODS.get("gradient")
    expected = {"gradient": logits.argmax(1), "gradient_true": labels, "gradient_lowest": logits.argmin(1)}
    assert not torch.equal(expected["gradient_true"], expected["gradient"])
    for name, classes in expected.items():
        maps, targets, _ = load_maps(tmp_path / "maps" / name)
        assert torch.equal(targets, classes), name  # the recorded targets are the explained classes
        torch.testing.assert_close(maps, gradient(loaded, x, classes), msg=name)
