"""Means with seeded percentile-bootstrap confidence intervals and the count of scored samples."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Summary

# Bootstrap replicates are drawn in chunks of about this many indices, bounding memory.
_CHUNK_ELEMENTS = 1 << 22


def bootstrap_means(values: Tensor, n_boot: int, generator: torch.Generator) -> Tensor:
    """Means of ``n_boot`` resamples (with replacement) of the 1-D ``values``; float64 n_boot."""
    n = len(values)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    means = [
        values[torch.randint(n, (min(per_chunk, n_boot - start), n), generator=generator)].mean(1)
        for start in range(0, n_boot, per_chunk)
    ]
    return torch.cat(means)


def percentile_interval(stats: Tensor, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap statistics."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=stats.dtype)
    low, high = torch.quantile(stats, q).tolist()
    return low, high


def finite_values(values: Tensor, mask: Tensor | None) -> tuple[Tensor, int]:
    """The scored (``mask``) values as 1-D float64 on the CPU without NaN or ±inf, and how many were dropped."""
    v = values.detach().reshape(-1).to("cpu", torch.float64)
    scored = torch.ones_like(v, dtype=torch.bool) if mask is None else mask.detach().reshape(-1).cpu()
    if scored.shape != v.shape:
        raise ValueError(f"mask must have one entry per value ({v.numel()}), got {tuple(mask.shape)}")
    undefined = scored & ~v.isfinite()
    return v[scored & ~undefined], int(undefined.sum())


def bootstrap_summary(mean: float, stats: Tensor | None, n: int, n_undefined: int, level: float = 0.95) -> Summary:
    """A :data:`Summary` from a point estimate and its bootstrap statistics (None when n = 0)."""
    if n == 0 or stats is None:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "n_undefined": n_undefined}
    low, high = percentile_interval(stats, level)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n, "n_undefined": n_undefined}


def summary(
    values: Tensor, mask: Tensor | None = None, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Summary:
    """Mean of the scored ``values`` (N) with a percentile-bootstrap CI.

    ``mask`` (N bool) selects the scored samples (all if None). Scored samples whose value is
    undefined (NaN, e.g. a correlation with a constant map, or ±inf) are left out of the mean and
    counted in ``n_undefined``; ``n`` is the number of values averaged.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 (bootstrap replicates for the confidence interval), got {n_boot}")
    v, n_undefined = finite_values(values, mask)
    if len(v) == 0:
        return bootstrap_summary(math.nan, None, 0, n_undefined, level)
    stats = bootstrap_means(v, n_boot, torch.Generator().manual_seed(seed))
    return bootstrap_summary(v.mean().item(), stats, len(v), n_undefined, level)
