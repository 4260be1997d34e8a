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

Cost: the explanation passes. Both run them on channels-last images (the same maps to float rounding;
few-channel convolutions and their input gradients run several times faster on the CPU). Given the
trained model's maps of the clean images (the registered metrics take the cached maps when they explain
the predictions), sMPRT runs 2·samples − 1 passes and eMPRT one; Quantus runs 3·samples and 4.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from annotated_types import Ge
from torch import Tensor, nn

from ..config.declare import OneOf, declare
from .base import Explain, MetricInputs, Values, as_maps, explain_batched, metric, require_eval
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


def _explain(explain: Explain, model: nn.Module, images: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """:func:`explain_batched` on the images in channels-last memory layout: the same maps (to float rounding),
    with convolutions (and their input gradients) several times faster on the CPU for few channels."""
    return explain_batched(explain, model, images.contiguous(memory_format=torch.channels_last), targets, batch_size)


def smooth_maps(explain: Explain, models: Sequence[nn.Module], images: Tensor, targets: Tensor, samples: int,
                noise: float, noise_seed: int, batch_size: int = 64,
                clean: Sequence[Tensor | None] | None = None) -> list[Tensor]:
    """For each model, the mean map over ``samples - 1`` noisy copies of images N×C×H×W and the clean images
    (last), each map divided by ``samples`` as Quantus accumulates them -> one N×C'×H×W per model.

    ``clean``: per model, its maps of the clean images if known (None: computed). One draw of N×C×H×W per
    noisy sample, in order, shared by the models; the noisy copies go through ``explain`` as many per call
    as ``batch_size`` holds, so the draws in memory never exceed one call's.
    """
    if samples < 1 or noise < 0:
        raise ValueError(f"samples must be >= 1 and noise >= 0, got samples={samples}, noise={noise}")
    n = len(images)
    spread = noise * (images.amax(dim=(1, 2, 3), keepdim=True) - images.amin(dim=(1, 2, 3), keepdim=True))
    generator = torch.Generator().manual_seed(noise_seed)
    clean = [None] * len(models) if clean is None else clean
    totals = [(_explain(explain, m, images, targets, batch_size) if c is None else c) / samples
              for m, c in zip(models, clean)]
    per_call = max(1, batch_size // max(1, n))
    for s0 in range(0, samples - 1, per_call):
        k = min(per_call, samples - 1 - s0)
        z = torch.stack([torch.randn(images.shape, generator=generator) for _ in range(k)]).to(images)
        noisy, repeated = (images + z * spread).flatten(0, 1), targets.repeat(k)
        for i, m in enumerate(models):
            maps = _explain(explain, m, noisy, repeated, batch_size)
            totals[i] = totals[i] + (maps / samples).unflatten(0, (k, n)).sum(0)
    return totals


def smooth_mprt(model: nn.Module, explain: Explain, images: Tensor, targets: Tensor, *, samples: int = 50,
                noise: float = 0.1, seed: int = 42, noise_seed: int = 0, order: str = "bottom_up",
                abs: bool = True, batch_size: int = 64, maps: Tensor | None = None) -> Tensor:
    """Spearman correlation of the denoised (absolute) maps of ``model`` and its fully randomised copy
    on images N×C×H×W explaining ``targets`` N -> N (NaN where a map is constant). ``maps``: ``model``'s
    maps of the clean images explaining ``targets`` (N×C'×H×W), if known, spare one pass of ``model``."""
    require_eval(model)
    denoised = smooth_maps(explain, [model, fully_randomized(model, seed, order)], images, targets, samples, noise,
                           noise_seed, batch_size, [maps, None])
    if abs:
        denoised = [m.abs() for m in denoised]
    return rank_correlation(*denoised)


def discrete_entropy(maps: Tensor, n_bins: int = 100) -> Tensor:
    """Entropy (nats) of the ``n_bins``-bin histogram of each map's values (N×... -> N, float64), with
    numpy's bins: equal width in the map's dtype between its minimum and maximum (±0.5 if they are equal),
    the last bin closed; each value's bin as numpy finds it (scaled estimate, then corrected by ±1 against
    the edges)."""
    x = maps.flatten(1)
    n = len(x)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    flat = lo == hi
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    # numpy.linspace in the values' dtype: k·((hi − lo)/n) + lo, the last edge exactly hi.
    inner = torch.arange(1, n_bins, dtype=x.dtype, device=x.device) * ((hi - lo) / n_bins) + lo
    edges = torch.cat([lo, inner, hi], 1)
    index = ((x - lo) * (n_bins / (hi - lo))).long().clamp_(0, n_bins - 1)
    index -= (x < edges.gather(1, index)).long()
    index += ((x >= edges.gather(1, index + 1)) & (index != n_bins - 1)).long()
    offsets = torch.arange(n, device=x.device)[:, None] * n_bins
    counts = torch.bincount((index + offsets).flatten(), minlength=n * n_bins).view(n, n_bins).double()
    p = counts / counts.sum(1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(1)


def efficient_mprt(model: nn.Module, explain: Explain, images: Tensor, targets: Tensor, *, n_bins: int = 100,
                   seed: int = 42, order: str = "bottom_up", abs: bool = False, maps: Tensor | None = None,
                   batch_size: int = 64) -> Tensor:
    """Relative rise in discrete entropy from the maps of ``model`` (``maps``, computed if None) to those of
    its fully randomised copy, on images N×C×H×W explaining ``targets`` N -> N (NaN where H = 0)."""
    require_eval(model)
    original = _explain(explain, model, images, targets, batch_size) if maps is None else maps
    randomized = _explain(explain, fully_randomized(model, seed, order), images, targets, batch_size)
    if abs:
        original, randomized = original.abs(), randomized.abs()
    h, h_random = discrete_entropy(original, n_bins), discrete_entropy(randomized, n_bins)
    return torch.where(h > 0, (h_random - h) / h, torch.nan)


def _pooled(explain: Explain, pooling: str | None) -> Explain:
    return explain if pooling is None else lambda m, x, t: pool_channels(explain(m, x, t), pooling)[:, None]


def cached_maps(inputs: MetricInputs, pooling: str | None) -> Tensor | None:
    """The trained model's maps of ``inputs.images`` explaining the predictions, pooled as the metric pools
    its maps: ``inputs.maps`` when they explain the predictions (``inputs.map_targets`` equal to them), else
    None (recompute them)."""
    targets = inputs.map_targets
    if targets is None or not torch.equal(targets.to(inputs.predictions.device), inputs.predictions):
        return None
    maps = as_maps(inputs.maps)
    return maps if pooling is None else pool_channels(maps, pooling)[:, None]


@metric("smooth_mprt", needs=("explain",), scores="all")
@declare(noise_samples=Ge(1), noise=Ge(0), order=OneOf(ORDERS, "order"), pooling=OneOf(POOLINGS))
def smooth_mprt_metric(inputs: MetricInputs, *, noise_samples: int = 50, noise: float = 0.1,
                       randomization_seed: int = 42, order: str = "bottom_up", abs: bool = True,
                       pooling: str | None = "sum", seed: int = 0) -> list[Values]:
    """sMPRT per sample (all samples), explaining the predictions, with ``noise_samples`` maps per denoised
    map (Quantus's ``nr_samples``); ``pooling`` pools the maps' channels first (``sum``: as quantus.explain
    does; None: every channel). The trained model's clean-image maps are the cached ones when they explain
    the predictions (:func:`cached_maps`)."""
    return [Values(smooth_mprt(inputs.model, _pooled(inputs.explain, pooling), inputs.images, inputs.predictions,
                               samples=noise_samples, noise=noise, seed=randomization_seed, noise_seed=seed,
                               order=order, abs=abs, batch_size=inputs.batch_size,
                               maps=cached_maps(inputs, pooling)))]


@metric("efficient_mprt", needs=("explain",), scores="all")
@declare(n_bins=Ge(2), order=OneOf(ORDERS, "order"), pooling=OneOf(POOLINGS))
def efficient_mprt_metric(inputs: MetricInputs, *, n_bins: int = 100, randomization_seed: int = 42,
                          order: str = "bottom_up", abs: bool = False, pooling: str | None = "sum") -> list[Values]:
    """eMPRT per sample (all samples), explaining the predictions; ``pooling`` as in sMPRT; the trained
    model's maps are the cached ones when they explain the predictions (:func:`cached_maps`)."""
    return [Values(efficient_mprt(inputs.model, _pooled(inputs.explain, pooling), inputs.images, inputs.predictions,
                                  n_bins=n_bins, seed=randomization_seed, order=order, abs=abs,
                                  maps=cached_maps(inputs, pooling), batch_size=inputs.batch_size))]
