"""Random baseline: i.i.d. uniform [0, 1) maps, N×1×H×W, independent of model and image."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..base import FunctionMethod, register


def random_map(model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int, seed: int = 0) -> Tensor:
    """Drawn on the CPU for the whole call at once, so the maps do not depend on the device or ``batch_size``."""
    n, _, h, w = images.shape
    return torch.rand((n, 1, h, w), generator=torch.Generator().manual_seed(seed)).to(images.device)


register("random", FunctionMethod(random_map))
