"""Smooth and efficient MPRT against Quantus 0.6 on the same model, inputs, randomisation and noise.

How Quantus is driven so that both sides compute the same numbers:
- explanations: Quantus's own ``quantus.explain`` with method "Gradient" (captum Saliency without abs,
  summed over channels); ours is salbench's gradient summed over channels: the same map to float rounding.
  (SmoothMPRT calls ``quantus.explain`` for its noisy inputs whatever ``explain_func`` says.)
- randomisation: Quantus's ``get_random_layer_generator`` itself; ours rebuilds the same fully randomised
  model (tested on its own below: equal weights, buffers included).
- noise: SmoothMPRT draws ``np.random.randn(*x.shape)`` once per noisy sample, batch and model from numpy's
  global generator. During its call we replace ``np.random.randn`` by a cycle over our ``samples - 1``
  standard-normal draws (float32, from the same seeded torch generator our function uses), so each model
  gets exactly our noise; one batch holds all images (batch_size = N), as the draws are per call.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from salbench.attribution import METHODS
from salbench.metrics import METRICS, MetricInputs, discrete_entropy, efficient_mprt, fully_randomized, smooth_mprt
from salbench.metrics.mprt import smooth_maps

quantus = pytest.importorskip("quantus")

N, SAMPLES = 5, 4


def tiny_models() -> dict[str, nn.Module]:
    from timm.models.resnet import BasicBlock, ResNet
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    cnn = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4, channels=(4, 8, 8, 8), stem_width=4).eval()
    for m in cnn.modules():  # trained-looking batch norms, so that resetting them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=4).eval()
    return {"cnn": cnn, "vit": vit}


MODELS = tiny_models()


def gradient_sum(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return METHODS.get("gradient")(model, images, targets).sum(1, keepdim=True)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(N, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3, 1])


def _draws(images: torch.Tensor, noise_seed: int) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(noise_seed)
    return [torch.randn(images.shape, generator=g).numpy() for _ in range(SAMPLES - 1)]


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_fully_randomized_is_quantus_last_random_layer_model(kind):
    model = MODELS[kind]
    *_, (_, reference) = quantus.helpers.model.pytorch_model.PyTorchModel(
        model, channel_first=True).get_random_layer_generator(order="bottom_up", seed=42)
    ours = fully_randomized(model, seed=42)
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in ours.state_dict().items())
    trained = model.state_dict()
    changed = [k for k, v in ours.state_dict().items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert len(changed) > len(trained) / 2  # (a ViT's cls_token and pos_embed have no reset_parameters)
    top_down = fully_randomized(model, seed=42, order="top_down").state_dict()
    assert all(torch.equal(v, top_down[k]) for k, v in ours.state_dict().items())  # each reset is seeded alike


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_smooth_mprt_equals_quantus(kind, monkeypatch):
    model, (x, y) = MODELS[kind], data()
    draws = itertools.cycle(_draws(x, noise_seed=7))
    metric = quantus.SmoothMPRT(nr_samples=SAMPLES, noise_magnitude=0.1, seed=42, layer_order="bottom_up",
                                return_last_correlation=True, skip_layers=True, disable_warnings=True)
    with monkeypatch.context() as patch:
        patch.setattr(np.random, "randn", lambda *shape: next(draws))
        reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                           explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"}, device="cpu",
                           batch_size=N)
    ours = smooth_mprt(model, gradient_sum, x, y, samples=SAMPLES, noise=0.1, seed=42, noise_seed=7)
    assert ours.shape == (N,) and not torch.isnan(ours).any()
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5, rtol=0)
    assert ours.abs().max() < 0.99  # the randomised model's maps differ: the comparison can fail


def test_smooth_maps_by_hand():
    """A linear model's gradient ignores the noise: the denoised map is the clean gradient (summed /samples
    times); a map equal to the input averages the noisy inputs: x + spread · mean of the draws / samples."""
    x, y = data()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    (smooth,) = smooth_maps(gradient_sum, [model], x, y, samples=SAMPLES, noise=0.1, noise_seed=7)
    torch.testing.assert_close(smooth, gradient_sum(model, x, y))
    identity, again = smooth_maps(lambda m, xs, t: xs, [model, model], x, y, samples=SAMPLES, noise=0.5, noise_seed=7)
    torch.testing.assert_close(again, identity, rtol=0, atol=0)  # the models share the draws
    spread = 0.5 * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    z = torch.stack([torch.from_numpy(d) for d in _draws(x, 7)]).sum(0)
    torch.testing.assert_close(identity, x + spread * z / SAMPLES)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_efficient_mprt_equals_quantus(kind):
    model, (x, y) = MODELS[kind], data()
    metric = quantus.EfficientMPRT(seed=42, layer_order="bottom_up", disable_warnings=True)
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                       explain_func=quantus.explain, explain_func_kwargs={"method": "Gradient"}, device="cpu",
                       batch_size=N)
    ours = efficient_mprt(model, gradient_sum, x, y, seed=42)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5, rtol=0)
    assert (ours != 0).all()


def test_discrete_entropy_equals_numpy_histogram_entropy():
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.randn(3, 1, 8, 8, generator=g), torch.full((1, 1, 8, 8), 2.0),
                      torch.randint(0, 3, (1, 1, 8, 8), generator=g).float(),  # values on bin edges
                      torch.rand(1, 1, 8, 8, generator=g) * 1e-2 + 1e3])  # a narrow range far from 0
    ours = discrete_entropy(maps, n_bins=7)
    expected = [stats.entropy(np.histogram(m.numpy(), bins=7)[0]) for m in maps]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)
    assert ours[3] == 0  # a constant map: one bin
    assert efficient_mprt(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)).eval(), lambda m, xs, t: xs[:, :1] * 0,
                          torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)).isnan().all()  # H = 0: undefined


def test_registered_metrics_on_the_controls():
    """A model-independent map (the edge control) is the same before and after randomisation: sMPRT = 1
    (fails), eMPRT = 0; a real method scores below 1 and its entropy changes."""
    model, (x, y) = MODELS["cnn"], data()
    predictions = model(x).argmax(1)

    def inputs(name: str) -> MetricInputs:
        explain = lambda m, xs, t: METHODS.get(name)(m, xs, t)
        return MetricInputs(model, x, y, predictions, explain(model, x, predictions), explain=explain)

    smooth, efficient = METRICS.get("smooth_mprt"), METRICS.get("efficient_mprt")
    (edge,) = smooth(inputs("edge"), noise_samples=3)
    assert torch.allclose(edge.values, torch.ones(N, dtype=edge.values.dtype)) and edge.statistic == "value"
    assert torch.allclose(efficient(inputs("edge"))[0].values.double(), torch.zeros(N, dtype=torch.float64))
    assert smooth(inputs("gradient"), noise_samples=3)[0].values.mean() < 0.99
    assert efficient(inputs("gradient"))[0].values.abs().max() > 1e-6
    with pytest.raises(ValueError, match="needs MetricInputs.explain"):
        smooth(MetricInputs(model, x, y, predictions, x), noise_samples=2)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_cached_maps_are_the_maps_the_metrics_compute(kind):
    """The attribute stage's maps (attribute_many, shared passes) equal the metrics' own recomputation (in
    channels-last layout) to float rounding, so reusing them changes no score beyond rounding."""
    from salbench.attribution import attribute_many
    from salbench.metrics.mprt import _explain

    model, (x, _) = MODELS[kind], data()
    predictions = model(x).argmax(1)
    names = ["gradient", "guided_backprop", "gradcam", "normgrad"]
    for name, cached in zip(names, attribute_many(model, x, predictions, [(n, {}) for n in names], batch_size=4)):
        ours = _explain(METHODS.get(name), model, x, predictions, 3)
        assert cached.abs().max() > 0
        torch.testing.assert_close(ours, cached, rtol=0, atol=1e-6 * cached.abs().max().item())


def test_registered_metrics_reuse_the_cached_maps_only_for_the_predictions():
    """With map_targets equal to the predictions the metrics take MetricInputs.maps as the trained model's
    maps (a wrong map changes the score; the right one gives the recomputed score); with other targets,
    or none, they recompute."""
    model, (x, y) = MODELS["cnn"], data()
    predictions = model(x).argmax(1)
    assert not torch.equal(y, predictions)
    explain = METHODS.get("gradient")
    right, wrong = explain(model, x, predictions), torch.rand(N, 3, 16, 16)

    def scores(name: str, maps: torch.Tensor, map_targets: torch.Tensor | None) -> torch.Tensor:
        inputs = MetricInputs(model, x, y, predictions, maps, explain=explain, map_targets=map_targets)
        return METRICS.get(name)(inputs, **({"noise_samples": 3} if name == "smooth_mprt" else {}))[0].values

    for name in ("smooth_mprt", "efficient_mprt"):
        recomputed = scores(name, wrong, None)
        torch.testing.assert_close(scores(name, wrong, y), recomputed, rtol=0, atol=0)
        torch.testing.assert_close(scores(name, right, predictions), recomputed, rtol=0, atol=1e-5)
        assert (scores(name, wrong, predictions) - recomputed).abs().max() > 1e-3


def test_smooth_maps_do_not_depend_on_the_batching():
    """Noisy samples go through the method several per call as batch_size allows: the same denoised maps
    for one image per call, one sample per call and all samples in one call; given clean maps are used."""
    model, (x, y) = MODELS["cnn"], data()
    maps = [smooth_maps(gradient_sum, [model], x, y, samples=SAMPLES, noise=0.1, noise_seed=7, batch_size=b)[0]
            for b in (1, N, N * SAMPLES)]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-5, atol=1e-7)
    clean = torch.zeros(N, 1, 16, 16)
    (shifted,) = smooth_maps(gradient_sum, [model], x, y, samples=SAMPLES, noise=0.1, noise_seed=7, clean=[clean])
    torch.testing.assert_close(shifted, maps[0] - gradient_sum(model, x, y) / SAMPLES, rtol=1e-5, atol=1e-7)
