"""COSE: the transforms against torchvision and PIL called image by image, exact inverses and valid
masks, pools by prediction, hand-built cases with known consistency, and the summary arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter

from salbench.evaluate import summarise
from salbench.metrics import SPLITS, TRANSFORMS, CosePairs, cose, cose_values
from salbench.metrics.cose import cose_ssim, erode, valid_mask
from salbench.metrics.transforms import GEOMETRIC, N_BINS, sample_magnitudes

from metrics.metric_helpers import ConstantClass, LeftRight, gradient, image_map, tiny_resnet

TORCHVISION = {
    "translate_x": lambda x, m: TF.affine(x, 0.0, [m, 0.0], 1.0, [0.0, 0.0]),
    "translate_y": lambda x, m: TF.affine(x, 0.0, [0.0, m], 1.0, [0.0, 0.0]),
    "rotate": lambda x, m: TF.rotate(x, m),
    "hflip": lambda x, m: TF.horizontal_flip(x),
    "vflip": lambda x, m: TF.vertical_flip(x),
    "brightness": lambda x, m: TF.adjust_brightness(x, 1 + m),
    "saturation": lambda x, m: TF.adjust_saturation(x, 1 + m),
    "contrast": lambda x, m: TF.adjust_contrast(x, 1 + m),
    "sharpness": lambda x, m: TF.adjust_sharpness(x, 1 + m),
    "autocontrast": lambda x, m: TF.autocontrast(x),
    "equalize": lambda x, m: TF.equalize(x),
    "smooth": lambda x, m: TF.adjust_sharpness(x, 0.0),
}
PIL_FILTERS = {"blur": ImageFilter.BLUR, "smooth": ImageFilter.SMOOTH}


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_transform_matches_the_reference_image_by_image(name: str, rng: torch.Generator) -> None:
    transform = TRANSFORMS.get(name)
    x = torch.rand(24, 3, 20, 20, generator=rng)
    m = sample_magnitudes(transform, 24, (20, 20), rng)
    ours = transform.apply(x, m)
    if name in PIL_FILTERS:
        images = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        expected = np.stack([np.asarray(Image.fromarray(im).filter(PIL_FILTERS[name])) for im in images]) / 255
        ours = transform.apply(torch.from_numpy(images).permute(0, 3, 1, 2) / 255, m).permute(0, 2, 3, 1)
        np.testing.assert_allclose(ours.numpy(), expected, atol=0.5 / 255 + 1e-6)  # PIL rounds to uint8
        return
    expected = torch.stack([TORCHVISION[name](xi, float(mi)) for xi, mi in zip(x, m)])
    tolerance = 0 if transform.kind == GEOMETRIC else 2e-7
    torch.testing.assert_close(ours, expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_magnitudes_use_bins_1_to_30_with_random_signs(name: str, rng: torch.Generator) -> None:
    transform = TRANSFORMS.get(name)
    m = sample_magnitudes(transform, 2000, (224, 224), rng)
    if transform.max_magnitude is None:
        assert (m == 0).all()
        return
    top = transform.max_magnitude(224, 224)
    step = top / (N_BINS - 1)
    assert m.abs().max() <= top + 1e-9 and m.abs().min() >= (1 if transform.whole else step - 1e-9)
    assert (m > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert len(m.abs().unique()) == (30 if not transform.whole else len((torch.arange(1, 31) * step).round().unique()))


def test_translation_scales_with_image_size() -> None:
    assert TRANSFORMS.get("translate_x").max_magnitude(112, 224) == 32
    assert TRANSFORMS.get("translate_y").max_magnitude(112, 224) == 16


@pytest.mark.parametrize(
    ("name", "magnitude"),
    [("rotate", 90.0), ("rotate", -90.0), ("hflip", 0.0), ("vflip", 0.0), ("translate_x", 3.0), ("translate_y", -2.0)],
)
def test_exact_geometric_transforms_map_back_to_consistency_one(
    name: str, magnitude: float, rng: torch.Generator
) -> None:
    transform = TRANSFORMS.get(name)
    maps = torch.rand(2, 1, 16, 16, generator=rng)
    m = torch.full((2,), magnitude, dtype=torch.float64)
    back = transform.invert(transform.apply(maps, m), m)
    valid = valid_mask(transform, m, maps)
    assert torch.equal(back[:, 0][valid], maps[:, 0][valid])
    torch.testing.assert_close(cose_ssim(maps[:, 0], back[:, 0], valid), torch.ones(2, dtype=torch.float64))


def test_valid_mask_of_a_translation_is_the_kept_columns_eroded() -> None:
    transform = TRANSFORMS.get("translate_x")
    m = torch.tensor([3.0], dtype=torch.float64)
    valid = valid_mask(transform, m, torch.zeros(1, 3, 12, 12))
    expected = torch.zeros(1, 12, 12, dtype=torch.bool)
    expected[..., : 12 - 3 - 2] = True  # columns that survive the shift and back, less the 2-px erosion
    assert torch.equal(valid, expected)


def test_erosion_treats_outside_as_valid() -> None:
    mask = torch.ones(1, 9, 9, dtype=torch.bool)
    mask[0, 4, 4] = False
    eroded = erode(mask)
    assert eroded[0, 0, 0] and eroded.sum() == 81 - 25


def test_rotated_map_mapped_back_is_consistent_on_the_valid_region(rng: torch.Generator) -> None:
    transform = TRANSFORMS.get("rotate")
    maps = torch.rand(4, 1, 32, 32, generator=rng)
    m = torch.tensor([4.5, 45.0, -130.5, 90.0], dtype=torch.float64)
    back = transform.invert(transform.apply(maps, m), m)
    valid = valid_mask(transform, m, maps)
    assert valid.flatten(1).any(1).all() and not valid.all()
    similarity = cose_ssim(maps[:, 0], back[:, 0], valid)
    assert similarity[-1] == pytest.approx(1.0) and (similarity > 0.5).all()


def test_model_ignoring_the_input_and_maps_following_the_image() -> None:
    """Predictions never change, so every pair is consistent; the map is the image, so exact
    geometric transforms give C = 1 and a brightness change is not perfectly invariant."""
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.full((6,), 1)
    pairs = cose(
        ConstantClass(1),
        image_map,
        x,
        labels,
        transforms=["hflip", "vflip", "translate_x", "brightness"],
        per_image=3,
        seed=4,
    )
    assert pairs.consistent.all() and len(pairs.ssim) == 6 + 6 + 18 + 18
    assert pairs.sources == ["hflip", "vflip", "translate_x", "brightness"]
    geometric = pairs.split == SPLITS.index("geometric")
    torch.testing.assert_close(pairs.ssim[geometric], torch.ones(30, dtype=torch.float64))
    assert (pairs.ssim[~geometric] < 1).all()
    summary = cose_summary(pairs, n_boot=50)
    assert (
        summary["geometric/C"]["mean"] == pytest.approx(1.0) and summary["geometric/C"]["n"] == 30
    )
    assert summary["geometric/S"]["n"] == 0 and math.isnan(summary["geometric/cose"]["mean"])


def test_pools_follow_the_prediction() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 0.5
    x[..., :8] += 0.5  # left half brighter: class 0; a horizontal flip makes it class 1
    labels = torch.tensor([0, 0, 0, 1])  # the last image is misclassified and left out
    model = LeftRight()
    pairs = cose(
        model, image_map, x, labels, transforms=["hflip", "vflip"], model_changes={"constant": ConstantClass(0, 2)}
    )
    hflip, vflip, change = (pairs.source == i for i in range(3))
    assert set(pairs.sample.tolist()) == {0, 1, 2}
    assert not pairs.consistent[hflip].any() and pairs.consistent[vflip].all()
    assert not pairs.consistent[change].any() and (pairs.split[change] == SPLITS.index("model_change")).all()
    torch.testing.assert_close(
        pairs.ssim[change], torch.ones(3, dtype=torch.float64)
    )  # same maps under the other model


def cose_summary(pairs: CosePairs, n_boot: int) -> dict:
    """{'split/statistic': summary} of the runner over every pair (the pairs are already the scored ones)."""
    scored = torch.ones(int(pairs.sample.max()) + 1 if len(pairs.sample) else 0, dtype=torch.bool)
    return {f"{o.variant['split']}/{o.statistic}": summarise(o, scored, n_boot, 0) for o in cose_values(pairs)}


def test_cose_summary_arithmetic() -> None:
    ssim = torch.tensor([0.9, 0.7, 0.2, 0.4, 0.5, float("nan")], dtype=torch.float64)
    pairs = CosePairs(
        ssim=ssim,
        consistent=torch.tensor([True, True, False, False, False, False]),
        split=torch.tensor([0, 0, 0, 1, 2, 2]),
        source=torch.zeros(6, dtype=torch.long),
        sources=["t"],
        sample=torch.arange(6),
        magnitude=torch.zeros(6, dtype=torch.float64),
    )
    out = cose_summary(pairs, n_boot=200)
    assert out["geometric/C"]["mean"] == pytest.approx(0.8)
    assert out["geometric/S"]["mean"] == pytest.approx(0.8)
    assert out["geometric/cose"]["mean"] == pytest.approx(0.8) and out["geometric/cose"]["n"] == 3
    assert out["all/S"]["mean"] == pytest.approx(1 - (0.2 + 0.4 + 0.5) / 3)
    assert out["all/S"]["n_undefined"] == 1
    assert out["model_change/S"]["mean"] == pytest.approx(0.5) and math.isnan(
        out["model_change/cose"]["mean"]
    )
    assert out["all/cose"]["ci_low"] <= out["all/cose"]["mean"] <= out["all/cose"]["ci_high"]


def test_seeded_and_only_correct_samples(rng: torch.Generator) -> None:
    model = tiny_resnet()
    x = torch.rand(6, 3, 32, 32, generator=rng)
    labels = model(x).argmax(1)
    labels[0] = (labels[0] + 1) % 4
    a = cose(model, gradient, x, labels, transforms=["rotate", "contrast"], seed=5, batch_size=4)
    b = cose(model, gradient, x, labels, transforms=["rotate", "contrast"], seed=5, batch_size=7)
    assert 0 not in a.sample.tolist() and len(a.ssim) == 2 * 5 * 2
    torch.testing.assert_close(a.ssim, b.ssim)
    assert torch.equal(a.magnitude, b.magnitude)


def test_images_must_be_in_unit_range() -> None:
    with pytest.raises(ValueError, match="images in \\[0, 1\\]"):
        cose(ConstantClass(0), image_map, torch.full((1, 3, 8, 8), 2.0), torch.zeros(1, dtype=torch.long))


def test_s_and_cose_are_not_clipped_when_ssim_is_negative() -> None:
    """S = 1 - F lies in [0, 2]: anti-correlated maps in the sensitivity pool give S > 1 and COSE may exceed 1."""
    pairs = CosePairs(
        ssim=torch.tensor([0.9, 0.9, -0.5, -0.5], dtype=torch.float64),
        consistent=torch.tensor([True, True, False, False]),
        split=torch.zeros(4, dtype=torch.long),
        source=torch.zeros(4, dtype=torch.long),
        sources=["t"],
        sample=torch.arange(4),
        magnitude=torch.zeros(4, dtype=torch.float64),
    )
    out = cose_summary(pairs, n_boot=20)
    assert out["all/S"]["mean"] == pytest.approx(1.5)
    assert out["all/cose"]["mean"] == pytest.approx(math.sqrt(0.9 * 1.5)) and out["all/cose"]["mean"] > 1
