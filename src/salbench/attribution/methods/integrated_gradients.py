"""Integrated gradients (Sundararajan et al. 2017), N×C×H×W.

(x − x′) ⊙ ∫₀¹ ∂y_c/∂x(x′ + α(x − x′)) dα with a constant baseline x′, by Gauss–Legendre quadrature
(as captum's default); the path points run through the engine stacked into the batch dimension.
"""
from __future__ import annotations

import functools
from typing import Any

from annotated_types import Ge
from torch import Tensor, nn

from ..base import Method, check_params, register
from ..engine import IntegrationPath, Plan, Request
from .gradient import gradient_read


def _times_delta(results: list[Tensor], images: Tensor, baseline: float) -> Tensor:
    return results[0] * (images - baseline)


class IntegratedGradients(Method):
    """Parameters: ``steps`` (quadrature nodes, default 32), ``baseline`` (constant input value, default 0 = black)."""

    def plan(self, model: nn.Module, steps: int = 32, baseline: float = 0.0, **params: Any) -> Plan:
        check_params(self.name, params, [])
        if steps < 1:
            raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}")
        request = Request(gradient_read, None, sampler=IntegrationPath(int(steps), float(baseline)))
        return Plan((request,), functools.partial(_times_delta, baseline=float(baseline)))


register("integrated_gradients", IntegratedGradients(), steps=Ge(1))
