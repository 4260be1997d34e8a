"""Image plumbing shared by the generators and the classifiers: resizing and batched logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.zoo import to_unit


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float N×3×size×size in [0, 1] from uint8 N×H×W×3 or float N×3×H×W in [0, 1] (antialiased bilinear)."""
    x = to_unit(images) if images.dtype == torch.uint8 else images.float()
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, size: int, batch_size: int = 250) -> torch.Tensor:
    """Float N×C outputs of ``model`` (eval mode, on its device) for uint8 N×H×W×3 images resized to ``size``."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = [model(resize(images[a:a + batch_size].to(device), size)) for a in range(0, len(images), batch_size)]
    model.train(was)
    return torch.cat(out).float()
