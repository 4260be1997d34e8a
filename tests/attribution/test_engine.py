"""The fused engine: shared passes give the same maps as separate ones, with fewer passes."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from salbench.attribution import METHODS, attribute_many, execute
from salbench.attribution.engine import Plan, Request, upsample

from attribution.attr_helpers import FAST, MODELS, tiny_resnet

LAYERS = {"cnn": ["layer1", "layer2", "layer3", "layer4"],
          "vit": ["blocks.0.norm1", "blocks.0", "blocks.1.norm1", "blocks.-1.mlp"]}


def _entries(model, layers):
    """Every method that has an engine plan: layer methods at each layer, the rest once, plus noise over layers."""
    entries = []
    for name in METHODS:
        method, params = METHODS.get(name), FAST.get(name, {})
        if method.plan(model, **params) is None:
            continue
        takes_layer = "layer" in inspect.signature(method.plan).parameters
        entries += [(name, {**params, "layer": layer}) for layer in layers] if takes_layer else [(name, params)]
    entries += [("smoothgrad", {"base": "gradcam", "samples": 3, "layer": layers[-1]}),
                ("smoothgrad", {"base": "normgrad", "samples": 3, "layer": layers[0]}),
                ("vargrad", {"base": "linear_approx", "samples": 3, "layer": layers[1], "aggregation": "max"})]
    return entries


class _Counter:
    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


@pytest.mark.parametrize("kind", ["cnn", "vit", "vit_wrapped"])
def test_fused_equals_one_at_a_time(kind, images, targets):
    model = MODELS[kind]()
    entries = _entries(model, LAYERS[kind.split("_")[0]])
    assert len(entries) >= 30
    counter = _Counter(model)
    fused = attribute_many(model, images, targets, entries, batch_size=64)
    fused_passes, counter.n = counter.n, 0
    alone = [METHODS.get(name)(model, images, targets, batch_size=64, **params) for name, params in entries]
    for (name, params), a, b in zip(entries, fused, alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=lambda m, e=(name, params): f"{e}: {m}")
    # One pass per group: plain, guided, deconvolution, LRP, the IG path, the shared noise.
    assert fused_passes == 6
    assert counter.n > 5 * fused_passes


def test_noise_wrapped_methods_share_one_pass_per_sample(images, targets):
    model = tiny_resnet()
    counter = _Counter(model)
    attribute_many(model, images, targets, [("smoothgrad", {"base": "gradcam", "samples": 4})], batch_size=4)
    alone, counter.n = counter.n, 0
    attribute_many(model, images, targets, [("smoothgrad", {"base": "gradcam", "samples": 4}),
                                            ("smoothgrad", {"base": "normgrad", "samples": 4, "layer": "layer2"}),
                                            ("vargrad", {"base": "gradient", "samples": 4})], batch_size=4)
    assert alone == counter.n == 4


def test_layer_requests_stop_the_backward_at_the_earliest_layer(images, targets):
    model = tiny_resnet()
    reached = []
    model.conv1.register_full_backward_hook(lambda *args: reached.append(True))
    METHODS.get("gradcam")(model, images, targets, layer="layer3")
    assert not reached
    METHODS.get("gradient")(model, images, targets)
    assert reached


def test_captured_activation_is_the_module_output_despite_in_place_successors(images, targets):
    """timm's block runs bn1 → in-place ReLU: the request must see bn1's output, negatives included."""
    model = tiny_resnet()
    plan = Plan((Request(lambda a, g: a.amin(1, keepdim=True), "layer1.0.bn1"),))
    lowest = execute(model, images, targets, [plan])[0]
    assert lowest.min() < 0
    seen = []
    model.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.append(o.clone()) and None)
    model(images)
    expected = torch.nn.functional.interpolate(seen[0].amin(1, keepdim=True), size=(32, 32), mode="bilinear")
    torch.testing.assert_close(lowest, expected)


class _GeluMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 0.2, -1.0, 1.0], [-0.5, 1.0, 1.0, -1.0]]))
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(torch.tensor([[1.0, -1.0, 2.0], [0.5, 0.5, -0.5]]))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("name", ["guided_backprop", "deconvolution"])
def test_backward_rules_at_gelu_by_hand(name):
    """Guided: ReLU of the gradient after the activation's backward; deconvolution: ReLU of the incoming one."""
    model = _GeluMLP()
    x = torch.tensor([[0.5, -0.2, 0.1, 0.8]]).view(1, 1, 2, 2)
    z = model.fc1(x.flatten(1)).detach().requires_grad_(True)
    (gelu_grad,) = torch.autograd.grad(torch.nn.functional.gelu(z).sum(), z)
    incoming = model.fc2.weight[0].detach()
    crossing = torch.relu(gelu_grad * incoming) if name == "guided_backprop" else torch.relu(incoming)
    expected = (crossing @ model.fc1.weight.detach()).view(1, 1, 2, 2)
    torch.testing.assert_close(METHODS.get(name)(model, x, torch.tensor([0])), expected)
    assert not torch.allclose(expected, METHODS.get("gradient")(model, x, torch.tensor([0])))


def test_a_layer_that_runs_twice_is_refused(images, targets):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 5)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match="layer 'conv' runs more than once"):
        METHODS.get("gradcam")(Twice(), images, targets, layer="conv")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_images_on_a_cuda_model_match_cpu(images, targets):
    model = tiny_resnet()
    entries = [("gradient", {}), ("gradcam", {}), ("smoothgrad", {"samples": 3}), ("lrp", {})]
    cpu = attribute_many(model, images, targets, entries, batch_size=3)
    cuda = attribute_many(model.cuda(), images, targets, entries, batch_size=3)
    for a, b in zip(cpu, cuda):
        assert b.device == images.device
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("shape,size", [((2, 3, 4, 4), (32, 32)), ((1, 2, 5, 3), (40, 24)), ((2, 1, 7, 7), (32, 32)),
                                        ((1, 1, 1, 1), (8, 8)), ((1, 1, 6, 6), (6, 6))])
def test_upsample_equals_bilinear_interpolation(shape, size):
    maps = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample(maps, size), expected, rtol=1e-5, atol=1e-6)
