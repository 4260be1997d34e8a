"""Methods against captum on a timm ResNet (bare and inside a normalising wrapper) and a ViT."""
from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)

from salbench.attribution import METHODS, resolve_layer
from salbench.attribution.engine import Noise

from attribution.attr_helpers import MODELS

CLOSE = dict(rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module", params=["cnn", "cnn_bottleneck_wrapped", "vit"])
def model(request):
    return MODELS[request.param]()


def _x(images):
    return images.clone().requires_grad_(True)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns about hooks and requires_grad on every call
        yield


def test_gradient(model, images, targets):
    expected = Saliency(model).attribute(_x(images), target=targets, abs=False)
    torch.testing.assert_close(METHODS.get("gradient")(model, images, targets), expected, **CLOSE)


def test_gradient_x_input(model, images, targets):
    expected = InputXGradient(model).attribute(_x(images), target=targets)
    torch.testing.assert_close(METHODS.get("gradient_x_input")(model, images, targets), expected, **CLOSE)


@pytest.mark.parametrize("baseline", [0.0, 0.5])
def test_integrated_gradients(model, images, targets, baseline):
    expected = IntegratedGradients(model).attribute(_x(images), baselines=baseline, target=targets, n_steps=8,
                                                    method="gausslegendre")
    ours = METHODS.get("integrated_gradients")(model, images, targets, steps=8, baseline=baseline, batch_size=5)
    torch.testing.assert_close(ours, expected, **CLOSE)


@pytest.mark.parametrize("kind", ["cnn", "cnn_bottleneck_wrapped"])
@pytest.mark.parametrize("name,reference", [("guided_backprop", GuidedBackprop), ("deconvolution", Deconvolution)])
def test_modified_backward(images, targets, kind, name, reference):
    """captum's rules touch ReLU modules only, so compare on CNNs (the GELU case: test_engine.py)."""
    model = MODELS[kind]()
    expected = reference(model).attribute(_x(images), target=targets)
    torch.testing.assert_close(METHODS.get(name)(model, images, targets), expected, **CLOSE)


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_gradcam_matches_captum(images, targets, layer):
    for model in (MODELS["cnn"](), MODELS["cnn_bottleneck_wrapped"]()):
        module = model.get_submodule(resolve_layer(model, layer))
        cam = LayerGradCam(model, module).attribute(_x(images), target=targets, relu_attributions=True)
        expected = LayerAttribution.interpolate(cam, images.shape[2:], interpolate_mode="bilinear")
        ours = METHODS.get("gradcam")(model, images, targets, layer=layer)
        torch.testing.assert_close(ours, expected, **CLOSE)
        assert (ours > 0).any() and (ours == 0).any()  # the ReLU clips, so the test exercises it


def test_guided_gradcam_matches_captum(images, targets):
    model = MODELS["cnn"]()
    expected = GuidedGradCam(model, model.layer3).attribute(_x(images), target=targets, interpolate_mode="bilinear")
    ours = METHODS.get("guided_gradcam")(model, images, targets, layer="layer3")
    torch.testing.assert_close(ours, expected, **CLOSE)


@pytest.mark.parametrize("name", ["smoothgrad", "vargrad"])
def test_noise_methods_equal_moments_of_captum_gradients(model, images, targets, name):
    """Mean / variance over the same noisy copies, each explained by captum's Saliency."""
    sampler = Noise(size=5, sigma=0.2, seed=7)
    grads = torch.stack([
        Saliency(model).attribute(sampler.points(images, torch.tensor([s])).requires_grad_(True), target=targets,
                                  abs=False)
        for s in range(sampler.size)
    ])
    expected = grads.mean(0) if name == "smoothgrad" else grads.var(0, unbiased=False)
    ours = METHODS.get(name)(model, images, targets, samples=5, sigma=0.2, seed=7, batch_size=7)
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-6 if name == "smoothgrad" else 1e-8)


def test_noise_is_scaled_to_each_image_range(images):
    sampler = Noise(size=4000, sigma=0.1, seed=0)
    x = torch.stack([images[0, :, :4, :4], images[0, :, :4, :4] * 0.5])
    points = sampler.points(x, torch.arange(4000)).view(2, 4000, *x.shape[1:])
    noise = points - x[:, None]
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    torch.testing.assert_close(noise.std(dim=(1, 2, 3, 4)), 0.1 * spread, rtol=1e-2, atol=0)
    torch.testing.assert_close(noise[0] * spread[1] / spread[0], noise[1])  # the same draws for every image


def test_smoothgrad_without_noise_is_the_gradient(model, images, targets):
    gradient = METHODS.get("gradient")(model, images, targets)
    torch.testing.assert_close(METHODS.get("smoothgrad")(model, images, targets, samples=2, sigma=0.0), gradient)
    assert METHODS.get("vargrad")(model, images, targets, samples=2, sigma=0.0).abs().max() < 1e-12
