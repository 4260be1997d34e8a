"""Score every attribute entry of one model with the registered metrics (SPEC.md sections 1, 2, 3, 5).

Map-based metrics (localisation, pixel perturbation) read the maps the attribute stage cached;
metrics that need new maps (randomisation, COSE, class sensitivity, meta-saliency) call the method
built from the same params entry. Each entry's cached maps are loaded once and dropped after use,
so memory stays at one entry's maps plus the test set.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..attribution import MetaSaliency, Method
from ..metrics import (
    METRICS,
    MetricInputs,
    Summary,
    explain_batched,
    model_blocks,
    pixel_perturbation,
    pool_channels,
    predict,
    randomized_copy,
    summary,
)
from ..metrics.perturbation import ORDERS
from .agreement import ranking_agreement
from .config import EvalConfig, MetricSpec

RANDOMIZATION_MODES = {"cascading_randomization": "cascading", "independent_randomization": "independent"}


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
    (N×C'×H×W and their targets N, on the CPU) and the layer(s) it reads ("" for input-space methods)."""

    name: str
    method: Method
    params: Mapping[str, Any]
    load: Callable[[], tuple[Tensor, Tensor]]
    layer: str = ""

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
    """Results for one model: ``methods`` entry -> metric key -> Summary; CSV rows for the curves."""

    methods: dict[str, dict[str, Summary]] = field(default_factory=dict)
    perturbation: list[dict[str, Any]] = field(default_factory=list)
    randomization: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, dict[str, dict[str, Summary]]] = field(default_factory=dict)
    agreement: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    examples: dict[str, Tensor] = field(default_factory=dict)


def _namespaced(metric: str, results: Mapping[str, Summary]) -> dict[str, Summary]:
    """Keys prefixed ``<metric>/`` unless they already name the metric (cascading and independent
    randomisation both return 'block/similarity' keys)."""
    return {k if k == metric or k.startswith(f"{metric}/") else f"{metric}/{k}": s for k, s in results.items()}


def run_metric(spec: MetricSpec, inputs: MetricInputs, n_boot: int, seed: int) -> dict[str, Summary]:
    """A registered metric on ``inputs``, keys prefixed by its name (see :func:`_namespaced`); with a sweep,
    one run per value, keys suffixed ``/<value>``."""
    metric = METRICS.get(spec.name)
    if not spec.sweep:
        return _namespaced(spec.name, metric(inputs, n_boot=n_boot, seed=seed, **spec.params))
    ((param, values),) = spec.sweep.items()
    return {f"{key}/{value}": s for value in values for key, s in
            _namespaced(spec.name, metric(inputs, n_boot=n_boot, seed=seed, **{**spec.params, param: value})).items()}


def perturbation_scores(model: nn.Module, data: EvalData, maps: Tensor, targets: Tensor, p: Mapping[str, Any],
                        n_boot: int, seed: int, batch_size: int) -> tuple[dict[str, Summary], list[dict[str, Any]]]:
    """AOPC per order (as the registered ``aopc_<order>`` metrics, correctly classified samples only) and
    the mean curve over those samples as rows {order, fraction, score, n}. maps N×C'×H×W explain ``targets``."""
    results, rows = {}, []
    scored = data.predictions == data.labels
    for order in p.get("orders", ORDERS):
        curves = pixel_perturbation(model, data.images, maps, targets, order, int(p.get("steps", 21)),
                                    p.get("baseline", "mean"), int(p.get("patch", 1)), p.get("pooling", "sum_abs"),
                                    p.get("score", "probability"), seed, batch_size)
        results[f"aopc_{order}"] = summary(curves.aopc, scored, n_boot=n_boot, seed=seed)
        mean = curves.scores[scored].mean(0) if scored.any() else torch.full_like(curves.fractions, torch.nan)
        rows += [{"order": order, "fraction": round(f, 6), "score": s, "n": int(scored.sum())}
                 for f, s in zip(curves.fractions.tolist(), mean.tolist())]
    return results, rows


def flat_perturbation(rows: Sequence[Mapping[str, Any]], tol: float = 0.01) -> bool:
    """True when every method's MoRF and LeRF curves (rows {method, order, score} in fraction order) coincide
    within ``tol`` at every point: the maps have no effect (e.g. a black baseline that is out of distribution)."""
    curves: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        curves.setdefault((r["method"], r["order"]), []).append(r["score"])
    values = torch.tensor(list(curves.values()), dtype=torch.float64)
    return len(curves) > 2 and values.shape[1] > 2 and bool((values.amax(0) - values.amin(0) <= tol).all())


def randomization_rows(metric: str, results: Mapping[str, Summary]) -> list[dict[str, Any]]:
    """Rows {mode, step, block, similarity, value, ci_low, ci_high, n} of a randomisation metric's results as
    :func:`run_metric` keys them: '<metric>/block/similarity' in step order for model randomisation,
    'data_randomization/similarity' for data randomisation."""
    rows, steps = [], {}
    for key, s in results.items():
        block, _, similarity = key.removeprefix(f"{metric}/").rpartition("/")
        mode = RANDOMIZATION_MODES.get(metric, "data")
        step = steps.setdefault(block, len(steps)) + 1 if block else 1
        rows.append({"mode": mode, "step": step, "block": block or "labels", "similarity": similarity,
                     "value": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n": s["n"]})
    return rows


def compared_entries(config: EvalConfig, available: Iterable[str]) -> list[str]:
    """The compared methods: ``config.methods``, or every entry but the layer study's extra layers."""
    available = list(available)
    if config.methods is not None:
        return [n for n in config.methods if n in available]
    extra = {n for group, names in config.layer_study.items() for n in names if n != group}
    return [n for n in available if n not in extra]


def _scored_by(spec: MetricSpec, compared: list[str]) -> list[str]:
    return compared if spec.methods is None else spec.methods


def _inputs(models: Models, data: EvalData, maps: Tensor, explain: Callable | None, batch_size: int) -> MetricInputs:
    return MetricInputs(models.model, data.images, data.labels, data.predictions, maps, data.masks, explain,
                        models.random_labels, models.changes, batch_size)


def cascade_examples(model: nn.Module, explain: Callable, images: Tensor, blocks: list[str], seed: int,
                     batch_size: int) -> Tensor:
    """Maps (pooled by l1) of the trained model and after each cascading randomisation step, k×(steps+1)×H×W,
    each explaining that model's own prediction on images k×C×H×W."""
    steps = [model] + [randomized_copy(model, blocks[:i + 1], seed) for i in range(len(blocks))]
    maps = [pool_channels(explain_batched(explain, m, images, predict(m, images, batch_size), batch_size), "l1")
            for m in steps]
    return torch.stack(maps, 1)


def evaluate(models: Models, data: EvalData, entries: Mapping[str, Entry], config: EvalConfig) -> Report:
    """Every metric of ``config`` for the entries it names (those missing from ``entries``, e.g. excluded
    for this architecture family, are skipped); see :class:`Report`."""
    bs, seed, n_boot = config.batch_size, config.seed, config.n_boot
    compared = compared_entries(config, entries)
    layer_of = {n: group for group, names in config.layer_study.items() for n in names}
    meta_methods = list(config.meta.get("methods") or [])
    pert = config.perturbation
    report = Report()
    k = min(config.examples, len(data.labels))
    if k:
        report.examples = {"images": data.images[:k], "masks": data.masks[:k], "labels": data.labels[:k],
                           "predictions": data.predictions[:k]}
    cascading = next((s for s in config.metrics if s.name == "cascading_randomization"), None)
    if cascading is not None:
        report.blocks = list(cascading.params.get("blocks") or model_blocks(models.model))
    wanted = [n for n in entries if n in compared or n in layer_of or n in meta_methods]
    for name in wanted:
        entry = entries[name]
        cached, targets = entry.load()
        cached, targets = cached.to(data.images.device), targets.to(data.images.device)
        explain = entry.explain(bs)
        results: dict[str, Summary] = {}
        for spec in config.metrics:
            if name in _scored_by(spec, compared):
                n = spec.samples
                out = run_metric(spec, _inputs(models, data.first(n), cached[:n], explain, bs), n_boot, seed)
                results.update(out)
                if spec.name in RANDOMIZATION_MODES or spec.name == "data_randomization":
                    report.randomization += [{"method": name, **r} for r in randomization_rows(spec.name, out)]
        if pert and name in (pert.get("methods") or compared):
            n = pert.get("samples")
            aopc, rows = perturbation_scores(models.model, data.first(n), cached[:n], targets[:n], pert, n_boot,
                                             seed, bs)
            results.update(aopc)
            report.perturbation += [{"method": name, **r} for r in rows]
        if name in compared:
            report.methods[name] = results
        if name in layer_of:
            for spec in config.layer_metrics:
                n = spec.samples
                out = run_metric(spec, _inputs(models, data.first(n), cached[:n], explain, bs), n_boot, seed)
                report.layers += [{"group": layer_of[name], "entry": name, "layer": entry.layer, "metric": key,
                                   **{s: v[s] for s in ("mean", "ci_low", "ci_high", "n")}} for key, v in out.items()]
        if name in meta_methods:
            report.meta[name] = meta_saliency(models, data.first(config.meta.get("samples")), entry, cached, targets,
                                              config)
        if k:
            report.examples[f"map/{name}"] = pool_channels(cached[:k], "l1")
            if cascading is not None and name in _scored_by(cascading, compared):
                report.examples[f"cascade/{name}"] = cascade_examples(models.model, explain, data.images[:k],
                                                                      report.blocks, seed, bs)
    report.layers.sort(key=lambda r: (r["group"], config.layer_study[r["group"]].index(r["entry"]), r["metric"]))
    report.agreement = ranking_agreement(report.methods)
    return report


def meta_saliency(models: Models, data: EvalData, entry: Entry, cached: Tensor, targets: Tensor,
                  config: EvalConfig) -> dict[str, dict[str, Summary]]:
    """The meta-saliency metrics of ``entry`` on ``data``: {"plain": cached maps and the method,
    "meta": maps after one SGD step of ``config.meta['lr']`` (the same params entry wrapped)}."""
    bs, n = config.batch_size, len(data.labels)
    meta = replace(entry, method=MetaSaliency(entry.method, float(config.meta["lr"])))
    meta_maps = explain_batched(meta.explain(bs), models.model, data.images, targets[:n], bs)
    out = {}
    for kind, e, maps in (("plain", entry, cached[:n]), ("meta", meta, meta_maps)):
        inputs = _inputs(models, data, maps, e.explain(bs), bs)
        out[kind] = {key: s for spec in config.meta_metrics
                     for key, s in run_metric(spec, inputs, config.n_boot, config.seed).items()}
    return out
