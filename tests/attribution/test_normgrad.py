"""NormGrad-family and GradCAM++ maths against hand computations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from salbench.attribution import METHODS
from salbench.attribution.methods.gradcam_pp import gradcam_pp_read
from salbench.attribution.methods.normgrad import AGGREGATIONS

from attribution.attr_helpers import Normalised, tiny_resnet, tiny_vit


def _act_and_grad(model, layer, images, targets):
    """Activation and class-logit gradient at ``layer`` (N×K×h×w), by hand: hook plus autograd."""
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o) and None)
    score = model(images).gather(1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(score, seen[0])
    handle.remove()
    a = seen[0].detach()
    if a.dim() == 3:  # ViT tokens: drop the class token, lay the rest on the 4×4 grid
        a, grad = (t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, 4, 4) for t in (a, grad))
    return a, grad


def _up(m, images):
    return F.interpolate(m, size=images.shape[2:], mode="bilinear", align_corners=False)


CASES = [(lambda: tiny_resnet(), "layer3"), (lambda: Normalised(tiny_resnet()), "net.layer2"),
         (lambda: tiny_vit(), "blocks.0.norm1")]


@pytest.mark.parametrize("make,layer", CASES)
def test_layer_methods_by_hand(make, layer, images, targets):
    model = make()
    a, g = _act_and_grad(model, layer, images, targets)
    l2 = lambda t: (t**2).sum(1, keepdim=True).sqrt()  # noqa: E731
    expected = {
        ("normgrad", ()): l2(g) * l2(a),
        ("normgrad_selective", ()): l2((a * g).clamp_min(0)),
        ("linear_approx", ()): (a * g).sum(1, keepdim=True),
        ("linear_approx", (("aggregation", "max"),)): (a * g).max(1, keepdim=True).values,
        ("linear_approx", (("aggregation", "l2"),)): l2(a * g),
        ("layer_gradient", ()): l2(g),
        ("layer_gradient", (("aggregation", "sum"),)): g.sum(1, keepdim=True),
        ("layer_gradient", (("aggregation", "l2_pos"),)): l2(g.clamp_min(0)),
    }
    for (name, options), raw in expected.items():
        maps = METHODS.get(name)(model, images, targets, layer=layer, **dict(options))
        torch.testing.assert_close(maps, _up(raw, images), rtol=1e-4, atol=1e-7,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_aggregations_on_known_values():
    t = torch.tensor([3.0, -4.0, 0.0, 12.0]).view(1, 4, 1, 1)
    values = {name: AGGREGATIONS.get(name)(t).item() for name in AGGREGATIONS}
    assert values == {"sum": 11.0, "max": 12.0, "l2": 13.0, "l2_pos": pytest.approx(153**0.5)}


def test_gradcam_pp_on_a_hand_computed_case():
    """One channel, constant gradient 1, activations 1..4: α = 1/(2 + 10) everywhere, so w = 4/12."""
    act = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    cam = gradcam_pp_read(act, torch.ones_like(act), eps=0.0)
    torch.testing.assert_close(cam, act / 3)
    # A negative gradient gets no weight; a zero gradient gets α = 0 instead of 0/0.
    grad = torch.tensor([[1.0, 0.0], [-1.0, 2.0]]).view(1, 1, 2, 2)
    alpha = torch.tensor([1 / (2 + 10), 0.0, 1 / (2 - 10), 4 / (8 + 80)]).view(1, 1, 2, 2)
    weight = (alpha * grad.clamp_min(0)).sum()
    torch.testing.assert_close(gradcam_pp_read(act, grad, eps=0.0), (weight * act).clamp_min(0))


def test_gradcam_pp_upsamples_the_hand_formula(images, targets):
    model = tiny_resnet()
    a, g = _act_and_grad(model, "layer4", images, targets)
    expected = _up(gradcam_pp_read(a, g), images)
    torch.testing.assert_close(METHODS.get("gradcam_pp")(model, images, targets), expected)
