"""The streamed attribute loop: maps equal to one unstreamed call, per-shard reuse when a split grows,
float16 storage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import salbench.attribution.stream as stream
from salbench.attribution import attribute_many, build
from salbench.attribution.cache import MapWriter, load_maps, read_manifest
from salbench.attribution.stream import attribute_split
from salbench.io import save_shard
from salbench.models import build_model, preprocess
from salbench.render.dataset import SplitReader

ENTRIES = {"gradient": {}, "gradcam": {"layer": {"cnn": "layer3", "vit": "blocks.-1.norm1"}},
           "smoothgrad": {"base": "gradient", "samples": 2, "sigma": 0.1},
           "integrated_gradients": {"steps": 2}, "gt_mask": {}, "lrp": {"families": ["cnn"]},
           "gradient_true": {"method": "gradient", "explain": "true"}}
MANIFEST = {"family": "cnn", "input_size": 32}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 16, 16]}}, 3, 32).eval()


def _split(root: Path, n: int) -> Path:
    """A fabricated split whose first images do not depend on ``n`` (as rendered splits now)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)[:n]
    masks = np.zeros((10, 32, 32), dtype=bool)
    for i in range(10):
        masks[i, 2 * i:2 * i + 8, 4:12] = True
    save_shard(root / "test.safetensors", {"images": images, "label": np.arange(10, dtype=np.int64)[:n] % 3,
                                           "gt_mask": masks[:n]})
    return root


def _run(model, root: Path, out: Path, **kw) -> stream.StreamStats:
    return attribute_split(model, MANIFEST, SplitReader(root, "test"), ENTRIES, out, model_hash="h", seed=0,
                           batch_size=2, **kw)


def test_streamed_maps_equal_one_unstreamed_call(model, tmp_path: Path) -> None:
    root = _split(tmp_path / "render", 10)
    stats = _run(model, root, tmp_path / "maps", shard_size=4)
    assert stats.computed == {name: 3 for name in ENTRIES} and set(stats.kept.values()) == {0}
    split = SplitReader(root, "test")
    x = preprocess(split.read("images"), MANIFEST)
    labels = torch.from_numpy(split.read("label"))
    predicted = model(x).argmax(1)
    masks = torch.from_numpy(split.read("gt_mask"))
    built = {n: build(n, e, "cnn") for n, e in ENTRIES.items()}
    whole = attribute_many(model, x, predicted, [b for n, b in built.items() if n != "gradient_true"], batch_size=2,
                           masks=masks)
    for name, expected in zip([n for n in built if n != "gradient_true"], whole):
        maps, targets, manifest = load_maps(tmp_path / "maps" / name)
        assert torch.equal(targets, predicted) and manifest["shards"] == [f"maps-0000{i}.safetensors" for i in range(3)]
        torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6, msg=name)
    maps, targets, _ = load_maps(tmp_path / "maps" / "gradient_true")
    assert torch.equal(targets, labels)
    torch.testing.assert_close(maps, attribute_many(model, x, labels, [built["gradient_true"]], batch_size=2)[0])


def test_growing_the_split_computes_only_the_new_shards(model, tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = stream.attribute_many

    def counting(model, images, *args, **kw):
        calls.append(len(images))
        return real(model, images, *args, **kw)

    monkeypatch.setattr(stream, "attribute_many", counting)
    _run(model, _split(tmp_path / "r6", 6), tmp_path / "maps", shard_size=2)
    assert len(calls) == 2 * 3  # two call-target groups (predicted; gradient_true's labels) × three shards
    first = {name: read_manifest(tmp_path / "maps" / name) for name in ENTRIES}
    calls.clear()
    stats = _run(model, _split(tmp_path / "r10", 10), tmp_path / "maps", shard_size=2)
    assert calls == [2] * 4 and stats.kept == {n: 3 for n in ENTRIES} and stats.computed == {n: 2 for n in ENTRIES}
    for name in ENTRIES:
        grown = read_manifest(tmp_path / "maps" / name)
        assert grown["shape"][0] == 10 and list(grown["shard_keys"].values())[:3] == list(first[name]["shard_keys"].values())
    calls.clear()  # unchanged: nothing computed, the directories are left as they are
    before = (tmp_path / "maps" / "gradcam" / "manifest.json").stat().st_mtime_ns
    _run(model, _split(tmp_path / "r10", 10), tmp_path / "maps", shard_size=2)
    assert calls == [] and (tmp_path / "maps" / "gradcam" / "manifest.json").stat().st_mtime_ns == before
    # a damaged shard is recomputed, the others kept
    shard = tmp_path / "maps" / "gradcam" / "maps-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    stats = _run(model, _split(tmp_path / "r10", 10), tmp_path / "maps", shard_size=2)
    assert stats.computed["gradcam"] == 1 and stats.computed["gradient"] == 0


def test_float16_storage_halves_the_maps_and_loads_as_float32(model, tmp_path: Path) -> None:
    root = _split(tmp_path / "render", 4)
    _run(model, root, tmp_path / "m32", shard_size=4)
    _run(model, root, tmp_path / "m16", shard_size=4, dtype="float16")
    a, _, _ = load_maps(tmp_path / "m32" / "gradient")
    b, _, manifest = load_maps(tmp_path / "m16" / "gradient")
    assert manifest["dtype"] == "float16" and b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * a.abs().max().item())
    size = lambda d: (d / "gradient" / "maps-00000.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "m16") < 0.55 * size(tmp_path / "m32")
    with pytest.raises(Exception, match="map_dtype"):
        MapWriter(tmp_path / "x", model_hash="h", method="g", params={}, layer=None, seed=0, dtype="int8")
