"""Batched Spearman rank correlation with average ranks for ties, as scipy.stats.spearmanr."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import in_chunks


def sort_key(x: Tensor) -> Tensor:
    """Integers that order like the floats x (sorting them is faster); -0.0 and +0.0 map alike."""
    if x.dtype not in (torch.float32, torch.float64):
        return x
    bits = (x + 0.0).view(torch.int32 if x.dtype == torch.float32 else torch.int64)
    # Negative floats order backwards as signed integers: flip their magnitude bits.
    return bits ^ ((bits >> (bits.element_size() * 8 - 1)) & torch.iinfo(bits.dtype).max)


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of each row of x (N×L), ties sharing their average rank; float64 N×L."""
    values, order = sort_key(x).sort(dim=1)
    length = x.shape[1]
    pos = torch.arange(length, dtype=torch.int32, device=x.device).expand_as(values)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(1).values
    last = torch.where(ends, pos, length).flip(1).cummin(1).values.flip(1)
    mean_rank = (first + last).to(torch.float64) / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of N×L tensors -> N (NaN for a constant row)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / ((a * a).sum(1) * (b * b).sum(1)).sqrt()


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of the rows of a and b (N×L each, or N×... flattened) -> N.

    NaN where a row is constant or contains NaN, as scipy.stats.spearmanr.
    """
    a, b = a.flatten(1), b.flatten(1)
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape after flattening, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return in_chunks(_rank_correlation, a, b)


def _rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    rho = pearson(average_ranks(a), average_ranks(b))
    rho = rho.masked_fill(a.isnan().any(1) | b.isnan().any(1), torch.nan)
    return rho.to(a.dtype if a.is_floating_point() else torch.float64)
