"""Pixel perturbation: Quantus's PixelFlipping on identical inputs, and a linear model whose score
drop is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from salbench.metrics import pixel_perturbation

from metrics.metric_helpers import tiny_cnn


def test_morf_curve_matches_quantus_pixel_flipping(quantus, rng: torch.Generator) -> None:
    # Quantus flips features of the 3-channel broadcast map and needs features_in_step to divide H·W:
    # 12 features = the 3 channels of 4 pixels per step on 6×6 images.
    n, size, per_step = 6, 6, 4
    model = tiny_cnn(size=size)
    x = torch.rand(n, 3, size, size, generator=rng)
    R = torch.randn(n, 1, size, size, generator=rng)  # no ties: Quantus's argsort and ours agree
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    reference = quantus.PixelFlipping(
        features_in_step=3 * per_step, normalise=False, perturb_baseline=0.0, disable_warnings=True
    )(model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=R.numpy(), device="cpu", softmax=True)
    curves = pixel_perturbation(model, x, R, targets, "morf", steps=size * size // per_step + 1, baseline=0.0,
                                pooling="sum", batch_size=4)
    assert curves.scores.shape == (n, 10)
    np.testing.assert_allclose(curves.scores[:, 1:].numpy(), np.asarray(reference), atol=1e-6)
    np.testing.assert_allclose(
        curves.scores[:, 0].numpy(), model(x).softmax(1)[range(n), targets].detach().numpy(), atol=1e-6
    )


@pytest.mark.parametrize("patch", [1, 2])
def test_linear_model_drops_by_the_removed_contributions(patch: int, rng: torch.Generator) -> None:
    """For logit = w·x + b and baseline 0, removing pixel p lowers the logit by R_p = Σ_c w_cp x_cp."""
    n, size, steps = 3, 6, 10
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2)).eval()
    x = torch.rand(n, 3, size, size, generator=rng, dtype=torch.float64)
    model = model.double()
    targets = torch.tensor([0, 1, 1])
    R = x * model[1].weight[targets].detach().reshape(n, 3, size, size)
    for order in ("morf", "lerf"):
        curves = pixel_perturbation(model, x, R, targets, order, steps=steps, baseline=0.0, patch=patch, pooling="sum",
                                    score="logit")
        units = torch.nn.functional.avg_pool2d(R.sum(1, keepdim=True), patch).flatten(1) * patch**2
        ordered = units.sort(1, descending=order == "morf").values
        removed = torch.cumsum(torch.cat([torch.zeros(n, 1, dtype=x.dtype), ordered], 1), 1)
        counts = (torch.linspace(0, 1, steps, dtype=torch.float64) * units.shape[1]).round().long()
        drop = removed[:, counts]
        np.testing.assert_allclose((curves.scores[:, :1] - curves.scores).numpy(), drop.numpy(), atol=1e-10)
        np.testing.assert_allclose(curves.aopc.numpy(), drop.mean(1).numpy(), atol=1e-10)
    kw = {"steps": steps, "baseline": 0.0, "patch": patch, "pooling": "sum", "score": "logit"}
    morf = pixel_perturbation(model, x, R, targets, "morf", **kw).aopc
    lerf = pixel_perturbation(model, x, R, targets, "lerf", **kw).aopc
    assert (morf > lerf).all()


def test_ties_are_broken_by_the_seed(rng: torch.Generator) -> None:
    model = tiny_cnn(size=8)
    x = torch.rand(2, 3, 8, 8, generator=rng)
    flat = torch.zeros(2, 1, 8, 8)
    targets = torch.tensor([0, 1])
    a, b = (pixel_perturbation(model, x, flat, targets, steps=5, seed=s).scores for s in (0, 0))
    c = pixel_perturbation(model, x, flat, targets, steps=5, seed=1).scores
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, -1], c[:, -1])  # all pixels replaced: order no longer matters


def test_baseline_tensor_and_correct_curve(rng: torch.Generator) -> None:
    model = tiny_cnn(size=8)
    x = torch.rand(2, 3, 8, 8, generator=rng)
    targets = model(x).argmax(1)
    curves = pixel_perturbation(model, x, torch.randn(2, 3, 8, 8, generator=rng), targets, steps=3, baseline=x)
    assert torch.allclose(curves.scores, curves.scores[:, :1].expand(-1, 3))  # replacing x by x changes nothing
    assert curves.correct.all() and curves.aopc.abs().max() < 1e-6


class Recorder(nn.Module):
    """Records its inputs; logits = per-channel means (so every image gives a valid score)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x.mean(dim=(2, 3))


@pytest.mark.parametrize("baseline", ["mean", "blur"])
def test_named_baselines_replace_with_the_image_statistic(baseline: str, rng: torch.Generator) -> None:
    x = torch.rand(2, 3, 16, 16, generator=rng, dtype=torch.float64)
    model = Recorder().eval()
    pixel_perturbation(model, x, torch.randn(2, 1, 16, 16, generator=rng), torch.tensor([0, 2]), steps=2,
                       baseline=baseline)
    everything_replaced = model.seen[-1]
    if baseline == "mean":
        assert torch.allclose(everything_replaced, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    else:  # a normalised blur: constant images stay constant, the colour mean is kept up to the border
        assert everything_replaced.std(dim=(2, 3)).max() < x.std(dim=(2, 3)).min() / 2
        flat = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
        model.seen.clear()
        pixel_perturbation(model, flat, flat[:, :1], torch.tensor([0]), steps=2, baseline="blur")
        assert torch.allclose(model.seen[-1], flat)


def test_bad_arguments_name_the_fix() -> None:
    model, x, R, t = (
        tiny_cnn(size=8),
        torch.zeros(1, 3, 8, 8),
        torch.zeros(1, 1, 8, 8),
        torch.zeros(1, dtype=torch.long),
    )
    with pytest.raises(ValueError, match="known: a number or one of mean, blur"):
        pixel_perturbation(model, x, R, t, baseline="zeros")
    with pytest.raises(ValueError, match="known: morf, lerf"):
        pixel_perturbation(model, x, R, t, "random")
    with pytest.raises(ValueError, match="patch 3 must divide"):
        pixel_perturbation(model, x, R, t, patch=3)
    with pytest.raises(ValueError, match="call model.eval()"):
        pixel_perturbation(model.train(), x, R, t)
