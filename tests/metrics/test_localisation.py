"""Relevance mass accuracy, relevance rank accuracy and pointing game: Quantus on identical inputs,
hand-built cases with known answers, and scipy's binary dilation for the pointing tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from salbench.metrics import pointing_game, pool_channels, relevance_mass_accuracy, relevance_rank_accuracy
from salbench.metrics.pooling import POOLINGS, SIGNED_POOLINGS
from salbench.metrics.rank_accuracy import kth_smallest

from metrics.metric_helpers import tiny_cnn


def random_masks(n: int, size: int, rng: torch.Generator) -> torch.Tensor:
    """Rectangles of random size and place, one of them empty."""
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    corners = torch.randint(0, size // 2, (n, 2), generator=rng)
    extents = torch.randint(1, size // 2, (n, 2), generator=rng)
    for i, ((r, c), (h, w)) in enumerate(zip(corners.tolist(), extents.tolist())):
        masks[i, r : r + h, c : c + w] = True
    masks[-1] = False
    return masks


def quantus_scores(quantus, metric, a: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Quantus's score of pooled maps a (N×H×W) with its default normalisation."""
    n, size = a.shape[0], a.shape[-1]
    x = np.zeros((n, 3, size, size), dtype=np.float32)
    return np.asarray(
        metric(disable_warnings=True)(
            model=tiny_cnn(size=size),
            x_batch=x,
            y_batch=np.zeros(n, dtype=int),
            a_batch=a[:, None].numpy(),
            s_batch=masks[:, None].numpy(),
            device="cpu",
        ),
        dtype=float,
    )


@pytest.mark.parametrize("pooling", sorted(set(POOLINGS.names()) - SIGNED_POOLINGS))
def test_mass_accuracy_matches_quantus(quantus, pooling: str, rng: torch.Generator) -> None:
    R = torch.randn(12, 3, 16, 16, generator=rng, dtype=torch.float64)
    masks = random_masks(12, 16, rng)
    ours = relevance_mass_accuracy(R, masks, pooling).numpy()
    reference = quantus_scores(quantus, quantus.RelevanceMassAccuracy, pool_channels(R, pooling), masks)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)
    assert np.isnan(ours[-1])


@pytest.mark.parametrize("pooling", POOLINGS.names())
def test_rank_accuracy_matches_quantus_without_ties(quantus, pooling: str, rng: torch.Generator) -> None:
    R = torch.randn(12, 3, 16, 16, generator=rng, dtype=torch.float64)
    masks = random_masks(12, 16, rng)
    ours = relevance_rank_accuracy(R, masks, pooling).numpy()
    reference = quantus_scores(quantus, quantus.RelevanceRankAccuracy, pool_channels(R, pooling), masks)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)
    assert np.isnan(ours[-1])


@pytest.mark.parametrize("pooling", POOLINGS.names())
def test_pointing_game_matches_quantus(quantus, pooling: str, rng: torch.Generator) -> None:
    R = torch.randn(24, 3, 8, 8, generator=rng, dtype=torch.float64)
    masks = random_masks(24, 8, rng)
    R[::2] += 10 * masks[::2, None]  # half the peaks land in the mask
    ours = pointing_game(R, masks, pooling=pooling).numpy()
    reference = quantus_scores(quantus, quantus.PointingGame, pool_channels(R, pooling), masks)
    np.testing.assert_array_equal(ours[:-1], reference[:-1])
    assert 11 <= ours[:-1].sum() < 23 and np.isnan(ours[-1])


def test_mass_accuracy_hand_built() -> None:
    masks = torch.tensor([[[True, False], [False, False]]] * 2)
    R = torch.tensor([[[5.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]]])[:, None]
    assert relevance_mass_accuracy(R, masks, "l1").tolist() == pytest.approx([1.0, 0.1])
    assert relevance_mass_accuracy(R, masks, "l2_sq")[1].item() == pytest.approx(1 / 30)
    with pytest.raises(ValueError, match="non-negative relevance; pooling 'sum' is signed"):
        relevance_mass_accuracy(R, masks, "sum")


def test_rank_accuracy_counts_ties_by_expectation() -> None:
    # K = 3: the 3 is in the mask, two of the three tied 2s fill the top 3 and a third of them are in the mask.
    R = torch.tensor([3.0, 2.0, 2.0, 2.0, 0.0, 0.0]).reshape(1, 1, 1, 6)
    masks = torch.tensor([True, True, False, False, True, False]).reshape(1, 1, 6)
    assert relevance_rank_accuracy(R, masks, "l1").item() == pytest.approx((1 + 2 / 3) / 3)
    masks_all_top = torch.tensor([True, True, True, True, False, False]).reshape(1, 1, 6)
    assert relevance_rank_accuracy(R, masks_all_top, "l1").item() == 1.0


def test_kth_smallest_with_a_different_k_per_row(rng: torch.Generator) -> None:
    x = torch.randn(6, 50, generator=rng)
    k = torch.tensor([1, 50, 7, 7, 23, 2])
    expected = torch.stack([row.sort().values[i - 1] for row, i in zip(x, k.tolist())])
    assert torch.equal(kth_smallest(x, k), expected)


def test_pointing_game_tolerance_is_euclidean() -> None:
    R = torch.zeros(1, 1, 12, 12)
    R[0, 0, 0, 0] = 1.0
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 3, 4] = True  # 5 px from the peak
    assert [pointing_game(R, masks, t).item() for t in (0, 4, 5)] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_dilation_matches_scipy(radius: int, rng: torch.Generator) -> None:
    from salbench.metrics.pointing_game import dilate

    masks = torch.rand(3, 20, 20, generator=rng) > 0.97
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk = x**2 + y**2 <= radius**2
    expected = np.stack([ndimage.binary_dilation(m, structure=disk) for m in masks.numpy()])
    np.testing.assert_array_equal(dilate(masks, radius).numpy(), expected)


def test_masks_must_match_the_maps() -> None:
    with pytest.raises(ValueError, match=r"masks must be N×H×W = \(2, 4, 4\)"):
        pointing_game(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"M.bool\(\)"):
        relevance_mass_accuracy(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4))
