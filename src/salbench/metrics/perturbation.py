"""Pixel perturbation (Samek et al. 2017; used by CLEVR-XAI): replace pixels or patches in order of
relevance, most relevant first (MoRF) or least relevant first (LeRF), and follow the class score.

AOPC = mean over the curve of (score before perturbation - score after k steps), the unperturbed
point included, so a curve of ``steps`` points averages ``steps`` terms, the first being 0.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from ..config.declare import OneOf, declare
from .base import MetricInputs, Values, as_maps, batches, metric, require_eval, undefined_where_nonfinite
from .pooling import POOLINGS, pool_channels

ORDERS = ("morf", "lerf")
SCORES = ("probability", "logit")


def _blur(x: Tensor) -> Tensor:
    """Gaussian blur with sigma = 1/16 of the image side (the scene's layout kept, its objects smeared out)."""
    sigma = max(x.shape[-1], x.shape[-2]) / 16
    k = 2 * round(2 * sigma) + 1
    pad = F.pad(x, (k // 2,) * 4, mode="replicate")
    g = torch.exp(-0.5 * ((torch.arange(k, dtype=x.dtype, device=x.device) - k // 2) / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    pad = F.conv2d(pad, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(pad, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


BASELINES: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": lambda x: x.mean(dim=(2, 3), keepdim=True),  # each image's mean colour per channel
    "blur": _blur,
}
"""Named replacement values, functions of the images N×C×H×W (a number is a constant replacement)."""


def replacement(x: Tensor, baseline: float | str | Tensor) -> Tensor:
    """The N×C×H×W values that replace removed pixels of ``x``: a number, a named baseline or a broadcastable tensor."""
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; known: a number or one of {', '.join(BASELINES)}")
        return BASELINES[baseline](x).expand_as(x)
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)


class PerturbationCurves(NamedTuple):
    fractions: Tensor  # steps: share of units (pixels or patches) replaced at each point
    scores: Tensor  # N×steps: score of the target class
    correct: Tensor  # N×steps bool: the target class is still the model's prediction
    aopc: Tensor  # N: area over the perturbation curve


def removal_ranks(relevance: Tensor, order: str, generator: torch.Generator) -> Tensor:
    """Rank (0 = replaced first) of each unit of relevance N×U; ties broken by a seeded random permutation."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")
    n, units = relevance.shape
    shuffle = torch.rand(n, units, generator=generator).argsort(1).to(relevance.device)
    key = relevance.gather(1, shuffle)
    sequence = shuffle.gather(1, key.argsort(dim=1, descending=order == "morf", stable=True))
    return torch.empty_like(sequence).scatter_(1, sequence, torch.arange(units, device=relevance.device).expand(n, -1))


def pixel_perturbation(
    model: nn.Module,
    x: Tensor,
    R: Tensor,
    targets: Tensor,
    order: str = "morf",
    steps: int = 21,
    baseline: float | str | Tensor = "mean",
    patch: int = 1,
    pooling: str = "sum_abs",
    score: str = "probability",
    seed: int = 0,
    batch_size: int = 64,
) -> PerturbationCurves:
    """Perturbation curves of images x (N×C×H×W) ordered by the pooled relevance R (N×C'×H×W).

    ``steps`` points, evenly spaced from 0 to all units replaced; units are ``patch``×``patch``
    squares ranked by their summed pooled relevance. Replaced pixels take ``baseline``: a number, a
    tensor broadcastable to x, or a name in :data:`BASELINES` ("mean": each image's mean colour,
    "blur": the blurred image). Black (0.0) is out of distribution for most models and can flatten
    every curve. ``score``: softmax probability or logit of ``targets``. The AOPC is NaN (undefined) for a
    map with a NaN or ±inf entry.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {', '.join(SCORES)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (the unperturbed point and at least one more), got {steps}")
    require_eval(model)
    R = as_maps(R, "R")
    n, _, height, width = x.shape
    if R.shape[0] != n or R.shape[2:] != x.shape[2:]:
        raise ValueError(f"R must hold one H×W map per image, got {tuple(R.shape)} for images {tuple(x.shape)}")
    if height % patch or width % patch:
        raise ValueError(f"patch {patch} must divide the image size {height}×{width}")
    relevance = F.avg_pool2d(pool_channels(R, pooling)[:, None], patch).flatten(1)
    ranks = removal_ranks(relevance, order, torch.Generator().manual_seed(seed))
    fractions = torch.linspace(0, 1, steps, dtype=torch.float64)
    counts = (fractions * relevance.shape[1]).round().long().tolist()
    baseline = replacement(x, baseline)
    scores, correct = [], []
    with torch.no_grad():
        for count in counts:
            removed = (ranks < count).reshape(n, 1, height // patch, width // patch)
            removed = removed.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
            out = torch.cat([model(torch.where(removed[s], baseline[s], x[s])) for s in batches(n, batch_size)]
                            or [model(x)])  # no images: 0×K
            values = out.softmax(1) if score == "probability" else out
            scores.append(values.gather(1, targets[:, None])[:, 0])
            correct.append(out.argmax(1) == targets)
    curve = torch.stack(scores, 1)
    aopc = undefined_where_nonfinite((curve[:, :1] - curve).mean(1), R)  # a broken map gives no order
    return PerturbationCurves(fractions, curve, torch.stack(correct, 1), aopc)


@metric("aopc", needs=("maps",), scores="correct")
@declare(order=OneOf(ORDERS, "order"), steps=Ge(2), baseline=OneOf(BASELINES, "baseline"), patch=Ge(1),
         pooling=OneOf(POOLINGS), score=OneOf(SCORES, "score"))
def aopc_metric(
    inputs: MetricInputs,
    *,
    order: str = "morf",
    steps: int = 21,
    baseline: float | str = "mean",
    patch: int = 1,
    pooling: str = "sum_abs",
    score: str = "probability",
    seed: int = 0,
) -> list[Values]:
    """AOPC per sample of the ``order`` curve (variant ``order=...``) and the curve itself: metric
    ``perturbation_curve``, statistic ``score``, one step per fraction replaced. The maps explain the
    predictions; the correctly classified samples are scored."""
    curves = pixel_perturbation(
        inputs.model,
        inputs.images,
        inputs.maps,
        inputs.predictions,
        order,
        steps,
        baseline,
        patch,
        pooling,
        score,
        seed,
        inputs.batch_size,
    )
    variant = {"order": order}
    curve = [
        Values(curves.scores[:, k], "score", variant, round(fraction, 6), metric="perturbation_curve")
        for k, fraction in enumerate(curves.fractions.tolist())
    ]
    return [Values(curves.aopc, variant=variant), *curve]
