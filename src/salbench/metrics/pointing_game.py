"""Pointing game (Zhang et al. 2018, as used with CLEVR-XAI): does the relevance peak hit the GT mask?"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor

from ..config.declare import OneOf, declare
from .base import MetricInputs, Values, as_maps, check_masks, in_chunks, metric, undefined_where_nonfinite
from .pooling import POOLINGS, pool_channels


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Dilate N×H×W bool masks by a Euclidean disk of ``radius`` pixels (dy² + dx² <= radius²)."""
    if radius == 0:
        return mask
    offsets = torch.arange(-radius, radius + 1, device=mask.device)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).to(torch.float32)
    hits = F.conv2d(mask[:, None].to(torch.float32), disk[None, None], padding=radius)
    return hits[:, 0] > 0.5


def _pointing_game(R: Tensor, M: Tensor, tolerance: int, pooling: str) -> Tensor:
    pooled = pool_channels(R, pooling)
    peak = pooled == pooled.flatten(1).amax(1)[:, None, None]
    hit = (peak & dilate(M, tolerance)).flatten(1).any(1)
    return undefined_where_nonfinite(hit.to(pooled.dtype).masked_fill(~M.flatten(1).any(1), torch.nan), R)


def pointing_game(R: Tensor, M: Tensor, tolerance: int = 0, pooling: str = "max_norm") -> Tensor:
    """1 if a maximum of the pooled relevance lies within ``tolerance`` px of M, else 0.

    R N×C×H×W, M N×H×W bool -> N float. Tied maxima hit if any of them does (as Quantus);
    NaN for an empty mask or a map with a NaN or ±inf entry.
    """
    if tolerance < 0 or int(tolerance) != tolerance:
        raise ValueError(f"tolerance must be a non-negative whole number of pixels, got {tolerance}")
    R = as_maps(R, "R")
    return in_chunks(partial(_pointing_game, tolerance=int(tolerance), pooling=pooling), R, check_masks(M, R))


@metric("pointing_game", needs=("maps", "masks"), scores="correct")
@declare(tolerance=Ge(0), pooling=OneOf(POOLINGS))
def pointing_game_metric(inputs: MetricInputs, *, tolerance: int = 0, pooling: str = "max_norm") -> list[Values]:
    """Pointing-game hit (1/0) per sample (the correctly classified ones are scored)."""
    return [Values(pointing_game(inputs.maps, inputs.masks, tolerance, pooling))]
