"""GradCAM++ (Chattopadhyay et al. 2018), closed form for an exponentiated class score, N×1×H×W.

α_ku = g_ku² / (2 g_ku² + Σ_v a_kv · g_ku³), w_k = Σ_u α_ku ReLU(g_ku), map = ReLU(Σ_k w_k a_k).
"""
from __future__ import annotations

from annotated_types import Gt
import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import LayerMethod, register


def gradcam_pp_read(act: Tensor, grad: Tensor, eps: float = 1e-7) -> Tensor:
    """act, grad: N×K×h×w → N×1×h×w."""
    g2 = grad * grad
    alpha = g2 / (2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g2 * grad + eps)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * F.relu(grad)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * act).sum(1, keepdim=True))


register("gradcam_pp", LayerMethod(gradcam_pp_read, eps=1e-7), eps=Gt(0))
