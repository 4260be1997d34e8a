"""LRP (EpsilonPlusFlat) through the question-conditioned CNNs: relevance conservation on the Relation Network and
FiLM, whatever their widths.

With every bias zero (convolutions, linear layers, batch-norm shifts and means), relevance is conserved exactly
up to the rules' stabilisers: Σ image relevance + the relevance absorbed by the constant inputs = the explained
logit. The constants are the x/y coordinate channels (both models) and, in the Relation Network, the question
term W_q q of g's first layer (an additive, image-independent input of every pair). FiLM's question acts as a
per-channel scale γ (a constant modulation: its gradient passes relevance by LRP-0) and a shift β, a bias that
absorbs relevance; β is zeroed here so that the check is exact.
"""
from __future__ import annotations

import pytest
import torch
from attribution.test_additional_inputs import TINY, vqa_inputs
from torch import nn

from salbench.attribution import METHODS
from salbench.attribution.methods.lrp_rules import make_rule
from salbench.attribution.model import attribution_mode
from salbench.models import build_question_model
from salbench.models.film import FiLM

WIDER = {"film": {"stem": (6, 10, 12), "blocks": 3, "head": 20, "f": (24, 12)},
         "relation-network": {"conv_channels": (6, 10, 12), "g": (24, 20, 12), "f": (16, 8)}}


def zero_bias_model(arch: str, wider: bool) -> nn.Module:
    torch.manual_seed(3)
    m = build_question_model(arch, 5, 12, 32, **{**TINY[arch], **(WIDER[arch] if wider else {})})
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is not None:
                mod.bias.zero_()
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_var = torch.rand(mod.num_features, generator=g) + 0.5
                if mod.affine:
                    mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                    mod.bias.zero_()
        if isinstance(m, FiLM):  # γ = 1 + Δγ(q) from the question, β = 0
            n = len(m.blocks)
            w = torch.randn(m.film.weight.shape, generator=g) * 0.5
            w.view(n, 2, m.channels, -1)[:, 1] = 0
            m.film.weight.copy_(w)
    return m.eval()


def _coordinate_inputs(model: nn.Module) -> list[nn.Module]:
    """Modules whose input ends with the two coordinate channels (last dimension for the RN's cells)."""
    if isinstance(model, FiLM):
        return [b.proj for b in model.blocks] + [model.head[0]]
    return [model.g_i]


def relevance_budget(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logit N, Σ image relevance N, relevance absorbed by coordinates and question N) from one LRP pass."""
    kept: list[tuple[str, torch.Tensor]] = []

    def keep(kind: str, t: torch.Tensor) -> None:
        kept.append((kind, t))

    hooks = [m.register_forward_pre_hook(lambda mod, args: keep("coords", args[0])) for m in _coordinate_inputs(model)]
    def question_leaf(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        leaf = out.detach().requires_grad_(True)  # the question term does not depend on the image: a leaf
        keep("question", leaf)
        return leaf

    if not isinstance(model, FiLM):
        hooks.append(model.g_q.register_forward_hook(question_leaf))
    try:
        with attribution_mode(model), make_rule("cnn").context(model), torch.enable_grad():
            x = images.clone().requires_grad_(True)
            logits = model(x, tokens).gather(1, targets[:, None])[:, 0]
            grads = torch.autograd.grad(logits.sum(), [x] + [t for _, t in kept])
    finally:
        for h in hooks:
            h.remove()
    absorbed = torch.zeros(len(images))
    for (kind, t), g in zip(kept, grads[1:]):
        r = t * g
        r = r[:, -2:] if (kind == "coords" and t.dim() == 4) else r[..., -2:] if kind == "coords" else r
        absorbed += r.flatten(1).sum(1)
    return logits.detach(), grads[0].flatten(1).sum(1), absorbed


@pytest.mark.parametrize("wider", [False, True])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_relevance_is_conserved_through_the_question_models(arch: str, wider: bool) -> None:
    model = zero_bias_model(arch, wider)
    images, tokens, targets = vqa_inputs()
    logit, image_relevance, absorbed = relevance_budget(model, images, tokens, targets)
    assert logit.abs().min() > 1e-3  # a non-trivial quantity to conserve
    torch.testing.assert_close(image_relevance + absorbed, logit, rtol=2e-3, atol=1e-5)
    # the engine's LRP map is the image relevance of that pass
    maps = METHODS.get("lrp")(model, images, targets, additional_inputs={"tokens": tokens})
    torch.testing.assert_close(maps.flatten(1).sum(1), image_relevance, rtol=1e-4, atol=1e-6)
    assert (image_relevance.abs() > 1e-6).all()  # the image gets some (untrained FiLM: coordinates take most)


def test_forward_values_are_unchanged_and_the_model_restored() -> None:
    model = zero_bias_model("film", False)
    images, tokens, _ = vqa_inputs()
    before = model(images, tokens)
    with attribution_mode(model), make_rule("cnn").context(model):
        torch.testing.assert_close(model(images, tokens), before, rtol=1e-5, atol=1e-6)
    assert "normalise" not in model.__dict__ and all("forward" not in m.__dict__ for m in model.modules())
    torch.testing.assert_close(model(images, tokens), before)
