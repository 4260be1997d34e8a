"""Relevance mass accuracy (CLEVR-XAI, Osman et al. 2020): the share of relevance inside the GT mask."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from ..config.declare import OneOf, declare
from .base import MetricInputs, Values, as_maps, check_masks, in_chunks, metric, undefined_where_nonfinite
from .pooling import POOLINGS, SIGNED_POOLINGS, pool_non_negative


def _mass_accuracy(R: Tensor, M: Tensor, pooling: str) -> Tensor:
    pooled = pool_non_negative(R, pooling, "relevance mass accuracy").flatten(1)
    inside = M.flatten(1)
    mass = torch.where(inside, pooled, 0).sum(1) / pooled.sum(1)
    return undefined_where_nonfinite(mass.masked_fill(~inside.any(1), torch.nan), R)


def relevance_mass_accuracy(R: Tensor, M: Tensor, pooling: str = "l2_sq") -> Tensor:
    """Σ_{p∈M} R_p / Σ_p R_p of the pooled relevance; R N×C×H×W, M N×H×W bool -> N in [0, 1].

    NaN for an empty mask, a map without relevance or one with a NaN or ±inf entry.
    """
    R = as_maps(R, "R")
    return in_chunks(partial(_mass_accuracy, pooling=pooling), R, check_masks(M, R))


@metric("mass_accuracy", needs=("maps", "masks"), scores="correct", variant_params=("pooling",))
@declare(pooling=OneOf([p for p in POOLINGS if p not in SIGNED_POOLINGS], "non-negative pooling"))
def mass_accuracy_metric(inputs: MetricInputs, *, pooling: str = "l2_sq") -> list[Values]:
    """Relevance mass accuracy per sample (the correctly classified ones are scored)."""
    return [Values(relevance_mass_accuracy(inputs.maps, inputs.masks, pooling))]
