"""Relevance rank accuracy (CLEVR-XAI, Osman et al. 2020): |top-K(R) ∩ M| / K with K = |M|."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from ..config.declare import OneOf, declare
from .base import MetricInputs, Values, as_maps, check_masks, in_chunks, metric, undefined_where_nonfinite
from .pooling import POOLINGS, pool_channels


def kth_smallest(x: Tensor, k: Tensor) -> Tensor:
    """The k_n-th smallest entry (1-based) of each row of x (N×L); k LongTensor N in [1, L].

    One ``kthvalue`` call for all rows: row n gets max(k) - k_n extra entries of -inf and
    k_n - min(k) of +inf, so that every row's answer is its max(k)-th smallest.
    """
    if len(k) == 0:
        return x.new_empty(0)
    lo, hi = int(k.min()), int(k.max())
    if lo == hi:
        return x.kthvalue(lo, dim=1).values
    below = torch.arange(hi - lo, device=x.device) < (hi - k)[:, None]
    padding = torch.where(below, -torch.inf, torch.inf).to(x.dtype)
    return torch.cat([x, padding], 1).kthvalue(hi, dim=1).values


def _rank_accuracy(R: Tensor, M: Tensor, pooling: str) -> Tensor:
    pooled = pool_channels(R, pooling).flatten(1)
    inside = M.flatten(1)
    k = inside.sum(1)
    threshold = kth_smallest(pooled, (pooled.shape[1] - k + 1).clamp(max=pooled.shape[1]))[:, None]
    at_least = pooled >= threshold
    hits = (at_least & inside).sum(1, dtype=torch.float64)
    excess = at_least.sum(1, dtype=torch.float64) - k  # > 0 where pixels tied with the K-th value overflow the top K
    if (excess > 0).any():
        tied = pooled == threshold
        hits = hits - excess * (tied & inside).sum(1, dtype=torch.float64) / tied.sum(1, dtype=torch.float64)
    accuracy = hits / k
    return undefined_where_nonfinite(accuracy.to(pooled.dtype).masked_fill(k == 0, torch.nan), R)


def relevance_rank_accuracy(R: Tensor, M: Tensor, pooling: str = "max_norm") -> Tensor:
    """Fraction of the K = |M| highest pooled-relevance pixels inside M; R N×C×H×W, M N×H×W -> N.

    Pixels tied with the K-th highest value count by expectation over random tie-breaking
    (Quantus breaks ties by argsort order instead; both agree when there are no ties).
    NaN for an empty mask or a map with a NaN or ±inf entry.
    """
    R = as_maps(R, "R")
    return in_chunks(partial(_rank_accuracy, pooling=pooling), R, check_masks(M, R))


@metric("rank_accuracy", needs=("maps", "masks"), scores="correct", variant_params=("pooling",))
@declare(pooling=OneOf(POOLINGS))
def rank_accuracy_metric(inputs: MetricInputs, *, pooling: str = "max_norm") -> list[Values]:
    """Relevance rank accuracy per sample (the correctly classified ones are scored)."""
    return [Values(relevance_rank_accuracy(inputs.maps, inputs.masks, pooling))]
