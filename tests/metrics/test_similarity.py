"""Map similarities of Sanity Checks: scipy's spearmanr, scikit-image's SSIM and HOG, and numpy
versions of the authors' normalisations, on identical inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity

from salbench.metrics import (
    SIMILARITIES,
    abs_normalise,
    hog,
    hog_cell_size,
    hog_similarity,
    percentile,
    pointing_game,
    rank_correlation,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    signed_normalise,
    spearman,
    ssim,
    ssim_index,
)

from metrics.metric_helpers import visualize_diverging_spec, visualize_grayscale


def scipy_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)])


def test_rank_correlation_matches_scipy_with_ties(rng: torch.Generator) -> None:
    a = torch.randint(0, 6, (5, 300), generator=rng).double()
    b = a + torch.randint(0, 4, (5, 300), generator=rng)
    np.testing.assert_allclose(rank_correlation(a, b).numpy(), scipy_spearman(a.numpy(), b.numpy()), rtol=1e-10)


def test_rank_correlation_edge_cases() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, float("nan"), 3.0]])
    b = torch.tensor([[30.0, 20.0, 10.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    rho = rank_correlation(a, b)
    assert rho[0].item() == pytest.approx(-1.0)
    assert rho[1:].isnan().all()


@pytest.mark.parametrize("q", [99, 50, 0, 100])
def test_percentile_matches_numpy(q: float, rng: torch.Generator) -> None:
    x = torch.randn(4, 101, generator=rng, dtype=torch.float64)
    np.testing.assert_allclose(percentile(x, q).numpy(), np.percentile(x.numpy(), q, axis=1), rtol=1e-12)


def test_normalisations_match_the_references(rng: torch.Generator) -> None:
    maps = torch.randn(3, 3, 20, 24, generator=rng, dtype=torch.float64)
    np.testing.assert_allclose(
        abs_normalise(maps).numpy(), np.stack([visualize_grayscale(m) for m in maps.numpy()]), rtol=1e-12
    )
    np.testing.assert_allclose(
        signed_normalise(maps).numpy(), np.stack([visualize_diverging_spec(m) for m in maps.numpy()]), rtol=1e-12
    )
    assert abs_normalise(maps).min() == 0 and abs_normalise(maps).max() == 1
    assert signed_normalise(maps).abs().max() == 1


@pytest.mark.parametrize("absolute", [True, False])
def test_spearman_is_scipy_on_the_normalised_maps(absolute: bool, rng: torch.Generator) -> None:
    a = torch.randn(4, 3, 16, 16, generator=rng, dtype=torch.float64)
    b = a + torch.randn(4, 3, 16, 16, generator=rng, dtype=torch.float64)
    reference = visualize_grayscale if absolute else visualize_diverging_spec
    ra, rb = (np.stack([reference(m) for m in x.numpy()]) for x in (a, b))
    np.testing.assert_allclose(spearman(a, b, absolute).numpy(), scipy_spearman(ra, rb), rtol=1e-10)


@pytest.mark.parametrize(("data_range", "win_size"), [(2.0, 5), (1.0, 7), (0.5, 3)])
def test_ssim_index_matches_skimage(data_range: float, win_size: int, rng: torch.Generator) -> None:
    x = torch.rand(4, 21, 17, generator=rng, dtype=torch.float64)
    y = 0.7 * x + 0.3 * torch.rand(4, 21, 17, generator=rng, dtype=torch.float64)
    expected = [
        structural_similarity(a, b, win_size=win_size, data_range=data_range) for a, b in zip(x.numpy(), y.numpy())
    ]
    np.testing.assert_allclose(ssim_index(x, y, data_range, win_size).numpy(), expected, rtol=1e-10)


def test_masked_ssim_averages_the_ssim_map_over_the_mask(rng: torch.Generator) -> None:
    x = torch.rand(2, 16, 16, generator=rng, dtype=torch.float64)
    y = torch.rand(2, 16, 16, generator=rng, dtype=torch.float64)
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 3:9] = True
    expected = []
    for a, b in zip(x.numpy(), y.numpy()):
        _, full = structural_similarity(a, b, win_size=5, data_range=1.0, full=True)
        expected.append(full[4:12, 3:9].mean())
    np.testing.assert_allclose(ssim_index(x, y, torch.tensor([1.0, 1.0]), 5, mask).numpy(), expected, rtol=1e-10)


def test_ssim_is_skimage_on_the_signed_maps(rng: torch.Generator) -> None:
    a = torch.randn(3, 3, 16, 16, generator=rng, dtype=torch.float64)
    b = a + 0.5 * torch.randn(3, 3, 16, 16, generator=rng, dtype=torch.float64)
    expected = [
        structural_similarity(visualize_diverging_spec(p), visualize_diverging_spec(q), win_size=5, data_range=2)
        for p, q in zip(a.numpy(), b.numpy())
    ]
    np.testing.assert_allclose(ssim(a, b).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("orientations", "cell", "block", "norm"),
    [
        (8, (16, 16), (1, 1), "L2-Hys"),
        (9, (5, 7), (2, 3), "L1"),
        (9, (4, 4), (3, 3), "L2"),
        (8, (6, 6), (2, 2), "L1-sqrt"),
    ],
)
def test_hog_matches_skimage(orientations: int, cell: tuple, block: tuple, norm: str, rng: torch.Generator) -> None:
    images = torch.rand(3, 37, 45, generator=rng, dtype=torch.float64)
    images[0, 8:30, 8:30] = 1.0  # flat regions and 45° edges: orientations on bin edges
    images[1] = torch.ones(37, 45, dtype=torch.float64).tril()
    expected = np.stack([skimage_hog(im, orientations, cell, block, norm) for im in images.numpy()])
    np.testing.assert_allclose(hog(images, orientations, cell, block, norm).numpy(), expected, atol=1e-6)


def test_hog_similarity_is_spearman_of_the_hog_of_the_normalised_maps(rng: torch.Generator) -> None:
    a = torch.randn(4, 3, 64, 64, generator=rng, dtype=torch.float64)
    b = a + torch.randn(4, 3, 64, 64, generator=rng, dtype=torch.float64)
    cell = hog_cell_size(64, 64)
    assert cell == (5, 5) and hog_cell_size(224, 112) == (16, 8)
    ours = hog_similarity(a, b).numpy()
    features = [hog(abs_normalise(x), 8, cell) for x in (a, b)]
    np.testing.assert_allclose(ours, scipy_spearman(*(f.numpy() for f in features)), rtol=1e-10)
    # Against scikit-image's HOG end to end: its float32 cell sums reorder near-equal features
    # (see salbench.metrics.hog), hence 1e-4.
    skimage_features = [
        np.stack([skimage_hog(visualize_grayscale(m), 8, cell, (1, 1)) for m in x.numpy()]) for x in (a, b)
    ]
    np.testing.assert_allclose(ours, scipy_spearman(*skimage_features), atol=1e-4)


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_every_similarity_is_one_for_identical_maps_and_lower_otherwise(name: str, rng: torch.Generator) -> None:
    a = torch.randn(3, 3, 32, 32, generator=rng)
    b = torch.randn(3, 3, 32, 32, generator=rng)
    sim = SIMILARITIES.get(name)
    assert sim(a, a).shape == (3,)
    np.testing.assert_allclose(sim(a, a).numpy(), 1.0, rtol=1e-6)
    assert (sim(a, b) < 0.5).all()


def test_similarity_inputs_must_pair_up() -> None:
    with pytest.raises(ValueError, match="same number of equally sized maps"):
        spearman(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9))
    with pytest.raises(ValueError, match="single-channel images N×H×W"):
        hog(torch.zeros(2, 1, 8, 8))


def test_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch, rng: torch.Generator) -> None:
    import salbench.metrics.base as base

    R = torch.randn(7, 3, 20, 20, generator=rng, dtype=torch.float64)
    R2 = R + torch.randn(7, 3, 20, 20, generator=rng, dtype=torch.float64)
    masks = torch.rand(7, 20, 20, generator=rng) > torch.linspace(0.3, 0.95, 7)[:, None, None]  # a K per map
    valid = torch.rand(7, 20, 20, generator=rng) > 0.2

    def everything() -> list[torch.Tensor]:
        return [
            relevance_mass_accuracy(R, masks),
            relevance_rank_accuracy(R, masks),
            pointing_game(R, masks, tolerance=2),
            ssim_index(R[:, 0], R2[:, 0], torch.linspace(1, 2, 7), 5, valid),
            hog(abs_normalise(R), 8, (5, 5)),
            *(SIMILARITIES.get(name)(R, R2) for name in SIMILARITIES.names()),
        ]

    whole = everything()
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 2 * 3 * 20 * 20)  # chunks of 2, 5 or 6 maps
    for chunked, expected in zip(everything(), whole, strict=True):
        torch.testing.assert_close(chunked, expected, rtol=0, atol=0, equal_nan=True)
