"""Score every attribute entry of one model with the registered metrics (SPEC.md sections 1, 2, 3, 5).

One runner for every :class:`MetricSpec`: it builds the inputs a metric declares it needs, calls it,
bootstraps the per-sample values it returns over the samples it scores and emits rows of the results
table (salbench.results). Map-based metrics (localisation, pixel perturbation) read the maps the
attribute stage cached; metrics that need new maps (randomisation, COSE, class sensitivity) call the
method built from the same params entry; meta-saliency wraps it. Each entry's cached maps are loaded
once and dropped after use, so memory stays at one entry's maps plus the test set.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..attribution import MetaSaliency, Method
from ..metrics import (
    METRICS,
    Combined,
    MetricInputs,
    Summary,
    Values,
    explain_batched,
    model_blocks,
    pool_channels,
    predict,
    randomized_copy,
    summary,
)
from ..metrics.bootstrap import bootstrap_means, bootstrap_summary, finite_values
from ..results import role, variant
from .config import EvalConfig, MetricSpec

MAPS_ONLY = ("gt_mask", "gt_blur")
"""Registry names of control maps that need the GT mask: they have cached maps but no ``explain``, so only
metrics that do not need one (localisation, pixel perturbation) score them."""


@dataclass(frozen=True)
class EvalData:
    """images N×3×H×W in [0, 1], labels N, GT masks N×H×W bool, the model's predictions N."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    predictions: Tensor

    def first(self, n: int | None) -> EvalData:
        return self if n is None else EvalData(*(t[:n] for t in (self.images, self.labels, self.masks, self.predictions)))


@dataclass(frozen=True)
class Entry:
    """One attribute entry: the method and params built from it, a loader of its cached maps
    (N×C'×H×W and their targets N, on the CPU), the layer(s) it reads ("" for input-space methods) and
    the registry name of its method (``method`` in params, default the entry name)."""

    name: str
    method: Method
    params: Mapping[str, Any]
    load: Callable[..., tuple[Tensor, Tensor]]
    layer: str = ""
    registry: str = ""

    @property
    def role(self) -> str:
        return role(self.registry or self.name)

    def explain(self, batch_size: int) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
        """The uniform ``explain(model, images, targets) -> maps`` of :class:`salbench.metrics.MetricInputs`."""
        return lambda model, images, targets: self.method(model, images, targets, batch_size=batch_size, **self.params)


@dataclass(frozen=True)
class Models:
    """The trained model, its random-label twin (data randomisation) and model changes (COSE)."""

    model: nn.Module
    random_labels: nn.Module | None = None
    changes: Mapping[str, nn.Module] = field(default_factory=dict)


@dataclass
class Report:
    """Results for one model: rows of the results table (without task, model, family) and the example
    arrays the figures show (images, masks, labels, predictions, ``map/<entry>``, ``cascade/<entry>``,
    ``layer/<group>/<step>``)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Tensor] = field(default_factory=dict)


def summarise(output: Values | Combined, scored: Tensor, n_boot: int, seed: int) -> Summary:
    """Mean, 95% percentile-bootstrap CI and counts of one metric output over the ``scored`` samples (N
    bool). A :class:`Combined` statistic resamples each part independently (one seeded generator, parts
    in order) and combines the replicates."""
    if isinstance(output, Values):
        mask = scored if output.sample is None else scored[output.sample]
        return summary(output.values, mask, n_boot=n_boot, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    parts = [finite_values(p.values, scored if p.sample is None else scored[p.sample]) for p in output.parts]
    n, undefined = sum(len(v) for v, _ in parts), sum(u for _, u in parts)
    if any(len(v) == 0 for v, _ in parts):
        return bootstrap_summary(math.nan, None, 0, undefined)
    boots = [bootstrap_means(v, n_boot, generator) for v, _ in parts]
    mean = output.combine(*(v.mean() for v, _ in parts)).item()
    return bootstrap_summary(mean, output.combine(*boots), n, undefined)


def run_metric(spec: MetricSpec, inputs: MetricInputs, n_boot: int, seed: int,
               extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A registered metric on ``inputs`` (one call per sweep value) as results rows {metric, variant,
    statistic, step, step_label, mean, ci_low, ci_high, n, n_undefined}; ``extra`` settings join the variant."""
    metric = METRICS.get(spec.name)
    takes_seed = "seed" in inspect.signature(metric.fn).parameters
    scored = metric.scored(inputs)
    rows = []
    for params in spec.runs():
        settings = {**spec.variant(params), **(extra or {})}
        call = {**params, **({"seed": seed} if takes_seed and "seed" not in params else {})}
        for out in metric(inputs, **call):
            rows.append({"metric": (out.metric if isinstance(out, Values) else None) or spec.name,
                         "variant": variant({**settings, **out.variant}), "statistic": out.statistic,
                         "step": out.step if isinstance(out, Values) else math.nan,
                         "step_label": out.step_label if isinstance(out, Values) else "",
                         **summarise(out, scored, n_boot, seed)})
    return rows


def accuracy_row(data: EvalData, n_boot: int, seed: int) -> dict[str, Any]:
    """The model-level accuracy row: mean = test accuracy, n = test images."""
    correct = (data.predictions == data.labels).double()
    return {"method": "", "role": "", "metric": "accuracy", "variant": "", "statistic": "value", "step": math.nan,
            "step_label": "", **summary(correct, n_boot=n_boot, seed=seed)}


def compared_entries(config: EvalConfig, available: Iterable[str]) -> list[str]:
    """The compared methods: ``config.methods``, or every entry but the layer study's extra layers."""
    available = list(available)
    if config.methods is not None:
        return [n for n in config.methods if n in available]
    extra = {n for group, names in config.layer_study.items() for n in names if n != group}
    return [n for n in available if n not in extra]


def _scores(spec: MetricSpec, entry: Entry, compared: Sequence[str]) -> bool:
    """Whether ``spec`` (not a layer study) scores ``entry``."""
    if entry.registry in MAPS_ONLY and "explain" in METRICS.get(spec.name).needs:
        return False
    return entry.name in (compared if spec.methods is None else spec.methods)


def _inputs(models: Models, data: EvalData, maps: Tensor, explain: Callable | None, batch_size: int,
            map_targets: Tensor | None = None) -> MetricInputs:
    return MetricInputs(models.model, data.images, data.labels, data.predictions, maps, data.masks, explain,
                        models.random_labels, models.changes, batch_size, map_targets)


def cascade_examples(model: nn.Module, explain: Callable, images: Tensor, blocks: list[str], seed: int,
                     batch_size: int) -> Tensor:
    """Maps (pooled by l1) of the trained model and after each cascading randomisation step, k×(steps+1)×H×W,
    each explaining that model's own prediction on images k×C×H×W."""
    steps = [model] + [randomized_copy(model, blocks[:i + 1], seed) for i in range(len(blocks))]
    maps = [pool_channels(explain_batched(explain, m, images, predict(m, images, batch_size), batch_size), "l1")
            for m in steps]
    return torch.stack(maps, 1)


def evaluate(models: Models, data: EvalData, entries: Mapping[str, Entry], config: EvalConfig) -> Report:
    """Every metric spec of ``config`` for the entries it names (those missing from ``entries``, e.g.
    excluded for this architecture family, are skipped); see :class:`Report`."""
    bs, seed, n_boot = config.batch_size, config.seed, config.n_boot
    compared = compared_entries(config, entries)
    report = Report(rows=[accuracy_row(data, n_boot, seed)])
    k = min(config.examples, len(data.labels))
    if k:
        report.examples = {"images": data.images[:k], "masks": data.masks[:k], "labels": data.labels[:k],
                           "predictions": data.predictions[:k]}
    cascading = next((s for s in config.specs if s.name == "cascading_randomization" and s.meta_lr is None), None)
    blocks = list(cascading.params.get("blocks") or model_blocks(models.model)) if cascading else []
    in_study = {n for s in config.specs if s.layer_study for names in s.layer_study.values() for n in names}
    wanted = [n for n in entries if n in compared or n in in_study
              or any(s.methods and n in s.methods for s in config.specs)]
    for name in wanted:
        entry = entries[name]
        cached, targets = entry.load(limit=_needed(config, entry, compared, k))
        cached, targets = cached.to(data.images.device), targets.to(data.images.device)
        explain = entry.explain(bs)
        meta_maps: dict[tuple[float, int | None], Tensor] = {}
        for spec in config.specs:
            n = spec.samples
            if spec.layer_study is not None:
                for group, names in spec.layer_study.items():
                    if name in names:
                        inputs = _inputs(models, data.first(n), cached[:n], explain, bs, targets[:n])
                        rows = run_metric(spec, inputs, n_boot, seed)
                        step = names.index(name) + 1
                        report.rows += [{**r, "method": group, "role": role(group), "step": float(step),
                                         "step_label": entry.layer} for r in rows]
                        if k:
                            report.examples[f"layer/{group}/{step}"] = pool_channels(cached[:k], "l1")
            elif _scores(spec, entry, compared):
                part = data.first(n)
                if spec.meta_lr is None:
                    rows = run_metric(spec, _inputs(models, part, cached[:n], explain, bs, targets[:n]), n_boot,
                                      seed)
                else:
                    key = (spec.meta_lr, n)
                    meta = replace(entry, method=MetaSaliency(entry.method, spec.meta_lr))
                    if key not in meta_maps:
                        meta_maps[key] = explain_batched(meta.explain(bs), models.model, part.images,
                                                         targets[:len(part.labels)], bs)
                    rows = run_metric(spec, _inputs(models, part, cached[:n], explain, bs, targets[:n]), n_boot,
                                      seed, {"saliency": "plain"})
                    meta_inputs = _inputs(models, part, meta_maps[key], meta.explain(bs), bs, targets[:n])
                    rows += run_metric(spec, meta_inputs, n_boot, seed, {"saliency": "meta"})
                report.rows += [{**r, "method": name, "role": entry.role} for r in rows]
        if k and name in compared:
            report.examples[f"map/{name}"] = pool_channels(cached[:k], "l1")
            if cascading is not None and _scores(cascading, entry, compared):
                report.examples[f"cascade/{name}"] = cascade_examples(models.model, explain, data.images[:k],
                                                                      blocks, seed, bs)
        del cached, targets, meta_maps  # before the next entry's maps load: one entry's maps at a time
    return report


def _needed(config: EvalConfig, entry: Entry, compared: Sequence[str], examples: int) -> int | None:
    """How many of ``entry``'s maps (the first ones) the metrics that score it read; None: all."""
    used = [s.samples for s in config.specs
            if (s.layer_study is not None and any(entry.name in names for names in s.layer_study.values()))
            or (s.layer_study is None and _scores(s, entry, compared))]
    if any(n is None for n in used):
        return None
    return max([*used, examples if entry.name in compared else 0, 1])


def flat_perturbation(rows: Sequence[Mapping[str, Any]], tol: float = 0.01) -> bool:
    """True when every method's MoRF and LeRF perturbation curves (results rows of metric
    ``perturbation_curve``) coincide within ``tol`` at every step: the maps have no effect (e.g. a black
    baseline that is out of distribution)."""
    curves: dict[tuple[str, str], dict[float, float]] = {}
    for r in rows:
        if r["metric"] == "perturbation_curve":
            curves.setdefault((r["method"], r["variant"]), {})[r["step"]] = r["mean"]
    values = torch.tensor([[c[s] for s in sorted(c)] for c in curves.values()], dtype=torch.float64)
    return len(curves) > 2 and values.shape[1] > 2 and bool((values.amax(0) - values.amin(0) <= tol).all())
