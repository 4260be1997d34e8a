"""Maps stored as float16 (attribute.map_dtype) change no metric by more than 1e-3."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from eval_helpers import EVALUATE, METHODS, write_setup

from salbench.attribution.cache import MapWriter, load_maps
from salbench.evaluate import EvalData, evaluate, parse_config
from salbench.evaluate.artifacts import load_entries, load_models, model_hash, table_rows


def _rows(root: Path, s: dict, maps: Path) -> dict[tuple, float]:
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    labels = torch.from_numpy(s["split"]["label"])
    data = EvalData(s["x"], labels, torch.from_numpy(s["split"]["gt_mask"]), s["predicted"])
    entries = load_entries(METHODS, "cnn", maps, models.model, model_hash(s["model_dir"]), data,
                           s["predicted"], 0, "attribute@t-m")
    rows = table_rows(evaluate(models, data, entries, parse_config(EVALUATE)), "t", "m", "cnn")
    return {(r["method"], r["metric"], r["variant"], r["statistic"], r["step"]): r["mean"] for r in rows}


def test_float16_maps_keep_every_metric_within_1e_3(tmp_path: Path) -> None:
    s = write_setup(tmp_path, "cnn")
    for d in sorted((tmp_path / "maps").iterdir()):
        maps, targets, manifest = load_maps(d)
        writer = MapWriter(tmp_path / "maps16" / d.name, model_hash=manifest["model_hash"], method=d.name,
                           params=manifest["params"], layer=manifest["layer"], seed=manifest["seed"], dtype="float16")
        writer.add("k", maps, targets)
        assert writer.close(manifest["inputs"])["key"] == manifest["key"]
        assert load_maps(tmp_path / "maps16" / d.name)[0].dtype == torch.float32
    full, half = _rows(tmp_path, s, tmp_path / "maps"), _rows(tmp_path, s, tmp_path / "maps16")
    assert full.keys() == half.keys() and len(full) > 50
    diffs = {k: abs(full[k] - half[k]) for k in full if not (math.isnan(full[k]) and math.isnan(half[k]))}
    worst = max(diffs.items(), key=lambda kv: kv[1])
    assert worst[1] <= 1e-3, worst
    assert max(diffs.values()) > 0 or pytest.fail("float16 storage changed nothing: the test does not test it")
