"""Bootstrap summaries: counts, undefined values, determinism, and the CI width of a known case."""

from __future__ import annotations

import math

import pytest
import torch

from salbench.metrics import summary


def test_mean_count_and_mask() -> None:
    values = torch.tensor([1.0, 2.0, float("nan"), 10.0, 4.0])
    mask = torch.tensor([True, True, True, False, True])
    out = summary(values, mask, n_boot=200)
    assert out["mean"] == pytest.approx(7 / 3) and out["n"] == 3 and out["n_undefined"] == 1
    assert 1.0 <= out["ci_low"] <= out["mean"] <= out["ci_high"] <= 4.0


def test_constant_values_have_a_point_interval() -> None:
    out = summary(torch.full((7,), 0.25), n_boot=100)
    assert out == {"mean": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 7, "n_undefined": 0}


def test_nothing_scored() -> None:
    out = summary(torch.ones(3), torch.zeros(3, dtype=torch.bool))
    assert out["n"] == 0 and math.isnan(out["mean"]) and math.isnan(out["ci_low"])


def test_interval_matches_the_normal_approximation() -> None:
    values = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = summary(values, n_boot=4000, seed=1)
    half_width = 1.96 * values.std().item() / math.sqrt(400)
    assert (out["ci_high"] - out["ci_low"]) / 2 == pytest.approx(half_width, rel=0.1)
    assert out["ci_low"] < out["mean"] < out["ci_high"]


def test_seeded_and_chunking_does_not_change_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    import salbench.metrics.bootstrap as module

    values = torch.rand(1000, generator=torch.Generator().manual_seed(3))
    whole = summary(values, n_boot=300, seed=5)
    assert summary(values, n_boot=300, seed=5) == whole
    assert summary(values, n_boot=300, seed=6) != whole
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 7000)  # 7 replicates per chunk
    assert summary(values, n_boot=300, seed=5) == whole


def test_mask_must_match() -> None:
    with pytest.raises(ValueError, match="one entry per value"):
        summary(torch.ones(3), torch.ones(4, dtype=torch.bool))
