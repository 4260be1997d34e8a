"""Channel pooling against numpy references, for every registered mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salbench.metrics import POOLINGS, pool_channels
from salbench.registry import UnknownNameError

NUMPY = {
    "sum": lambda r: r.sum(1),
    "sum_abs": lambda r: np.abs(r.sum(1)),
    "sum_pos": lambda r: np.maximum(r.sum(1), 0),
    "max_norm": lambda r: np.abs(r).max(1),
    "l1": lambda r: np.abs(r).sum(1),
    "l2": lambda r: np.sqrt((r**2).sum(1)),
    "l2_sq": lambda r: (r**2).sum(1),
}


@pytest.mark.parametrize("mode", POOLINGS.names())
def test_pooling_matches_numpy(mode: str, rng: torch.Generator) -> None:
    R = torch.randn(3, 3, 5, 7, generator=rng, dtype=torch.float64)
    assert pool_channels(R, mode).shape == (3, 5, 7)
    np.testing.assert_allclose(pool_channels(R, mode).numpy(), NUMPY[mode](R.numpy()), rtol=1e-12)


def test_pooling_hand_computed() -> None:
    R = torch.tensor([3.0, -4.0, 0.0]).reshape(1, 3, 1, 1)
    expected = {"sum": -1, "sum_abs": 1, "sum_pos": 0, "max_norm": 4, "l1": 7, "l2": 5, "l2_sq": 25}
    assert {mode: pool_channels(R, mode).item() for mode in expected} == expected


def test_single_channel_maps_may_omit_the_channel_axis(rng: torch.Generator) -> None:
    R = torch.randn(2, 4, 4, generator=rng)
    assert torch.equal(pool_channels(R, "l1"), R.abs())


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(UnknownNameError, match="Known poolings: .*l2_sq"):
        pool_channels(torch.zeros(1, 3, 2, 2), "l3")
    with pytest.raises(ValueError, match=r"N×C×H×W \(or N×H×W\)"):
        pool_channels(torch.zeros(3, 2), "l1")
