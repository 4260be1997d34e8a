"""Tiny models, explain functions and numpy references for the metric tests;
import as `from metrics.metric_helpers import ...`."""

from __future__ import annotations

import numpy as np
import torch
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


def tiny_cnn(num_classes: int = 3, size: int = 8, seed: int = 0) -> nn.Module:
    """conv-relu-conv-relu-linear on 3×size×size inputs, in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * size * size, num_classes),
    ).eval()


def tiny_resnet(seed: int = 0) -> ResNet:
    """A 4-stage timm ResNet with BatchNorm statistics as after training."""
    torch.manual_seed(seed)
    model = ResNet(
        BasicBlock, [1, 1, 1, 1], num_classes=4, channels=(8, 16, 24, 32), stem_width=8, zero_init_last=False
    )
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = 0.1 * torch.randn(m.num_features, generator=g)
            m.running_mean = 0.1 * torch.randn(m.num_features, generator=g)
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model.eval()


def tiny_vit(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=8, num_classes=4, embed_dim=16, depth=3, num_heads=2).eval()


def gradient(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Plain input gradient of the target logit, N×C×H×W."""
    x = images.detach().clone().requires_grad_(True)
    score = model(x).gather(1, targets[:, None]).sum()
    return torch.autograd.grad(score, x)[0]


def image_map(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """A 'method' that ignores the model: the map is the image itself."""
    return images.clone()


class ConstantClass(nn.Module):
    """Predicts class ``label`` for every input, whatever it is."""

    def __init__(self, label: int, num_classes: int = 3) -> None:
        super().__init__()
        self.register_buffer("out", torch.nn.functional.one_hot(torch.tensor(label), num_classes).float())
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.out.expand(len(x), -1) + 0 * x.sum((1, 2, 3))[:, None]


class LeftRight(nn.Module):
    """Class 0 if the left half is brighter than the right half, else class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1)


def visualize_grayscale(a: np.ndarray, percentile: float = 99) -> np.ndarray:
    """The Sanity Checks authors' VisualizeImageGrayscale on one C×H×W map."""
    image = np.abs(a).sum(0)
    vmax, vmin = np.percentile(image, percentile), image.min()
    return np.clip((image - vmin) / (vmax - vmin), 0, 1)


def visualize_diverging_spec(a: np.ndarray, percentile: float = 99) -> np.ndarray:
    """SPEC.md's signed normalisation of one C×H×W map: sum / 99th percentile of |sum|, clipped."""
    image = a.sum(0)
    return np.clip(image / np.percentile(np.abs(image), percentile), -1, 1)
