"""Wrappers: multi-layer combination, meta-saliency, class selection, and params.yaml entries."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from salbench.attribution import (
    METHODS,
    Noise,
    ExplainClass,
    MetaSaliency,
    MultiLayer,
    attribute_many,
    build,
    combine_layers,
    select_targets,
)
from salbench.registry import UnknownNameError

from attribution.attr_helpers import Normalised, tiny_resnet, tiny_vit

LAYERS = ["layer1", "layer2", "layer3"]  # layer4 is 1×1 at 32 px: a constant map


def _minmax(m):
    flat = m.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (m - lo) / (hi - lo)


@pytest.mark.parametrize("combine,weights", [("product", None), ("sum", [0.5, 0.3, 0.2]), ("geometric", [1, 2, 1])])
def test_multi_layer_by_hand(images, targets, combine, weights):
    model = tiny_resnet()
    single = [_minmax(METHODS.get("normgrad")(model, images, targets, layer=layer)) for layer in LAYERS]
    w = [1 / 3] * 3 if weights is None else weights
    expected = {"product": single[0] * single[1] * single[2],
                "sum": sum(wi * m for wi, m in zip(w, single)),
                "geometric": single[0] ** w[0] * single[1] ** w[1] * single[2] ** w[2]}[combine]
    method = MultiLayer("normgrad", LAYERS, combine, weights)
    maps = method(model, images, targets)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert method.plan(model) is not None  # all layers from one shared pass


def test_multi_layer_of_a_wrapped_method(images, targets):
    """SmoothGrad of GradCAM at two layers (one shared pass per noise sample) combines the layers' SmoothGrad maps."""
    model = tiny_resnet()
    method = MultiLayer("smoothgrad", ["layer2", "layer3"])
    params = {"base": "gradcam", "samples": 2}
    assert method.plan(model, **params) is not None
    maps = method(model, images, targets, **params)
    parts = [METHODS.get("smoothgrad")(model, images, targets, layer=layer, **params) for layer in ["layer2", "layer3"]]
    torch.testing.assert_close(maps, combine_layers(parts))


@pytest.mark.parametrize("name", ["smoothgrad", "vargrad"])
def test_noise_over_a_method_with_its_own_passes(name, images, targets):
    """LRP has no engine plan: the wrapper calls it once per noise sample, on the same noisy copies."""
    model = tiny_resnet()
    sampler = Noise(size=3, sigma=0.1, seed=2)
    maps = torch.stack([METHODS.get("lrp")(model, sampler.points(images, torch.tensor([s])), targets)
                        for s in range(3)])
    expected = maps.mean(0) if name == "smoothgrad" else maps.var(0, unbiased=False)
    ours = METHODS.get(name)(model, images, targets, base="lrp", samples=3, sigma=0.1, seed=2)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-9)


def test_combination_errors_name_the_fix():
    with pytest.raises(UnknownNameError, match="geometric, product, sum"):
        MultiLayer("normgrad", LAYERS, "mean")
    with pytest.raises(ValueError, match="use 'geometric'"):
        combine_layers([torch.rand(1, 1, 2, 2)] * 2, "product", [1, 1])


@pytest.mark.parametrize("make,base", [(lambda: Normalised(tiny_resnet()), "gradcam"),
                                       (lambda: tiny_vit(), "gradient"),
                                       (lambda: tiny_resnet(), "lrp")])
def test_meta_saliency_equals_a_stepped_copy_and_restores_the_model(make, base, images, targets):
    model, lr = make(), 0.5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = MetaSaliency(base, lr)(model, images, targets)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "weights not restored bit-exactly"

    expected = []
    for i in range(len(images)):
        stepped = copy.deepcopy(model)
        loss = F.cross_entropy(stepped(images[i:i + 1]), targets[i:i + 1])
        loss.backward()
        with torch.no_grad():
            for p in stepped.parameters():
                p -= lr * p.grad
        expected.append(METHODS.get(base)(stepped, images[i:i + 1], targets[i:i + 1]))
    torch.testing.assert_close(maps, torch.cat(expected), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(maps, METHODS.get(base)(model, images, targets))  # the step changed something

    model.requires_grad_(False)  # a frozen model still gets its step, and stays frozen
    with torch.no_grad():
        torch.testing.assert_close(MetaSaliency(base, lr)(model, images, targets), maps)
    assert not any(p.requires_grad for p in model.parameters())


def test_explain_class_and_select_targets(images, targets):
    model = tiny_resnet()
    logits = model(images)
    assert torch.equal(select_targets(model, images, targets, "predicted", batch_size=3), logits.argmax(1))
    assert torch.equal(select_targets(model, images, targets, "lowest"), logits.softmax(1).argmin(1))
    assert torch.equal(select_targets(model, images, targets, "true"), targets)
    for which, chosen in (("predicted", logits.argmax(1)), ("lowest", logits.argmin(1)), ("true", targets)):
        torch.testing.assert_close(ExplainClass("gradcam", which)(model, images, targets, layer="layer3"),
                                   METHODS.get("gradcam")(model, images, chosen, layer="layer3"))
    with pytest.raises(UnknownNameError, match="lowest, predicted, true"):
        ExplainClass("gradcam", "highest")


def test_build_from_params_entries(images, targets):
    model = tiny_resnet()
    method, params = build("ng", {"method": "normgrad", "layers": LAYERS, "combine": "sum", "weights": [1, 1, 1]})
    assert isinstance(method, MultiLayer) and params == {}
    method, params = build("smoothgrad", {"base": "gradcam", "samples": 2, "meta_lr": 0.1, "explain": "predicted"})
    assert isinstance(method, ExplainClass) and isinstance(method.base, MetaSaliency)
    assert params == {"base": "gradcam", "samples": 2}
    maps = method(model, images, targets, **params)
    assert maps.shape == (4, 1, 32, 32)
    with pytest.raises(ValueError, match="need 'layers'"):
        build("gradcam", {"combine": "sum"})
    with pytest.raises(UnknownNameError, match="Known attribution methods"):
        build("gradcma", {})


def test_attribute_many_mixes_fused_and_own_pass_methods(images, targets):
    model = tiny_resnet()
    entries = [("gradient", {}), (MultiLayer("gradcam", ["layer3", "layer4"]), {}), ("lrp", {}),
               (MetaSaliency("gradient", 0.1), {}), ("random", {"seed": 1})]
    maps = attribute_many(model, images, targets, entries)
    for (method, params), m in zip(entries, maps):
        method = METHODS.get(method) if isinstance(method, str) else method
        torch.testing.assert_close(m, method(model, images, targets, **params))
