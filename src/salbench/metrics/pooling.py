"""Channel pooling of a relevance map R (N×C×H×W -> N×H×W), as in CLEVR-XAI (Osman et al. 2020).

The six options of the paper, plus the signed ``sum`` used to order pixels for perturbation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..registry import Registry
from .base import as_maps

POOLINGS: Registry[Callable[[Tensor], Tensor]] = Registry("pooling")
POOLINGS.register("sum")(lambda R: R.sum(1))
POOLINGS.register("sum_abs")(lambda R: R.sum(1).abs())
POOLINGS.register("sum_pos")(lambda R: R.sum(1).clamp(min=0))
POOLINGS.register("max_norm")(lambda R: torch.maximum(R.amax(1), R.amin(1).neg()))  # max_c |R_c|, no |R| copy
POOLINGS.register("l1")(lambda R: R.abs().sum(1))
POOLINGS.register("l2")(lambda R: R.square().sum(1).sqrt())
POOLINGS.register("l2_sq")(lambda R: R.square().sum(1))

SIGNED_POOLINGS = frozenset({"sum"})


def pool_channels(R: Tensor, mode: str) -> Tensor:
    """Pool R (N×C×H×W, or N×H×W as one channel) over channels to N×H×W.

    ``sum_abs`` |Σ_c R_c|, ``sum_pos`` max(0, Σ_c R_c), ``max_norm`` max_c |R_c|, ``l1`` Σ_c |R_c|,
    ``l2`` ‖R‖₂, ``l2_sq`` ‖R‖₂², and the signed ``sum`` Σ_c R_c.
    """
    return POOLINGS.get(mode)(as_maps(R, "R"))


def pool_non_negative(R: Tensor, mode: str, metric: str) -> Tensor:
    """:func:`pool_channels` restricted to the modes whose output is non-negative."""
    if mode in SIGNED_POOLINGS:
        known = ", ".join(n for n in POOLINGS.names() if n not in SIGNED_POOLINGS)
        raise ValueError(f"{metric} needs non-negative relevance; pooling {mode!r} is signed. Use one of: {known}")
    return pool_channels(R, mode)
