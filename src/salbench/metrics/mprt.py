"""Smooth and efficient model parameter randomisation tests (Hedström et al. 2023), as Quantus 0.6.

Both compare a model's explanations with those of its fully randomised copy, built as Quantus's
``get_random_layer_generator`` builds it: on a deep copy, every module with ``reset_parameters``
(convolutions, linear layers, norms: BatchNorm running statistics included) is reset in
``named_modules`` order ("bottom_up"; reversed for "top_down"), each right after
``torch.manual_seed(seed + 1)``. Every explanation explains the given ``targets`` (the trained
model's classes, Quantus's ``y_batch``) for both models.

- :func:`smooth_mprt` (``quantus.SmoothMPRT`` with ``return_last_correlation=True``): each map is
  denoised as the mean of the maps of ``samples`` inputs, ``samples - 1`` of them
  x + noise·(max x − min x)·z with z ~ N(0, 1) and the last the clean input; the score is the
  Spearman correlation of the absolute denoised maps of the trained and the randomised model (lower
  is better). Quantus's default normalisation divides a batch by one positive number, which the
  rank correlation ignores. The draws z are taken from a CPU generator seeded with ``noise_seed``
  and shared by the two models (common random numbers, where Quantus draws fresh ones from numpy's
  global generator).
- :func:`efficient_mprt` (``quantus.EfficientMPRT``): the relative rise in discrete entropy (an
  ``n_bins``-bin histogram of each map's values between its minimum and maximum, as numpy's
  histogram bins them) from the trained model's map to the randomised model's, (H_rand − H)/H
  (higher is better); NaN (undefined) where the trained model's map is constant (H = 0).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from annotated_types import Ge

from ..config.declare import OneOf, declare
from .base import Explain, MetricInputs, Values, explain_batched, metric, require_eval
from .pooling import POOLINGS, pool_channels
from .rank import rank_correlation

ORDERS = ("bottom_up", "top_down")


def fully_randomized(model: nn.Module, seed: int = 42, order: str = "bottom_up") -> nn.Module:
    """A deep copy of ``model`` with every module that has ``reset_parameters`` reset, in Quantus's order
    and seeding (module docstring); the global RNG state is restored."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS} (cascading to the full randomisation), got {order!r}")
    randomized = copy.deepcopy(model)
    modules = [m for _, m in randomized.named_modules() if hasattr(m, "reset_parameters")]
    if not modules:
        raise ValueError(f"{type(model).__name__} has no module with reset_parameters to randomise")
    cuda = sorted({p.device.index or 0 for p in randomized.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        for module in modules if order == "bottom_up" else modules[::-1]:
            torch.manual_seed(seed + 1)
            module.reset_parameters()
    return randomized


def smooth_maps(explain: Explain, model: nn.Module, images: Tensor, targets: Tensor, samples: int, noise: float,
                noise_seed: int, batch_size: int = 64) -> Tensor:
    """Mean map over ``samples - 1`` noisy copies of images N×C×H×W and the clean images (last), each map
    added as map / samples in that order, as Quantus accumulates them -> N×C'×H×W."""
    if samples < 1 or noise < 0:
        raise ValueError(f"samples must be >= 1 and noise >= 0, got samples={samples}, noise={noise}")
    spread = noise * (images.amax(dim=(1, 2, 3), keepdim=True) - images.amin(dim=(1, 2, 3), keepdim=True))
    generator = torch.Generator().manual_seed(noise_seed)
    total = None
    for s in range(samples):
        if s < samples - 1:
            z = torch.randn(images.shape, generator=generator).to(images)
            x = images + z * spread
        else:
            x = images
        m = explain_batched(explain, model, x, targets, batch_size) / samples
        total = m if total is None else total + m
    return total


def smooth_mprt(model: nn.Module, explain: Explain, images: Tensor, targets: Tensor, *, samples: int = 50,
                noise: float = 0.1, seed: int = 42, noise_seed: int = 0, order: str = "bottom_up",
                abs: bool = True, batch_size: int = 64) -> Tensor:
    """Spearman correlation of the denoised (absolute) maps of ``model`` and its fully randomised copy
    on images N×C×H×W explaining ``targets`` N -> N (NaN where a map is constant)."""
    require_eval(model)
    maps = [smooth_maps(explain, m, images, targets, samples, noise, noise_seed, batch_size)
            for m in (model, fully_randomized(model, seed, order))]
    if abs:
        maps = [m.abs() for m in maps]
    return rank_correlation(*maps)


def discrete_entropy(maps: Tensor, n_bins: int = 100) -> Tensor:
    """Entropy (nats) of the ``n_bins``-bin histogram of each map's values (N×... -> N, float64), with
    numpy's bins: equal width in the map's dtype between its minimum and maximum (±0.5 if they are equal),
    the last bin closed."""
    x = maps.flatten(1)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    flat = lo == hi
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    # numpy.linspace in the values' dtype: k·((hi − lo)/n) + lo, the last edge exactly hi.
    inner = torch.arange(1, n_bins, dtype=x.dtype, device=x.device) * ((hi - lo) / n_bins) + lo
    index = torch.searchsorted(inner.contiguous(), x.contiguous(), right=True)
    counts = torch.zeros(len(x), n_bins, dtype=torch.float64, device=x.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    p = counts / counts.sum(1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(1)


def efficient_mprt(model: nn.Module, explain: Explain, images: Tensor, targets: Tensor, *, n_bins: int = 100,
                   seed: int = 42, order: str = "bottom_up", abs: bool = False, maps: Tensor | None = None,
                   batch_size: int = 64) -> Tensor:
    """Relative rise in discrete entropy from the maps of ``model`` (``maps``, computed if None) to those of
    its fully randomised copy, on images N×C×H×W explaining ``targets`` N -> N (NaN where H = 0)."""
    require_eval(model)
    original = explain_batched(explain, model, images, targets, batch_size) if maps is None else maps
    randomized = explain_batched(explain, fully_randomized(model, seed, order), images, targets, batch_size)
    if abs:
        original, randomized = original.abs(), randomized.abs()
    h, h_random = discrete_entropy(original, n_bins), discrete_entropy(randomized, n_bins)
    return torch.where(h > 0, (h_random - h) / h, torch.nan)


def _pooled(explain: Explain, pooling: str | None) -> Explain:
    return explain if pooling is None else lambda m, x, t: pool_channels(explain(m, x, t), pooling)[:, None]


ORDERS = ("bottom_up", "top_down")


@metric("smooth_mprt", needs=("explain",), scores="all")
@declare(noise_samples=Ge(1), noise=Ge(0), order=OneOf(ORDERS, "order"), pooling=OneOf(POOLINGS))
def smooth_mprt_metric(inputs: MetricInputs, *, noise_samples: int = 50, noise: float = 0.1,
                       randomization_seed: int = 42, order: str = "bottom_up", abs: bool = True,
                       pooling: str | None = "sum", seed: int = 0) -> list[Values]:
    """sMPRT per sample (all samples), explaining the predictions, with ``noise_samples`` maps per denoised
    map (Quantus's ``nr_samples``); ``pooling`` pools the maps' channels first (``sum``: as quantus.explain
    does; None: every channel)."""
    return [Values(smooth_mprt(inputs.model, _pooled(inputs.explain, pooling), inputs.images, inputs.predictions,
                               samples=noise_samples, noise=noise, seed=randomization_seed, noise_seed=seed,
                               order=order, abs=abs, batch_size=inputs.batch_size))]


@metric("efficient_mprt", needs=("explain",), scores="all")
@declare(n_bins=Ge(2), order=OneOf(ORDERS, "order"), pooling=OneOf(POOLINGS))
def efficient_mprt_metric(inputs: MetricInputs, *, n_bins: int = 100, randomization_seed: int = 42,
                          order: str = "bottom_up", abs: bool = False, pooling: str | None = "sum") -> list[Values]:
    """eMPRT per sample (all samples), explaining the predictions; ``pooling`` as in sMPRT."""
    return [Values(efficient_mprt(inputs.model, _pooled(inputs.explain, pooling), inputs.images, inputs.predictions,
                                  n_bins=n_bins, seed=randomization_seed, order=order, abs=abs,
                                  batch_size=inputs.batch_size))]
