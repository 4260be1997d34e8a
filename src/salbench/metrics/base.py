"""Shared pieces of the metrics: the registries, the inputs and outputs of a registered metric, shape
checks and batched model calls that keep memory bounded by ``batch_size``.

A registered metric (:func:`metric`) declares what it needs from :class:`MetricInputs` and which samples
it scores, and returns per-sample :class:`Values` (and :class:`Combined` statistics of them); the
evaluate runner (salbench.evaluate) bootstraps them into rows of the results table (salbench.results).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..registry import Registry

Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""A saliency method: ``explain(model, images N×C×H×W, targets N) -> maps N×C'×H×W``."""

Summary = dict[str, float]
"""``{"mean", "ci_low", "ci_high", "n", "n_undefined"}`` from :func:`salbench.metrics.summary`."""

Similarity = Callable[[Tensor, Tensor], Tensor]
"""Similarity of two batches of maps, N×C×H×W (or N×H×W) each -> N."""

SIMILARITIES: Registry[Similarity] = Registry("similarity")


@dataclass(frozen=True)
class MetricInputs:
    """What a registered metric may need, for one model and one saliency method.

    ``images`` are N×C×H×W in [0, 1] and ``model`` takes them as they are (normalisation
    wrapped inside it); ``maps`` (N×C'×H×W) explain ``predictions``; ``masks`` are the GT
    masks, N×H×W bool. ``model_changes`` are other models (a random init, training
    checkpoints) for COSE's sensitivity pool. ``map_targets`` (N), if known, are the classes
    ``maps`` explain (the attribute stage may explain true labels): a metric that reuses the
    model's maps of the predictions checks them.
    """

    model: nn.Module
    images: Tensor
    labels: Tensor
    predictions: Tensor
    maps: Tensor
    masks: Tensor | None = None
    explain: Explain | None = None
    random_label_model: nn.Module | None = None
    model_changes: Mapping[str, nn.Module] = field(default_factory=dict)
    batch_size: int = 64
    map_targets: Tensor | None = None

    @property
    def correct(self) -> Tensor:
        """N bool: the model classifies the sample correctly."""
        return self.predictions == self.labels

    def need(self, metric: str, *names: str) -> None:
        """Raise naming the missing field if any of ``names`` is unset."""
        for name in names:
            if getattr(self, name) is None:
                raise ValueError(f"metric {metric!r} needs MetricInputs.{name}; pass it when building the inputs")


NEEDS = ("maps", "masks", "explain", "random_label_model", "model_changes")
"""What a metric may declare it needs beyond the model, images, labels and predictions."""
SCORES = ("correct", "all")
"""Which samples a metric scores: the correctly classified ones (the papers' GT metrics) or all."""


@dataclass(frozen=True)
class Values:
    """Per-sample values of one quantity of a metric; the runner averages them with a bootstrap CI.

    ``values`` V (NaN = undefined); ``sample`` V long: the sample each value belongs to (None: value i
    is sample i), so that the runner keeps only the samples the metric scores. ``statistic``,
    ``variant`` (settings added to the spec's), ``step`` and ``step_label`` place it in the results
    table; ``metric`` overrides the row's metric name (e.g. ``perturbation_curve`` beside ``aopc``).
    """

    values: Tensor
    statistic: str = "value"
    variant: Mapping[str, str] = field(default_factory=dict)
    step: float = math.nan
    step_label: str = ""
    metric: str | None = None
    sample: Tensor | None = None


@dataclass(frozen=True)
class Combined:
    """A statistic of the means of independent :class:`Values` (e.g. COSE = √(C·S)): ``combine`` maps
    their means (float64 tensors of equal shape: point estimates or bootstrap replicates) to its value;
    n and n_undefined add up over the parts, and it is undefined when any part has n = 0."""

    parts: Sequence[Values]
    combine: Callable[..., Tensor]
    statistic: str
    variant: Mapping[str, str] = field(default_factory=dict)


Output = Values | Combined


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(inputs, **params) -> [Values | Combined]`` with its declarations.

    ``needs``: fields of :class:`MetricInputs` it cannot do without (checked before the call);
    ``scores``: "correct" or "all" samples; ``variant_params``: params always named in the rows'
    variant (e.g. the channel pooling of the localisation metrics).
    """

    name: str
    fn: Callable[..., list[Output]]
    needs: tuple[str, ...] = ()
    scores: str = "all"
    variant_params: tuple[str, ...] = ()

    def __call__(self, inputs: MetricInputs, **params: object) -> list[Output]:
        inputs.need(self.name, *self.needs)
        return self.fn(inputs, **params)

    def scored(self, inputs: MetricInputs) -> Tensor:
        """N bool: the samples this metric scores."""
        return inputs.correct if self.scores == "correct" else torch.ones_like(inputs.labels, dtype=torch.bool)


METRICS: Registry[Metric] = Registry("metric")


def metric(
    name: str, *, needs: Sequence[str] = (), scores: str = "all", variant_params: Sequence[str] = ()
) -> Callable[[Callable[..., list[Output]]], Metric]:
    """Register ``fn(inputs, **params) -> [Values | Combined]`` as metric ``name`` (see :class:`Metric`)."""
    unknown = [n for n in needs if n not in NEEDS]
    if unknown or scores not in SCORES:
        raise ValueError(f"metric {name!r}: needs must be among {NEEDS} and scores one of {SCORES}")

    def decorator(fn: Callable[..., list[Output]]) -> Metric:
        return METRICS.register(name)(Metric(name, fn, tuple(needs), scores, tuple(variant_params)))

    return decorator


def as_maps(R: Tensor, name: str = "maps") -> Tensor:
    """Return ``R`` as N×C×H×W, accepting N×H×W as a single channel."""
    if not isinstance(R, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.dim() == 3:
        return R.unsqueeze(1)
    if R.dim() != 4:
        raise ValueError(f"{name} must be N×C×H×W (or N×H×W), got shape {tuple(R.shape)}")
    return R


def undefined_where_nonfinite(values: Tensor, *maps: Tensor) -> Tensor:
    """``values`` (N) set to NaN (undefined) where any of ``maps`` (N×...) holds a NaN or ±inf entry, so that
    a broken map is counted as undefined instead of scored from a meaningless order."""
    bad = torch.zeros(len(values), dtype=torch.bool, device=values.device)
    for m in maps:
        bad |= ~torch.isfinite(m.flatten(1) if m.dim() > 1 else m[:, None]).all(1)
    return values.masked_fill(bad, torch.nan)


def check_masks(M: Tensor, maps: Tensor) -> Tensor:
    """Check that ``M`` is an N×H×W bool mask matching N×C×H×W ``maps``; return it."""
    if not isinstance(M, Tensor) or M.dtype != torch.bool:
        raise TypeError("masks must be a bool torch.Tensor (use M.bool())")
    expected = (maps.shape[0], *maps.shape[2:])
    if tuple(M.shape) != expected:
        raise ValueError(f"masks must be N×H×W = {expected} to match the maps, got {tuple(M.shape)}")
    return M


def check_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Both as N×C×H×W with equal N, H, W (channels may differ)."""
    a, b = as_maps(a, "a"), as_maps(b, "b")
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"a and b must hold the same number of equally sized maps, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a, b


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


# Map-only metrics go through a batch in chunks of about this many input elements: intermediates
# then stay cache-sized on a CPU (2-3x faster than the whole batch at once), and a chunk is still
# a large kernel on a GPU.
CHUNK_ELEMENTS = 1 << 18


def in_chunks(fn: Callable[..., Tensor], *batched: Tensor) -> Tensor:
    """``fn`` on consecutive chunks of about CHUNK_ELEMENTS elements of the ``batched`` tensors
    (equal first dimension, the first one counted), results concatenated."""
    n = len(batched[0])
    if n == 0:
        return fn(*batched)
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, batched[0][0].numel()))
    return torch.cat([fn(*(t[s] for t in batched)) for s in batches(n, per_chunk)])


def require_eval(model: nn.Module) -> None:
    """Metrics run models in inference mode only; training mode would update BatchNorm stats."""
    if model.training:
        raise ValueError("the model is in training mode; call model.eval() before computing metrics")


@torch.no_grad()
def logits(model: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Model outputs N×K, computed ``batch_size`` images at a time (0×K for no images)."""
    require_eval(model)
    return torch.cat([model(images[s]) for s in batches(len(images), batch_size)] or [model(images)])


def predict(model: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Predicted classes, LongTensor N."""
    return logits(model, images, batch_size).argmax(1)


def explain_batched(
    explain: Explain, model: nn.Module, images: Tensor, targets: Tensor, batch_size: int = 64
) -> Tensor:
    """``explain`` applied ``batch_size`` images at a time; maps N×C'×H×W, detached (0×1×H×W for N = 0)."""
    require_eval(model)
    if len(images) == 0:  # e.g. no correctly classified image to score
        return images.new_zeros((0, 1, *images.shape[-2:]))
    return torch.cat(
        [as_maps(explain(model, images[s], targets[s])).detach() for s in batches(len(images), batch_size)]
    )
