"""Evaluate streamed from disk (SplitData, MapReader) gives the same bytes as the whole split in memory, and
reads no more than a block (or a metric's first ``samples``) at a time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_helpers import EVALUATE, METHODS, N, write_setup

from salbench.attribution.cache import load_maps, save_maps
from salbench.evaluate import EvalData, SplitData, evaluate, parse_config
from salbench.attribution.cache import MapReader
from salbench.evaluate.artifacts import load_entries, load_models, model_hash, table_rows
from salbench.evaluate.suite import streamed
from salbench.io import CorruptArtifactError
from salbench.render.dataset import SplitReader

BLOCK = 3  # blocks 0-3, 3-6, 6-8 of the 8 samples; map shards of 3 as well


class CountingSplit(SplitData):
    """SplitData that records the rows each read asks for."""

    def read(self, start: int, stop: int) -> EvalData:
        self.reads = [*getattr(self, "reads", []), (start, stop)]
        return super().read(start, stop)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    s = write_setup(root, "cnn")
    for d in sorted((root / "maps").iterdir()):  # the same maps, in shards of BLOCK
        maps, targets, manifest = load_maps(d)
        save_maps(d, maps, targets, model_hash=manifest["model_hash"], method=manifest["method"],
                  params=manifest["params"], layer=manifest["layer"], seed=manifest["seed"],
                  inputs=manifest["inputs"], shard_size=BLOCK)
    models = load_models(s["model_dir"], torch.device("cpu"), "train@t-m")
    return root, s, models


def _report(root: Path, s: dict, models, data):
    entries = load_entries(METHODS, "cnn", root / "maps", models.model, model_hash(s["model_dir"]), data,
                           data.targets(models.model, "predicted", 8), 0, "attribute@t-m")
    return evaluate(models, data, entries, parse_config(EVALUATE))


def test_streamed_evaluate_is_byte_identical_to_the_split_in_memory(setup):
    root, s, models = setup
    labels = torch.from_numpy(s["split"]["label"])
    whole = _report(root, s, models, EvalData(s["x"], labels, torch.from_numpy(s["split"]["gt_mask"]), s["predicted"]))
    data = CountingSplit(SplitReader(root / "render", "test"), models.model, torch.device("cpu"), 8, BLOCK)
    report = _report(root, s, models, data)
    rows = table_rows(report, "t", "m", "cnn")
    assert repr(rows) == repr(table_rows(whole, "t", "m", "cnn"))  # every float to the last bit, NaNs included
    assert len(rows) > 100 and report.examples.keys() == whole.examples.keys()
    for key, value in whole.examples.items():
        assert torch.equal(report.examples[key], value), key
    # at most a block, or the first `samples` of a metric that sees them at once (aopc: 6), per read
    config = parse_config(EVALUATE)
    held = max(s.samples or N for s in config.specs if not streamed(s))
    assert held < N and max(stop - start for start, stop in data.reads) == max(BLOCK, held)
    assert {"mass_accuracy", "rank_accuracy", "pointing_game"} == {s.name for s in config.specs if streamed(s)}


def test_map_reader_reads_rows_across_shards(setup):
    root, _, _ = setup
    maps, targets, manifest = load_maps(root / "maps" / "gradcam")
    reader = MapReader(root / "maps" / "gradcam", manifest["key"], "attribute@t-m")
    for start, stop in [(0, None), (2, 7), (3, 6), (7, 20), (5, 5)]:
        got, got_targets = reader.read(start, stop)
        assert torch.equal(got, maps[start:stop]) and torch.equal(got_targets, targets[start:stop]), (start, stop)


def test_map_reader_names_a_truncated_cache(setup, tmp_path):
    root, _, _ = setup
    maps, targets, manifest = load_maps(root / "maps" / "gradcam")
    save_maps(tmp_path / "gradcam", maps[:5], targets[:5], model_hash=manifest["model_hash"], method="gradcam",
              params=manifest["params"], layer=manifest["layer"], seed=0, shard_size=BLOCK)
    path = tmp_path / "gradcam" / "manifest.json"
    truncated = json.loads(path.read_text())
    truncated["shape"][0] = 8  # the manifest says 8 maps, its shards hold 5
    path.write_text(json.dumps(truncated))
    key = truncated["key"]
    with pytest.raises(CorruptArtifactError, match=r"hold 5 maps, not 8.*dvc repro -f attribute@t-m"):
        MapReader(tmp_path / "gradcam", key, "attribute@t-m")
