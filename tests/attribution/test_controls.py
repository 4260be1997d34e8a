"""Control maps (edge, gt_mask, gt_blur): references from scipy, no model call, and the per-sample inputs
(GT masks) through attribute_many, the cache key and the attribute stage for both model families."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from torch import nn

from salbench.attribution import METHODS, ExplainClass, MetaSaliency, attribute_many
from salbench.attribution.cache import cache_key, load_maps, method_inputs
from salbench.errors import SalbenchError
from salbench.io import save_shard
from salbench.models import build_model, load_checkpoint, preprocess, save_checkpoint

from attribution.attr_helpers import tiny_resnet
from helpers import ROOT


class Untouchable(nn.Module):
    """A model whose forward raises: a control that called it would fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the control map called the model")


@pytest.fixture
def masks() -> torch.Tensor:
    m = torch.zeros(4, 32, 32, dtype=torch.bool)
    m[0, 3:9, 5:20] = m[1, 20:32, 0:7] = m[2, 0:2, 0:2] = m[3, 10:25, 10:25] = True
    return m


def test_edge_is_the_sobel_magnitude_without_the_model(images, targets):
    maps = METHODS.get("edge")(Untouchable(), images, targets)
    # scipy's sobel smooths along every other axis, so it gets one 2-D channel at a time; its default
    # mode "reflect" repeats the edge pixel, as the replicate padding does for a 3×3 kernel.
    ref = np.stack([[np.hypot(ndimage.sobel(c, axis=0), ndimage.sobel(c, axis=1)) for c in im]
                    for im in images.double().numpy()])
    assert maps.shape == images.shape
    np.testing.assert_allclose(maps.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_edge_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    x[..., 2:] = 1.0  # a vertical step between columns 1 and 2
    maps = METHODS.get("edge")(Untouchable(), x, torch.zeros(1, dtype=torch.long))
    # g_x = (1 + 2 + 1)·1 at the two columns next to the step, 0 elsewhere; g_y = 0
    expected = torch.tensor([0.0, 4.0, 4.0, 0.0]).expand(4, 4)
    torch.testing.assert_close(maps[0, 0], expected)


def test_gt_controls_from_the_masks_without_the_model(images, targets, masks):
    gt = METHODS.get("gt_mask")(Untouchable(), images, targets, masks=masks)
    torch.testing.assert_close(gt, masks[:, None].float())
    blur = METHODS.get("gt_blur")(Untouchable(), images, targets, masks=masks, sigma=2.5)
    ref = ndimage.gaussian_filter(masks.double().numpy(), sigma=(0, 2.5, 2.5), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(blur[:, 0].numpy(), ref, atol=1e-6)
    assert blur.shape == (4, 1, 32, 32)


def test_missing_or_bad_masks_say_what_to_pass(images, targets, masks):
    with pytest.raises(SalbenchError, match=r"'gt_mask' needs masks=<tensor with 4 rows"):
        METHODS.get("gt_mask")(Untouchable(), images, targets)
    with pytest.raises(SalbenchError, match="bool tensor N×H×W"):
        METHODS.get("gt_mask")(Untouchable(), images, targets, masks=masks.float())
    with pytest.raises(SalbenchError, match="sigma must be a positive"):
        METHODS.get("gt_blur")(Untouchable(), images, targets, masks=masks, sigma=0)
    with pytest.raises(SalbenchError, match="cannot wrap 'gt_blur'"):
        MetaSaliency("gt_blur", 0.1)
    with pytest.raises(SalbenchError, match="cannot wrap 'gt_mask'"):
        ExplainClass("gt_mask", "true")
    with pytest.raises(SalbenchError, match="cannot wrap 'gt_mask'"):
        METHODS.get("smoothgrad")(tiny_resnet(), images, targets, base="gt_mask", samples=2)


def test_attribute_many_hands_masks_to_the_methods_that_need_them(images, targets, masks):
    model = tiny_resnet()
    entries = [("gradient", {}), ("gt_blur", {"sigma": 1.0}), ("edge", {}), ("gt_mask", {}), ("gradcam", {})]
    maps = attribute_many(model, images, targets, entries, batch_size=3, masks=masks)
    for (name, params), m in zip(entries, maps):
        extra = {"masks": masks} if METHODS.get(name).needs else {}
        torch.testing.assert_close(m, METHODS.get(name)(model, images, targets, **params, **extra))
    with pytest.raises(SalbenchError, match="needs masks="):
        attribute_many(model, images, targets, entries)
    with pytest.raises(SalbenchError, match="needs masks=<tensor with 4 rows"):
        attribute_many(model, images, targets, entries, masks=masks[:3])


def test_cache_key_covers_the_masks(masks):
    args = dict(model_hash="h", method="gt_mask", params={}, layer=None, targets=torch.tensor([0, 1, 2, 3]), seed=0)
    key = cache_key(**args, inputs=method_inputs(("masks",), {"masks": masks}))
    assert key == cache_key(**args, inputs=method_inputs(("masks",), {"masks": masks.clone()}))
    other = masks.clone()
    other[0, 0, 0] = ~other[0, 0, 0]
    assert key != cache_key(**args, inputs=method_inputs(("masks",), {"masks": other}))
    assert method_inputs((), {}) == {}
    with pytest.raises(SalbenchError, match="render stage writes gt_mask"):
        method_inputs(("masks",), {})


SPECS = {"cnn": {"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 16, 16]}},
         "vit": {"arch": "vit-tiny", "kwargs": {"patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}}}
CONTROLS = {"random": {}, "edge": {}, "gt_mask": {}, "gt_blur": {"sigma": 2}, "gradient": {}}


def _stage(tmp: Path, family: str) -> str:
    params = {"attribute": {"seed": 0, "device": "cpu", "batch_size": 4, "split": "test", "checkpoint": "final",
                            "explain": "predicted", "methods": CONTROLS}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "attribute.py"), "--task", "t", "--model", family,
           "--params", str(tmp / "params.yaml"), "--data", str(tmp / "render"), "--models", str(tmp / "models"),
           "--out", str(tmp / "maps" / family)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _split(tmp: Path, shift: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 32, 32), dtype=bool)
    for i in range(3):
        masks[i, 4 + shift + i:14 + shift + i, 8:20] = True
    save_shard(tmp / "render" / "test.safetensors",
               {"images": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), "gt_mask": masks,
                "label": np.array([0, 1, 2], dtype=np.int64)})
    return masks


@pytest.mark.slow  # three stage subprocesses, ~15 s
def test_stage_computes_controls_for_both_families_and_keys_them_by_the_masks(tmp_path):
    masks = _split(tmp_path, 0)
    for family, spec in SPECS.items():
        torch.manual_seed(0)
        save_checkpoint(tmp_path / "models" / "t" / family / "final", build_model(spec, 3, 32).eval(),
                        {"task": "t", "classes": ["a", "b", "c"], "accuracy": {}, "params_hash": "x", "seed": 0,
                         "versions": {}})
        assert "computed ['edge', 'gradient', 'gt_blur', 'gt_mask', 'random']" in _stage(tmp_path, family)
        model, manifest = load_checkpoint(tmp_path / "models" / "t" / family / "final")
        x = preprocess(np.asarray(load_split_images(tmp_path)), manifest)
        edge, _, _ = load_maps(tmp_path / "maps" / family / "edge")
        torch.testing.assert_close(edge, METHODS.get("edge")(Untouchable(), x, torch.zeros(3, dtype=torch.long)))
        gt, _, gt_manifest = load_maps(tmp_path / "maps" / family / "gt_mask")
        torch.testing.assert_close(gt, torch.from_numpy(masks)[:, None].float())
        assert set(gt_manifest["inputs"]) == {"masks"}
        blur, _, _ = load_maps(tmp_path / "maps" / family / "gt_blur")
        torch.testing.assert_close(blur[:, 0].double(), torch.from_numpy(
            ndimage.gaussian_filter(masks.astype(float), sigma=(0, 2, 2), mode="nearest")), atol=1e-6, rtol=0)

    _split(tmp_path, 5)  # new masks, same images: only the GT controls depend on them
    log = _stage(tmp_path, "cnn")
    assert "computed ['gt_blur', 'gt_mask']" in log and "kept ['edge', 'gradient', 'random']" in log


def load_split_images(tmp: Path) -> np.ndarray:
    from salbench.render import load_split

    return load_split(tmp / "render", "test")["images"]


def test_evaluate_finds_the_control_maps_only_for_the_same_masks(tmp_path, masks):
    from salbench.attribution.cache import save_maps
    from salbench.evaluate import EvalData
    from salbench.evaluate.artifacts import load_entries
    from salbench.io import StaleArtifactError

    targets = torch.tensor([0, 1, 2, 3])
    maps = METHODS.get("gt_mask")(Untouchable(), torch.zeros(4, 3, 32, 32), targets, masks=masks)
    save_maps(tmp_path / "gt_mask", maps, targets, model_hash="h", method="gt_mask", params={}, layer=None, seed=0,
              inputs=method_inputs(("masks",), {"masks": masks}))
    images = torch.zeros(4, 3, 32, 32)
    entries = load_entries({"gt_mask": {}}, "cnn", tmp_path, Untouchable(), "h",
                           EvalData(images, targets, masks, targets), targets, 0, "attribute@t-m")
    torch.testing.assert_close(entries["gt_mask"].read(0, None)[0], maps)
    with pytest.raises(StaleArtifactError, match="attribute@t-m"):
        load_entries({"gt_mask": {}}, "cnn", tmp_path, Untouchable(), "h", EvalData(images, targets, ~masks, targets),
                     targets, 0, "attribute@t-m")
