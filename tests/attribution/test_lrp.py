"""LRP on timm ResNets: the single-pass EpsilonPlusFlat equals zennit's, conserves relevance, rules by hand."""
from __future__ import annotations

import pytest
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.layer import Sum
from zennit.torchvision import ResNetCanonizer

from salbench.attribution import METHODS
from salbench.attribution.methods.lrp_rules import EpsilonPlusFlat as OurEpsilonPlusFlat

from attribution.attr_helpers import Normalised, tiny_resnet

LRP = METHODS.get("lrp")


# ---- the reference: zennit's EpsilonPlusFlat with canonizers for timm's residual blocks ----

def _residual_sum(module: nn.Module, x: Tensor, shortcut: Tensor) -> Tensor:
    if module.se is not None:
        x = module.se(x)
    if module.drop_path is not None:
        x = module.drop_path(x)
    if module.downsample is not None:
        shortcut = module.downsample(shortcut)
    return module.canonizer_sum(torch.stack([shortcut, x], dim=-1))


def _basic_forward(self: nn.Module, x: Tensor) -> Tensor:
    out = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    return self.act2(_residual_sum(self, self.bn2(self.conv2(out)), x))


def _bottleneck_forward(self: nn.Module, x: Tensor) -> Tensor:
    out = self.act1(self.bn1(self.conv1(x)))
    out = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(out)))))
    return self.act3(_residual_sum(self, self.bn3(self.conv3(out)), x))


def timm_resnet_canonizers() -> list:
    """Batch norms merged into the convolutions before them; each residual addition through zennit's Sum
    (Norm rule). zennit's torchvision ResNetCanonizer does not recognise timm's block classes."""
    def attributes(name: str, module: nn.Module) -> dict | None:
        forward = {BasicBlock: _basic_forward, Bottleneck: _bottleneck_forward}.get(type(module))
        return None if forward is None else {"forward": forward.__get__(module), "canonizer_sum": Sum()}

    return [SequentialMergeBatchNorm(), AttributeCanonizer(attributes)]


def zennit_lrp(model: nn.Module, images: Tensor, targets: Tensor, canonizers: list | None = None) -> Tensor:
    x = images.clone().requires_grad_(True)
    with EpsilonPlusFlat(canonizers=timm_resnet_canonizers() if canonizers is None else canonizers).context(
            model) as modified:
        logits = modified(x)
        seed = torch.zeros_like(logits).scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
        (relevance,) = torch.autograd.grad(logits, x, seed)
    return relevance


def _bias_free(model):
    """Zero every bias the folded batch norms would carry (BN shift, running mean) and the classifier's."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.zero_()
    model.fc.bias.data.zero_()
    return model


@pytest.mark.parametrize("block,stem", [(BasicBlock, ""), (Bottleneck, "deep")])
def test_equals_zennit_epsilon_plus_flat(block, stem, images, targets):
    """One modified backward pass gives zennit's relevance (which re-runs every layer in its hooks); the
    residual additions differ only by zennit's 1e-6 stabiliser in the Sum's Norm rule."""
    model = tiny_resnet(block, stem_type=stem)
    ours, reference = LRP(model, images, targets), zennit_lrp(model, images, targets)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item())
    torch.testing.assert_close(ours.sum((1, 2, 3)), reference.sum((1, 2, 3)), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("block,stem", [(BasicBlock, ""), (Bottleneck, "deep")])
def test_relevance_sums_to_the_logit(block, stem, images, targets):
    model = _bias_free(tiny_resnet(block, stem_type=stem))
    logits = model(images).gather(1, targets[:, None]).squeeze(1)
    # Not exact: where a residual branch is negative, the addition sends it negative relevance, and
    # the z+ rule drops relevance at units whose positive contributions are all zero (~0.5% here).
    torch.testing.assert_close(LRP(model, images, targets).sum((1, 2, 3)), logits, rtol=2e-2, atol=1e-5)


def test_zennit_torchvision_canonizer_does_not_fit_timm_blocks(images, targets):
    """Why the reference needs its own canonizer: with zennit's, residual additions duplicate relevance."""
    model = _bias_free(tiny_resnet())
    logits = model(images).gather(1, targets[:, None]).squeeze(1)
    ratio = zennit_lrp(model, images, targets, [ResNetCanonizer()]).sum((1, 2, 3)) / logits
    assert (ratio - 1).abs().max() > 0.5


def test_wrapped_model_relevance_is_read_after_the_normalisation(images, targets):
    net = _bias_free(tiny_resnet())
    wrapped = Normalised(net)
    normalised = (images - wrapped.mean) / wrapped.std
    torch.testing.assert_close(LRP(wrapped, images, targets), LRP(net, normalised, targets), rtol=1e-4, atol=1e-7)


def test_forward_unchanged_and_model_restored(images, targets):
    model = tiny_resnet(Bottleneck, stem_type="deep")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(images)
    with OurEpsilonPlusFlat().context(model):
        assert torch.equal(model(images), expected)
    LRP(model, images, targets)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in vars(m) and not m._forward_hooks and not m._forward_pre_hooks
               for m in model.modules())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert torch.equal(model(images), expected)


# ---- each rule by hand: flat (first layer), z+ (other convolutions), ε (dense) ----

def _two_convs(first: list[float]) -> nn.Sequential:
    """1×1 conv with diagonal weights ``first``, then a 1×1 conv with w = [2, −1], b = 0.5, then a unit dense layer."""
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.Conv2d(2, 1, 1), nn.Flatten(), nn.Linear(1, 1))
    model[0].weight.data = torch.diag(torch.tensor(first)).view(2, 2, 1, 1)
    model[1].weight.data, model[1].bias.data = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1), torch.tensor([0.5])
    model[3].weight.data, model[3].bias.data = torch.ones(1, 1), torch.zeros(1)
    return model.eval()


@pytest.mark.parametrize("first,hidden,inputs", [
    # x = [1, 3] → h = [1, 3], y = 2 − 3 + 0.5 = −0.5; z⁺ = 2·1 + 0.5 = 2.5: R_h = [2/2.5·(−0.5), 0] = [−0.4, 0];
    # flat: each input gets half of ΣR_h = −0.2.
    ([1.0, 1.0], [-0.4, 0.0], [-0.2, -0.2]),
    # h = [1, −3] (a negative input): y = 2 + 3 + 0.5 = 5.5 = z (W⁺x⁺ + b⁺ + W⁻x⁻): R_h = [2, 3]; flat: 2.5 each.
    ([1.0, -1.0], [2.0, 3.0], [2.5, 2.5]),
])
def test_rules_by_hand(first, hidden, inputs):
    model, x = _two_convs(first), torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    kept = []
    handle = model[0].register_forward_hook(lambda m, args, out: kept.append(out))
    xx = x.clone().requires_grad_(True)
    with OurEpsilonPlusFlat(epsilon=1e-6).context(model):
        logit = model(xx)
        kept[0].retain_grad()
        logit.sum().backward()
    handle.remove()
    torch.testing.assert_close((kept[0] * kept[0].grad).flatten(), torch.tensor(hidden), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xx.grad.flatten(), torch.tensor(inputs), rtol=1e-5, atol=1e-6)  # flat: relevance
    torch.testing.assert_close(LRP(model, x, torch.tensor([0])).flatten(), torch.tensor(inputs), rtol=1e-5, atol=1e-6)


def test_epsilon_rule_on_dense_layer_by_hand():
    """Dense layer after the first: z = 2·1 − 1·3 + 0.5 = −0.5, ε = 0.1: R = [2, −3]·(−0.5)/(−0.6) = [5/3, −5/2]."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1)).eval()
    model[0].weight.data = torch.eye(2)
    model[1].weight.data, model[1].bias.data = torch.tensor([[2.0, -1.0]]), torch.tensor([0.5])
    x, kept = torch.tensor([[1.0, 3.0]], requires_grad=True), []
    handle = model[0].register_forward_hook(lambda m, args, out: kept.append(out))
    with OurEpsilonPlusFlat(epsilon=0.1).context(model):
        out = model(x)
        kept[0].retain_grad()
        out.sum().backward()
    handle.remove()
    torch.testing.assert_close(kept[0] * kept[0].grad, torch.tensor([[5 / 3, -2.5]]))
    torch.testing.assert_close(x.grad, torch.full((1, 2), (5 / 3 - 2.5) / 2))  # flat first layer: even split
