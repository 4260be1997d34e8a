"""Rendering: determinism, exact instance masks, GT masks, re-rendering, the DVC stage."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from salbench.render import Renderer, get_renderer, World, build_task, load_manifest, load_scenes, load_split, render_splits
from salbench.errors import SalbenchError
from salbench.render.scene import annotate_pixels

from helpers import ROOT, TINY_RENDER, run

WORLD = World(resolution=64, max_objects=5, min_pixels=12)
SIZES = {"train": 6, "test": 4}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return get_renderer(WORLD.resolution)


@pytest.fixture(scope="module")
def rendered() -> dict:
    return {s: (a, r) for s, a, r in render_splits(WORLD, "unique-query", {}, SIZES, seed=3)}


def test_arrays_have_the_documented_layout(rendered: dict) -> None:
    arrays, records = rendered["train"]
    n, h = SIZES["train"], WORLD.resolution
    assert arrays["images"].shape == (n, h, h, 3) and arrays["images"].dtype == np.uint8
    assert arrays["instance"].shape == (n, h, h) and arrays["instance"].dtype == np.uint8
    assert arrays["depth"].dtype == np.float16 and arrays["gt_mask"].dtype == bool
    assert len(records) == n
    # Class balance is exact: counts differ by at most one.
    counts = np.bincount(arrays["label"], minlength=8)
    assert counts.max() - counts.min() <= 1


def test_rendering_is_deterministic_and_independent_of_workers(rendered: dict) -> None:
    again = {s: (a, r) for s, a, r in render_splits(WORLD, "unique-query", {}, SIZES, seed=3, workers=2)}
    for split in SIZES:
        for key, arr in rendered[split][0].items():
            np.testing.assert_array_equal(arr, again[split][0][key], err_msg=f"{split}/{key}")
        assert rendered[split][1] == again[split][1]
    other = next(render_splits(WORLD, "unique-query", {}, {"train": 2}, seed=4))[1]
    assert not np.array_equal(other["images"], rendered["train"][0]["images"][:2])


def test_every_object_is_visible_and_counted(rendered: dict) -> None:
    arrays, records = rendered["train"]
    for inst, rec in zip(arrays["instance"], records):
        counts = np.bincount(inst.reshape(-1), minlength=len(rec["objects"]) + 1)
        assert len(counts) == len(rec["objects"]) + 1  # no ids beyond the objects
        assert [o["pixels"] for o in rec["objects"]] == counts[1:].tolist()
        assert counts[1:].min() >= WORLD.min_pixels


def test_instance_masks_cover_exactly_the_object_pixels(rendered: dict, renderer: Renderer) -> None:
    """Inside an object's mask the image differs from the empty scene; outside all masks the
    depth equals the empty scene's (only the ground is hit there), except on the 1-px rim where
    the anti-aliased colour pass and the exact flat-colour pass sample a pixel differently."""
    from scipy.ndimage import binary_dilation

    arrays, records = rendered["train"]
    for img, inst, depth, rec in zip(arrays["images"], arrays["instance"], arrays["depth"], records):
        empty_rgb, empty_depth = renderer.color({**rec, "objects": []})
        for k in range(len(rec["objects"])):
            m = inst == k + 1
            differs = np.abs(img[m].astype(int) - empty_rgb[m].astype(int)).sum(-1) > 0
            assert differs.mean() > 0.97, f"object {k}: only {differs.mean():.2f} of its mask differs"
        ground = inst == 0
        off = ~np.isclose(depth, empty_depth.astype(np.float16), rtol=1e-3, atol=1e-3) & ground
        rim = binary_dilation(~ground, np.ones((3, 3), bool)) & ground
        assert not (off & ~rim).any(), "depth differs from the empty scene away from any object"
        # Objects stand on or in front of the ground (float16 depth: 1e-2 tolerance).
        assert (depth[~ground] <= empty_depth[~ground] + 1e-2).all()


def test_gt_mask_is_the_union_of_the_relevant_objects(rendered: dict) -> None:
    task = build_task("unique-query", WORLD, {})
    arrays, records = rendered["test"]
    for lab, gt, inst, rec in zip(arrays["label"], arrays["gt_mask"], arrays["instance"], records):
        (k,) = task.relevant(rec)
        np.testing.assert_array_equal(gt, inst == k + 1)
        assert task.label(rec) == lab
        assert rec["objects"][k]["material"] == "metal"


def test_rerender_of_an_unedited_record_is_identical(rendered: dict, renderer: Renderer) -> None:
    arrays, records = rendered["test"]
    for i, rec in enumerate(records):
        frame = renderer.render(rec)
        np.testing.assert_array_equal(frame.rgb, arrays["images"][i])
        np.testing.assert_array_equal(frame.instance, arrays["instance"][i])


def test_rerender_of_an_edited_record_changes_only_that_object(rendered: dict, renderer: Renderer) -> None:
    rec = rendered["test"][1][0]
    inst = rendered["test"][0]["instance"][0]
    k = int(np.argmax([o["pixels"] for o in rec["objects"]]))
    new_color = "yellow" if rec["objects"][k]["color"] != "yellow" else "blue"
    edited = {**rec, "objects": [dict(o, color=new_color) if j == k else o for j, o in enumerate(rec["objects"])]}
    frame = renderer.render(edited)
    np.testing.assert_array_equal(frame.instance, inst)  # geometry unchanged
    changed = np.abs(frame.rgb.astype(int) - rendered["test"][0]["images"][0].astype(int)).sum(-1) > 0
    assert changed[inst == k + 1].mean() > 0.9
    # Colour bleeds only through reflections/shading: far fewer changed pixels outside the object.
    assert changed[inst != k + 1].mean() < 0.05
    assert annotate_pixels(edited, frame.instance)["objects"][k]["pixels"] == rec["objects"][k]["pixels"]


def test_render_stage_bad_params_fail_before_rendering(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("render:\n  resolution: 16\n  splits: {train: 1, val: 1, test: 1}\ntasks: {}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "stages/render.py"), "--task", "unique-query", "--params",
                           str(params), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode != 0 and "below the minimum of 32" in proc.stderr
    assert not (tmp_path / "out").exists()
    params.write_text("render:\n  resolutoin: 64\n  splits: {train: 1, val: 1, test: 1}\ntasks: {}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "stages/render.py"), "--task", "unique-query", "--params",
                           str(params)], capture_output=True, text=True)
    assert "did you mean 'resolution'" in proc.stderr


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_dvc_repro_render_is_byte_reproducible(pipeline_copy) -> None:
    repo = pipeline_copy({"render": TINY_RENDER})
    run([sys.executable, "-m", "dvc", "repro", "render"], repo)
    out = repo / "data/render/unique-query"
    manifest = load_manifest(out)
    assert manifest["splits"]["train"]["n"] == TINY_RENDER["splits"]["train"]
    assert sum(manifest["splits"]["train"]["class_counts"].values()) == TINY_RENDER["splits"]["train"]
    assert load_split(out, "test")["images"].shape == (8, 64, 64, 3)
    assert all("caption" in r for r in load_scenes(out)["val"])
    assert (repo / "data/plots/render/presence/gt_masks.png").exists()
    balance = json.loads((repo / "data/metrics/render/presence.json").read_text())["class_balance"]
    assert balance["train"] == {"false": 12, "true": 12}
    first = {t: _digest(repo / "data/render" / t) for t in ("unique-query", "presence")}
    status = run([sys.executable, "-m", "dvc", "status", "render"], repo).stdout
    assert "up to date" in status, status
    run([sys.executable, "-m", "dvc", "repro", "--force", "render"], repo)
    assert first == {t: _digest(repo / "data/render" / t) for t in ("unique-query", "presence")}
    assert json.loads((out / "manifest.json").read_text())["provenance"]["seed"] == 0


def test_splits_grow_by_prefix() -> None:
    """Image i is the same whatever the split size: a larger split extends a smaller one, byte for byte."""
    (_, small, small_rec), = render_splits(WORLD, "unique-query", {}, {"test": 6}, seed=3)
    (_, big, big_rec), = render_splits(WORLD, "unique-query", {}, {"test": 10}, seed=3)
    for key, arr in small.items():
        assert arr.tobytes() == big[key][:6].tobytes(), key
    assert json.dumps(small_rec, sort_keys=True) == json.dumps(big_rec[:6], sort_keys=True)


@pytest.mark.parametrize("n_classes", [2, 3, 8])
def test_split_labels_are_balanced_in_every_prefix(n_classes: int) -> None:
    from salbench.render.dataset import split_labels

    labels = split_labels(50, n_classes, seed=0, split="test")
    for n in range(51):
        prefix = split_labels(n, n_classes, seed=0, split="test")
        assert np.array_equal(prefix, labels[:n])
        counts = np.bincount(prefix, minlength=n_classes)
        assert counts.max() - counts.min() <= 1
    assert not np.array_equal(labels, split_labels(50, n_classes, seed=1, split="test"))
    assert not np.array_equal(labels, split_labels(50, n_classes, seed=0, split="val"))


def test_split_reader_reads_rows_and_only_the_arrays_asked_for(rendered: dict, tmp_path: Path) -> None:
    from salbench.io import save_shard
    from salbench.render.dataset import SplitReader

    arrays = rendered["train"][0]
    save_shard(tmp_path / "train.safetensors", arrays)
    reader = SplitReader(tmp_path, "train")
    assert len(reader) == SIZES["train"] and list(reader.blocks(4)) == [(0, 4), (4, 6)]
    for key, arr in arrays.items():
        assert np.array_equal(reader.read(key, 2, 5), arr[2:5]) and reader.read(key).dtype == arr.dtype
    assert set(load_split(tmp_path, "train", keys=("images", "label"))) == {"images", "label"}
    with pytest.raises(SalbenchError, match="no array 'masks'"):
        reader.read("masks")
    blob = (tmp_path / "train.safetensors").read_bytes()
    (tmp_path / "train.safetensors").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(SalbenchError, match="render@"):
        SplitReader(tmp_path, "train")  # checked up front, before any row is read
