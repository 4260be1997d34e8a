"""Map cache: shards + manifest keyed by what the maps depend on."""
from __future__ import annotations

import json

import pytest
import torch

from salbench.attribution.cache import cache_key, is_fresh, load_maps, read_manifest, save_maps

ARGS = dict(model_hash="abc123", method="gradcam", params={"layer": "layer4"}, layer="net.layer4", seed=0)


def test_round_trip_in_shards(tmp_path):
    maps, targets = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    manifest = save_maps(tmp_path / "maps", maps, targets, shard_size=2, **ARGS)
    assert manifest["shards"] == ["maps-00000.safetensors", "maps-00001.safetensors", "maps-00002.safetensors"]
    loaded, loaded_targets, read = load_maps(tmp_path / "maps", key=manifest["key"])
    assert torch.equal(loaded, maps) and torch.equal(loaded_targets, targets)
    assert read == json.loads((tmp_path / "maps" / "manifest.json").read_text())
    assert read["layer"] == "net.layer4" and read["shape"] == [5, 1, 8, 8]
    assert {"torch", "timm", "captum"} <= set(read["provenance"]["versions"])


def test_key_changes_with_each_input_only():
    targets = torch.tensor([0, 1])
    base = cache_key(targets=targets, **ARGS)
    assert cache_key(targets=targets.clone(), **ARGS) == base
    variants = [dict(ARGS, model_hash="other"), dict(ARGS, method="normgrad"), dict(ARGS, params={"layer": "layer3"}),
                dict(ARGS, layer="net.layer3"), dict(ARGS, seed=1)]
    keys = {cache_key(targets=targets, **v) for v in variants} | {cache_key(targets=torch.tensor([1, 0]), **ARGS)}
    assert len(keys) == 6 and base not in keys


def test_freshness_and_stale_or_missing_maps(tmp_path):
    targets = torch.tensor([0, 1])
    key = save_maps(tmp_path / "m", torch.zeros(2, 3, 4, 4), targets, **ARGS)["key"]
    assert is_fresh(tmp_path / "m", key)
    assert not is_fresh(tmp_path / "m", cache_key(targets=targets, **dict(ARGS, seed=5)))
    assert not is_fresh(tmp_path / "absent", key)
    with pytest.raises(ValueError, match="dvc repro attribute"):
        load_maps(tmp_path / "m", key="0" * 16)
    with pytest.raises(FileNotFoundError, match="dvc repro attribute"):
        read_manifest(tmp_path / "absent")


def test_mismatched_lengths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="3 maps but 2 targets"):
        save_maps(tmp_path / "m", torch.zeros(3, 1, 2, 2), torch.tensor([0, 1]), **ARGS)
