"""Tiny timm models for the attribution tests; import as `from attribution.attr_helpers import ...`."""
from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

# Small settings for methods whose defaults are expensive; any other method runs with its defaults.
FAST = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 3}, "vargrad": {"samples": 3}}


def realistic_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give batch norms non-trivial statistics, as after training (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if m.affine:
                m.weight.data = torch.rand(c, generator=g) + 0.5
                m.bias.data = 0.1 * torch.randn(c, generator=g)
            m.running_mean = 0.1 * torch.randn(c, generator=g)
            m.running_var = torch.rand(c, generator=g) + 0.5
    return model


def tiny_resnet(block: type = BasicBlock, seed: int = 0, stem_type: str = "") -> ResNet:
    torch.manual_seed(seed)
    model = ResNet(block, [1, 1, 1, 1], num_classes=5, channels=(8, 16, 24, 32), stem_width=8,
                   stem_type=stem_type, zero_init_last=False)
    return realistic_bn(model, seed).eval()


def tiny_vit(seed: int = 0, **kwargs) -> VisionTransformer:
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    return VisionTransformer(**{**args, **kwargs}).eval()


class Normalised(nn.Module):
    """The kind of wrapper the model library puts around a timm network: [0, 1] input → normalised."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


MODELS = {
    "cnn": lambda: tiny_resnet(),
    "cnn_bottleneck_wrapped": lambda: Normalised(tiny_resnet(Bottleneck, stem_type="deep")),
    "vit": lambda: tiny_vit(),
    "vit_wrapped": lambda: Normalised(tiny_vit()),
}
