"""Layer-wise relevance propagation (Bach et al. 2015) for CNNs and ViTs, N×C×H×W, in one modified pass.

Parameters: ``rule`` — for timm ViT/DeiT models ``cplrp`` (default; Ali et al. 2022, as LXT treats
torchvision ViTs: conserves relevance exactly without biases) or ``attnlrp`` (Achtibat et al. 2024: its
softmax rule absorbs part of the relevance by design); for timm ResNets ``epsilon_plus_flat`` (zennit's
composite of that name, the only one); ``epsilon`` of the ε-rule on linear layers (default 0 for ViTs,
LXT's efficient mode; 1e-6 for CNNs, zennit's); ``stabilizer`` (1e-6) of the z⁺ and flat rules'
denominators. The rules are in :mod:`.lrp_rules`.

The explained quantity is the target logit: its gradient seed is 1 and relevance is x ⊙ g (for CNNs
the flat first layer hands relevance down directly), so a map sums to about that logit, less what
biases, and for AttnLRP the softmaxes, absorb. Relevance is read at the input of the timm network,
i.e. after a wrapper's per-channel normalisation: that is elementwise, and the identity rule passes
relevance through it unchanged to the pixels. The method runs inside the fused engine, so
SmoothGrad/VarGrad over it, class selection and the map cache work as for any other method.
"""
from __future__ import annotations

from typing import Any

from annotated_types import Ge, Gt
from torch import Tensor, nn

from ...config.declare import OneOf
from ..base import Method, register
from ..engine import NET_INPUT, Plan, Request
from ..model import inspect_model
from .lrp_rules import CNN_RULES, VIT_RULES, make_rule


def relevance_read(x: Tensor, grad: Tensor) -> Tensor:
    """The backward pass already carries relevance at the input (flat first layer): N×C×H×W."""
    return grad


def input_times_grad_read(x: Tensor, grad: Tensor) -> Tensor:
    """Relevance x ⊙ g of a modified gradient g: N×C×H×W."""
    return x * grad


class LRP(Method):
    """LRP through the engine: one request at the network input under an LRP backward rule."""

    def plan(self, model: nn.Module, *, rule: str | None = None, epsilon: float | None = None,
             stabilizer: float = 1e-6) -> Plan:
        """``rule``: cplrp (default) or attnlrp for ViTs, epsilon_plus_flat for CNNs; ``epsilon``: default 0
        for ViTs (LXT's efficient mode), 1e-6 for CNNs."""
        family = inspect_model(model).family
        rule = make_rule(family, rule, epsilon, stabilizer)
        read = input_times_grad_read if family == "vit" else relevance_read
        return Plan((Request(read, NET_INPUT, rule=rule),))

    def layers(self, model: nn.Module, **params: Any) -> list[str]:
        return []


register("lrp", LRP(), rule=OneOf([*VIT_RULES, *CNN_RULES], "LRP rule"), epsilon=Ge(0), stabilizer=Gt(0))
