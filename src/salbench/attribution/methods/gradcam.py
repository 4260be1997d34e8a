"""GradCAM (Selvaraju et al. 2017): ReLU(Σ_k mean_u(g_k) · a_k) at a layer, N×1×H×W."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..base import LayerMethod, register


def gradcam_read(act: Tensor, grad: Tensor, relu: bool = True) -> Tensor:
    """act, grad: N×K×h×w → N×1×h×w."""
    cam = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True)
    return F.relu(cam) if relu else cam


register("gradcam", LayerMethod(gradcam_read, relu=True))
