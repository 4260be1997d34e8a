"""LRP on timm ResNets: relevance conservation needs the timm canonizer."""
from __future__ import annotations

import pytest
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from salbench.attribution import METHODS
from salbench.attribution.methods.lrp import timm_resnet_canonizers

from attribution.attr_helpers import Normalised, tiny_resnet


def _bias_free(model):
    """Zero every bias the canonizers would create (BN shift, running mean) and the classifier's, so that
    no relevance is absorbed by biases."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.zero_()
    model.fc.bias.data.zero_()
    return model


def _relevance(model, images, targets, canonizers):
    x = images.clone().requires_grad_(True)
    with EpsilonPlusFlat(canonizers=canonizers).context(model) as modified:
        logits = modified(x)
        seed = torch.zeros_like(logits).scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
        (relevance,) = torch.autograd.grad(logits, x, seed)
    return relevance


@pytest.mark.parametrize("block,stem", [(BasicBlock, ""), (Bottleneck, "deep")])
def test_relevance_sums_to_the_logit(block, stem, images, targets):
    model = _bias_free(tiny_resnet(block, stem_type=stem))
    logits = model(images).gather(1, targets[:, None]).squeeze(1)
    relevance = METHODS.get("lrp")(model, images, targets)
    # Not exact: where a residual branch is negative, the Sum rule sends it negative relevance, and
    # the z+ rule drops relevance at units whose positive contributions are all zero (~0.5% here).
    torch.testing.assert_close(relevance.sum((1, 2, 3)), logits, rtol=2e-2, atol=1e-5)


def test_zennit_torchvision_canonizer_does_not_fit_timm_blocks(images, targets):
    """The reason for our canonizer: with zennit's own, residual additions duplicate relevance."""
    model = _bias_free(tiny_resnet())
    logits = model(images).gather(1, targets[:, None]).squeeze(1)
    ratio = _relevance(model, images, targets, [ResNetCanonizer()]).sum((1, 2, 3)) / logits
    assert (ratio - 1).abs().max() > 0.5


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_canonizers_keep_the_function_and_are_removed(block, images):
    model = tiny_resnet(block)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(images)
    with EpsilonPlusFlat(canonizers=timm_resnet_canonizers()).context(model) as modified:
        torch.testing.assert_close(modified(images), expected, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(images), expected, rtol=0, atol=0)


def test_wrapped_model_relevance_is_read_after_the_normalisation(images, targets):
    net = _bias_free(tiny_resnet())
    wrapped = Normalised(net)
    normalised = (images - wrapped.mean) / wrapped.std
    torch.testing.assert_close(METHODS.get("lrp")(wrapped, images, targets),
                               METHODS.get("lrp")(net, normalised, targets), rtol=1e-4, atol=1e-7)
