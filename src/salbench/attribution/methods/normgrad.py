"""NormGrad and friends (Rebuffi, Fong, Ji, Vedaldi 2020), at any layer, N×1×H×W.

With activation a and gradient g of the class logit at spatial position u:
- normgrad: ‖g_u‖₂ · ‖a_u‖₂ (the weight-gradient norm of a virtual 1×1 convolution);
- normgrad_selective: ‖max(0, a_u ⊙ g_u)‖₂;
- linear_approx: aggregate_c(a_u ⊙ g_u) (virtual scaling layer), default sum;
- layer_gradient: aggregate_c(g_u) (virtual bias layer), default L2.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from ...registry import Registry
from ..base import LayerMethod, register

AGGREGATIONS: Registry[Callable[[Tensor], Tensor]] = Registry("channel aggregation")
AGGREGATIONS.register("sum")(lambda t: t.sum(1, keepdim=True))
AGGREGATIONS.register("max")(lambda t: t.amax(1, keepdim=True))
AGGREGATIONS.register("l2")(lambda t: t.norm(dim=1, keepdim=True))
AGGREGATIONS.register("l2_pos")(lambda t: F.relu(t).norm(dim=1, keepdim=True))


def normgrad_read(act: Tensor, grad: Tensor) -> Tensor:
    """act, grad: N×K×h×w → N×1×h×w."""
    return grad.norm(dim=1, keepdim=True) * act.norm(dim=1, keepdim=True)


def normgrad_selective_read(act: Tensor, grad: Tensor) -> Tensor:
    return AGGREGATIONS.get("l2_pos")(act * grad)


def linear_approx_read(act: Tensor, grad: Tensor, aggregation: str = "sum") -> Tensor:
    return AGGREGATIONS.get(aggregation)(act * grad)


def layer_gradient_read(act: Tensor, grad: Tensor, aggregation: str = "l2") -> Tensor:
    return AGGREGATIONS.get(aggregation)(grad)


register("normgrad", LayerMethod(normgrad_read))
register("normgrad_selective", LayerMethod(normgrad_selective_read))
register("linear_approx", LayerMethod(linear_approx_read, {"aggregation": AGGREGATIONS}, aggregation="sum"))
register("layer_gradient", LayerMethod(layer_gradient_read, {"aggregation": AGGREGATIONS}, aggregation="l2"))
