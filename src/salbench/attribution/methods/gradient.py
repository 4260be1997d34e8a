"""Gradient (Simonyan et al. 2014) and Gradient×Input (Shrikumar et al. 2016): input-space, N×C×H×W."""
from __future__ import annotations

from torch import Tensor

from ..base import InputMethod, register


def gradient_read(x: Tensor, grad: Tensor) -> Tensor:
    """∂y_c/∂x, signed: N×C×H×W."""
    return grad


def gradient_x_input_read(x: Tensor, grad: Tensor) -> Tensor:
    """x ⊙ ∂y_c/∂x: N×C×H×W."""
    return x * grad


register("gradient", InputMethod(gradient_read))
register("gradient_x_input", InputMethod(gradient_x_input_read))
