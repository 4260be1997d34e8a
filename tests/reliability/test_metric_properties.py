"""Property-based tests of the pure metric functions: any shape, NaN/inf maps, empty or full masks,
constant and all-ties maps give per-sample values in the metric's range or NaN (undefined, counted by
``summary`` as n_undefined), or a ValueError that says what is wrong; never an unrelated exception and
never a NaN mean."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from salbench.metrics import (
    class_sensitivity,
    hog_similarity,
    pixel_perturbation,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    spearman,
    ssim,
    summary,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
KINDS = ("random", "constant", "zeros", "ties", "nonfinite")


def make_maps(kind: str, shape: tuple[int, ...], seed: int) -> Tensor:
    """Maps of one kind: Gaussian, one constant, all zero, two tied levels, or Gaussian with NaN/±inf entries
    in every other sample."""
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(shape, generator=g)
    if kind == "constant":
        return torch.full(shape, 1.5)
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "ties":
        return torch.randint(0, 2, shape, generator=g).float()
    if kind == "nonfinite" and R.numel():
        flat = R.view(len(R), -1)
        spots = torch.randint(0, flat.shape[1], (len(R),), generator=g)
        bad = torch.tensor([math.nan, math.inf, -math.inf])[torch.arange(len(R)) % 3]
        flat[::2, :].scatter_(1, spots[::2, None], bad[::2, None])
    return R


def make_masks(kind: str, n: int, h: int, w: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "empty":
        return torch.zeros(n, h, w, dtype=torch.bool)
    if kind == "full":
        return torch.ones(n, h, w, dtype=torch.bool)
    return torch.rand(n, h, w, generator=g) < 0.3


def nonfinite_rows(R: Tensor) -> Tensor:
    return ~torch.isfinite(R).flatten(1).all(1)


def check_values(values: Tensor, n: int, low: float, high: float, undefined: Tensor | None = None) -> None:
    """N floats, each in [low, high] or NaN (NaN wherever ``undefined``), whose summary has a defined mean
    unless no value is defined."""
    assert values.shape == (n,) and values.is_floating_point()
    defined = values[~values.isnan()]
    assert torch.isfinite(defined).all(), values
    assert ((defined >= low - 1e-6) & (defined <= high + 1e-6)).all(), values
    if undefined is not None:
        assert values[undefined].isnan().all(), (values, undefined)
    s = summary(values, n_boot=20)
    assert s["n"] + s["n_undefined"] == n and s["n"] == len(defined)
    assert math.isnan(s["mean"]) == (s["n"] == 0)
    if s["n"]:
        assert s["ci_low"] <= s["ci_high"] and low - 1e-6 <= s["mean"] <= high + 1e-6


shapes = st.tuples(st.integers(0, 4), st.sampled_from([1, 3]), st.integers(1, 9), st.integers(1, 9))


@SETTINGS
@given(shape=shapes, kind=st.sampled_from(KINDS), mask=st.sampled_from(("random", "empty", "full")),
       seed=st.integers(0, 2**16), pooling=st.sampled_from(("sum_abs", "sum_pos", "max_norm", "l1", "l2", "l2_sq")))
def test_localisation_metrics_are_in_range_or_undefined(shape, kind, mask, seed, pooling) -> None:
    n, _, h, w = shape
    R, M = make_maps(kind, shape, seed), make_masks(mask, n, h, w, seed)
    undefined = nonfinite_rows(R) | ~M.flatten(1).any(1)
    check_values(relevance_mass_accuracy(R, M, pooling), n, 0, 1, undefined)
    check_values(relevance_rank_accuracy(R, M, pooling), n, 0, 1, undefined)
    check_values(pointing_game(R, M, tolerance=seed % 3, pooling=pooling), n, 0, 1, undefined)


@SETTINGS
@given(shape=shapes, kinds=st.tuples(st.sampled_from(KINDS), st.sampled_from(KINDS)), seed=st.integers(0, 2**16))
def test_similarities_are_in_range_or_undefined(shape, kinds, seed) -> None:
    n, _, h, w = shape
    a, b = make_maps(kinds[0], shape, seed), make_maps(kinds[1], shape, seed + 1)
    undefined = nonfinite_rows(a) | nonfinite_rows(b)
    check_values(spearman(a, b, absolute=True), n, -1, 1, undefined)
    check_values(spearman(a, b, absolute=False), n, -1, 1, undefined)
    if min(h, w) < 5:
        with pytest.raises(ValueError, match="win_size must be odd and at most the image size"):
            ssim(a, b)
    else:
        check_values(ssim(a, b), n, -1, 1, undefined)
    check_values(hog_similarity(a, b, pixels_per_cell=(2, 2)) if min(h, w) >= 2 else torch.full((n,), math.nan),
                 n, -1, 1, undefined)
    if min(h, w) < 2:
        with pytest.raises(ValueError, match="too small"):
            hog_similarity(a, b, pixels_per_cell=(2, 2))


def test_identical_maps_are_perfectly_similar_and_flat_ones_undefined() -> None:
    a = make_maps("random", (3, 1, 8, 8), 0)
    for similarity, flat in ((spearman, "constant"), (ssim, "zeros"), (hog_similarity, "constant")):
        torch.testing.assert_close(similarity(a, a), torch.ones(3, dtype=similarity(a, a).dtype))
        assert similarity(make_maps(flat, (3, 1, 8, 8), 0), a).isnan().all()


class Tiny(nn.Module):
    """3 classes from a 1×1 conv and a global mean: differentiable, deterministic, any image size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).mean((2, 3))


@SETTINGS
@given(n=st.integers(0, 3), size=st.sampled_from([2, 4, 6]), kind=st.sampled_from(KINDS),
       order=st.sampled_from(("morf", "lerf")), baseline=st.sampled_from(("mean", "blur", 0.0)),
       seed=st.integers(0, 2**16))
def test_aopc_is_finite_or_undefined(n, size, kind, order, baseline, seed) -> None:
    model = Tiny().eval()
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    R = make_maps(kind, (n, 1, size, size), seed)
    targets = torch.arange(n) % 3
    curves = pixel_perturbation(model, x, R, targets, order, steps=3, baseline=baseline, patch=2, seed=seed)
    assert curves.scores.shape == (n, 3) and curves.correct.shape == (n, 3)
    check_values(curves.aopc, n, -1, 1, nonfinite_rows(R))  # probabilities: differences within [-1, 1]


@SETTINGS
@given(n=st.integers(0, 3), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_class_sensitivity_is_in_range_or_undefined(n, kind, seed) -> None:
    model = Tiny().eval()
    x = torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))

    def explain(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        return make_maps(kind, (len(images), 3, 6, 6), seed) * (targets[:, None, None, None] + 1)

    check_values(class_sensitivity(model, explain, x, batch_size=2), n, -1, 1,
                 nonfinite_rows(make_maps(kind, (n, 3, 6, 6), seed)))


@SETTINGS
@given(values=st.lists(st.one_of(st.floats(-10, 10), st.sampled_from([math.nan, math.inf, -math.inf])), max_size=12),
       seed=st.integers(0, 100))
def test_summary_counts_every_non_finite_value_as_undefined(values, seed) -> None:
    v = torch.tensor(values, dtype=torch.float64)
    mask = torch.rand(len(values), generator=torch.Generator().manual_seed(seed)) < 0.7
    s = summary(v, mask, n_boot=30, seed=seed)
    kept = v[mask]
    assert s["n"] == int(torch.isfinite(kept).sum()) and s["n_undefined"] == len(kept) - s["n"]
    assert math.isnan(s["mean"]) == (s["n"] == 0)
    if s["n"]:
        assert s["mean"] == pytest.approx(kept[torch.isfinite(kept)].mean().item())


@pytest.mark.parametrize("n_boot", [0, -1])
def test_summary_refuses_no_bootstrap_replicates(n_boot) -> None:
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        summary(torch.ones(3), n_boot=n_boot)
