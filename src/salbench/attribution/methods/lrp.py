"""Layer-wise relevance propagation (Bach et al. 2015) for CNNs via zennit, N×C×H×W.

Composite EpsilonPlusFlat (flat rule at the first layer, z⁺ at other convolutions, ε at dense
layers). zennit's torchvision ResNetCanonizer does not recognise timm's blocks (other classes), so
:class:`TimmResNetCanonizer` merges timm's batch norms into the preceding convolutions and routes
each residual addition through a zennit ``Sum`` module; without it the addition passes relevance
to both branches and relevance is not conserved. The output relevance is the explained logit, so a
map sums to about that logit (less what biases absorb). Relevance is read at the input of the timm
network, i.e. after a wrapper's input normalisation.
"""
from __future__ import annotations

from annotated_types import Gt
import torch
from torch import Tensor, nn

from ..base import METHODS, FunctionMethod, register
from ..model import attribution_mode, inspect_model, model_device


def _residual_sum(module: nn.Module, x: Tensor, shortcut: Tensor) -> Tensor:
    if module.se is not None:
        x = module.se(x)
    if module.drop_path is not None:
        x = module.drop_path(x)
    if module.downsample is not None:
        shortcut = module.downsample(shortcut)
    return module.canonizer_sum(torch.stack([shortcut, x], dim=-1))


def _basic_forward(self: nn.Module, x: Tensor) -> Tensor:
    """timm BasicBlock.forward with the residual addition as a module."""
    out = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    out = self.bn2(self.conv2(out))
    return self.act2(_residual_sum(self, out, x))


def _bottleneck_forward(self: nn.Module, x: Tensor) -> Tensor:
    """timm Bottleneck.forward with the residual addition as a module."""
    out = self.act1(self.bn1(self.conv1(x)))
    out = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(out)))))
    out = self.bn3(self.conv3(out))
    return self.act3(_residual_sum(self, out, x))


def timm_resnet_canonizers() -> list:
    """Canonizers for timm ResNets: BN merging and residual Sum modules.

    zennit's SequentialMergeBatchNorm pairs each batch norm with the convolution registered just before
    it; timm registers block and stem modules in forward order, so it finds every pair.
    """
    from timm.models.resnet import BasicBlock, Bottleneck
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    def attributes(name: str, module: nn.Module) -> dict | None:
        forward = {BasicBlock: _basic_forward, Bottleneck: _bottleneck_forward}.get(type(module))
        return None if forward is None else {"forward": forward.__get__(module), "canonizer_sum": Sum()}

    return [SequentialMergeBatchNorm(), AttributeCanonizer(attributes)]


def lrp(model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
        epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Tensor:
    """Relevance of the target logit: N×C×H×W (CNNs only)."""
    from zennit.composites import EpsilonPlusFlat

    info = inspect_model(model)
    if info.family != "cnn":
        alternatives = [m for m in METHODS.names() if m not in ("lrp", "random")]
        raise ValueError(f"lrp supports CNNs only (zennit has no transformer rules); for a ViT use one of "
                         f"{alternatives}")
    device, captured = model_device(model), []
    composite = EpsilonPlusFlat(epsilon=epsilon, stabilizer=stabilizer, canonizers=timm_resnet_canonizers())
    chunks = []
    hook = info.inner.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        with attribution_mode(model), composite.context(model), torch.enable_grad():
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].to(device).requires_grad_(True)
                t = targets[start:start + batch_size].to(device)
                captured.clear()
                logits = model(x)
                seed = torch.zeros_like(logits).scatter_(1, t[:, None], logits.gather(1, t[:, None]))
                (relevance,) = torch.autograd.grad(logits, captured[0], seed)
                chunks.append(relevance.to(images.device))
    finally:
        hook.remove()
    return torch.cat(chunks)


register("lrp", FunctionMethod(lrp), epsilon=Gt(0), stabilizer=Gt(0))
