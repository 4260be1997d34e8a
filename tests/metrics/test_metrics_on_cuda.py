"""The same numbers on CUDA as on the CPU (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from salbench.metrics import (
    SIMILARITIES,
    TRANSFORMS,
    class_sensitivity,
    cose,
    pixel_perturbation,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from salbench.metrics.transforms import sample_magnitudes

from metrics.metric_helpers import gradient, tiny_resnet

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def both(fn, *tensors, **kwargs):
    return fn(*tensors, **kwargs), fn(*(t.cuda() for t in tensors), **kwargs)


@pytest.mark.parametrize("metric", [relevance_mass_accuracy, relevance_rank_accuracy, pointing_game])
def test_localisation(metric, rng: torch.Generator) -> None:
    R = torch.randn(8, 3, 32, 32, generator=rng)
    masks = torch.rand(8, 32, 32, generator=rng) > 0.7
    cpu, cuda = both(metric, R, masks)
    torch.testing.assert_close(cuda.cpu(), cpu, equal_nan=True)


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_similarities(name: str, rng: torch.Generator) -> None:
    a, b = torch.randn(2, 4, 3, 32, 32, generator=rng)
    cpu, cuda = both(SIMILARITIES.get(name), a, b)
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_transforms(name: str, rng: torch.Generator) -> None:
    transform = TRANSFORMS.get(name)
    x = torch.rand(6, 3, 24, 24, generator=rng)
    m = sample_magnitudes(transform, 6, (24, 24), rng)
    torch.testing.assert_close(transform.apply(x.cuda(), m.cuda()).cpu(), transform.apply(x, m), atol=1e-5, rtol=0)


def test_model_metrics(rng: torch.Generator) -> None:
    model = tiny_resnet()
    x = torch.rand(4, 3, 32, 32, generator=rng)
    labels = model(x).argmax(1)
    R = gradient(model, x, labels)
    cpu = pixel_perturbation(model, x, R, labels, steps=5).aopc
    cuda = pixel_perturbation(model.cuda(), x.cuda(), R.cuda(), labels.cuda(), steps=5).aopc
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)
    model_cpu = tiny_resnet()
    torch.testing.assert_close(
        class_sensitivity(model, gradient, x.cuda()).cpu(), class_sensitivity(model_cpu, gradient, x), atol=1e-4, rtol=0
    )
    pairs = cose(model, gradient, x.cuda(), labels.cuda(), transforms=["hflip", "contrast"], seed=0)
    pairs_cpu = cose(model_cpu, gradient, x, labels, transforms=["hflip", "contrast"], seed=0)
    torch.testing.assert_close(pairs.ssim.cpu(), pairs_cpu.ssim, atol=1e-4, rtol=0)
