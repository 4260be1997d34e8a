"""The attribute stage on a tiny checkpoint and split: maps on disk, and only changed methods recomputed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from salbench.attribution import METHODS, MultiLayer
from salbench.attribution.cache import load_maps
from salbench.io import save_shard
from salbench.models import build_model, load_checkpoint, preprocess, save_checkpoint
from salbench.render import load_split

from helpers import ROOT

METHODS_PARAMS = {
    "gradient": {},
    "gradcam": {"layer": {"cnn": "layer3", "vit": "blocks.-1.norm1"}},
    "smoothgrad": {"base": "normgrad", "samples": 2},
    "normgrad_multi": {"method": "normgrad", "layers": ["layer3", "layer4"], "families": ["cnn"]},
    "lrp": {"families": ["cnn"]},
}


def _run(tmp: Path, methods: dict) -> str:
    params = {"attribute": {"seed": 0, "device": "cpu", "batch_size": 3, "split": "test", "checkpoint": "final",
                            "explain": "predicted", "methods": methods}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "attribute.py"), "--task", "t", "--model", "m",
           "--params", str(tmp / "params.yaml"), "--data", str(tmp / "render"), "--models", str(tmp / "models"),
           "--out", str(tmp / "maps")]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp).stdout


@pytest.mark.slow  # two stage subprocesses: ~25-35 s on the shared 2-core machine
def test_stage_writes_maps_and_recomputes_only_changed_methods(tmp_path):
    torch.manual_seed(0)
    model = build_model({"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 16, 24, 32]}}, 3, 32)
    save_checkpoint(tmp_path / "models" / "t" / "m" / "final", model.eval(),
                    {"task": "t", "classes": ["a", "b", "c"], "accuracy": {}, "params_hash": "x", "seed": 0,
                     "versions": {}})
    rng = np.random.default_rng(0)
    save_shard(tmp_path / "render" / "test.safetensors",
               {"images": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
                "label": np.array([0, 1, 2, 0, 1], dtype=np.int64)})

    log = _run(tmp_path, METHODS_PARAMS)
    assert "computed ['gradcam', 'gradient', 'lrp', 'normgrad_multi', 'smoothgrad']" in log

    loaded, manifest = load_checkpoint(tmp_path / "models" / "t" / "m" / "final")
    x = preprocess(load_split(tmp_path / "render", "test")["images"], manifest)
    predicted = loaded(x).argmax(1)
    maps, targets, manifest = load_maps(tmp_path / "maps" / "gradcam")
    assert torch.equal(targets, predicted) and manifest["layer"] == "net.layer3"
    torch.testing.assert_close(maps, METHODS.get("gradcam")(loaded, x, predicted, layer="layer3"))
    multi, _, manifest = load_maps(tmp_path / "maps" / "normgrad_multi")
    assert manifest["layer"] == "net.layer3,net.layer4"
    torch.testing.assert_close(multi, MultiLayer("normgrad", ["layer3", "layer4"])(loaded, x, predicted))

    before = {d.name: (d / "manifest.json").stat().st_mtime_ns for d in (tmp_path / "maps").iterdir()}
    changed = {**METHODS_PARAMS, "gradcam": {"layer": {"cnn": "layer4", "vit": "blocks.-1.norm1"}}}
    del changed["lrp"]
    log = _run(tmp_path, changed)
    assert "computed ['gradcam'] " in log and "kept ['gradient', 'normgrad_multi', 'smoothgrad']" in log
    after = {d.name: (d / "manifest.json").stat().st_mtime_ns for d in (tmp_path / "maps").iterdir()}
    assert set(after) == {"gradient", "gradcam", "normgrad_multi", "smoothgrad"}  # lrp's maps removed
    assert all(after[k] == before[k] for k in ("gradient", "normgrad_multi", "smoothgrad"))
    assert load_maps(tmp_path / "maps" / "gradcam")[2]["layer"] == "net.layer4"
