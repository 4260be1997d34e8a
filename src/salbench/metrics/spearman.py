"""Spearman rank correlation of two saliency maps, with the Sanity Checks normalisations."""

from __future__ import annotations

from torch import Tensor

from .base import SIMILARITIES, check_pair, undefined_where_nonfinite
from .normalise import abs_normalise, signed_normalise
from .rank import rank_correlation


def spearman(a: Tensor, b: Tensor, absolute: bool = True) -> Tensor:
    """Spearman correlation of paired maps (N×C×H×W or N×H×W each) -> N.

    ``absolute``: of the channel abs-sums clipped at their 99th percentile and scaled to [0, 1];
    otherwise of the signed sums scaled by the 99th percentile of |·| and clipped to [-1, 1].
    NaN for a constant map or one with a NaN or ±inf entry.
    """
    a, b = check_pair(a, b)
    normalise = abs_normalise if absolute else signed_normalise
    return undefined_where_nonfinite(rank_correlation(normalise(a), normalise(b)), a, b)


SIMILARITIES.register("spearman_abs")(lambda a, b: spearman(a, b, absolute=True))
SIMILARITIES.register("spearman")(lambda a, b: spearman(a, b, absolute=False))
