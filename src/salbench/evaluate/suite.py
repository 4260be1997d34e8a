"""Score every attribute entry of one model with the registered metrics (SPEC.md sections 1, 2, 3, 5).

One runner for every :class:`MetricSpec`: it builds the inputs a metric declares it needs, calls it,
bootstraps the per-sample values it returns over the samples it scores and emits rows of the results
table (salbench.results). Map-based metrics (localisation, pixel perturbation) read the maps the
attribute stage cached; metrics that need new maps (randomisation, COSE, class sensitivity) call the
method built from the same params entry; meta-saliency wraps it. The test samples come from a
:class:`~salbench.evaluate.data.Source`: the localisation metrics stream its blocks with the matching rows
of one entry's maps at a time; the others hold the first ``samples`` of the test set and of one entry's maps.
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
from ..metrics.base import Output
from ..metrics.bootstrap import bootstrap_means, bootstrap_summary, finite_values
from ..results import role, variant
from .config import EvalConfig, MetricSpec
from .data import EvalData, Source

MAPS_ONLY = ("gt_mask", "gt_blur")
"""Registry names of control maps that need the GT mask: they have cached maps but no ``explain``, so only
metrics that do not need one (localisation, pixel perturbation) score them."""


@dataclass(frozen=True)
class Entry:
    """One attribute entry: the method and params built from it, a reader of its cached maps
    (``read(start, stop)``: maps n×C'×H×W and their targets n, on the CPU), the layer(s) it reads ("" for
    input-space methods) and the registry name of its method (``method`` in params, default the entry name)."""

    name: str
    method: Method
    params: Mapping[str, Any]
    read: Callable[[int, int | None], tuple[Tensor, Tensor]]
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


Outputs = list[tuple[dict[str, Any], Output]]
"""A metric's outputs with the settings of the run that made each (the sweep value and ``extra``)."""


def metric_outputs(spec: MetricSpec, inputs: MetricInputs, seed: int, extra: Mapping[str, Any] | None = None
                   ) -> Outputs:
    """A registered metric on ``inputs``, one call per sweep value; ``extra`` settings join the variant."""
    metric = METRICS.get(spec.name)
    takes_seed = "seed" in inspect.signature(metric.fn).parameters
    outputs = []
    for params in spec.runs():
        settings = {**spec.variant(params), **(extra or {})}
        call = {**params, **({"seed": seed} if takes_seed and "seed" not in params else {})}
        outputs += [(settings, out) for out in metric(inputs, **call)]
    return outputs


def output_rows(spec: MetricSpec, outputs: Outputs, scored: Tensor, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Rows {metric, variant, statistic, step, step_label, mean, ci_low, ci_high, n, n_undefined} of
    :func:`metric_outputs` over the ``scored`` samples (N bool)."""
    return [{"metric": (out.metric if isinstance(out, Values) else None) or spec.name,
             "variant": variant({**settings, **out.variant}), "statistic": out.statistic,
             "step": out.step if isinstance(out, Values) else math.nan,
             "step_label": out.step_label if isinstance(out, Values) else "",
             **summarise(out, scored, n_boot, seed)} for settings, out in outputs]


def run_metric(spec: MetricSpec, inputs: MetricInputs, n_boot: int, seed: int,
               extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A registered metric on ``inputs`` (one call per sweep value) as results rows (:func:`output_rows`);
    ``extra`` settings join the variant."""
    return output_rows(spec, metric_outputs(spec, inputs, seed, extra), METRICS.get(spec.name).scored(inputs),
                       n_boot, seed)


def streamed(spec: MetricSpec) -> bool:
    """Whether ``spec`` runs block by block over the split: a metric of the maps and GT masks alone (the
    localisation metrics), whose value for a sample depends on that sample's map and mask only. Metrics that
    run the model or a method (perturbation, randomisation, COSE, ...) see the first ``samples`` at once."""
    return spec.meta_lr is None and set(METRICS.get(spec.name).needs) == {"maps", "masks"}


def _cat(outs: Sequence[Output], starts: Sequence[int]) -> Output:
    """One output from the same output of consecutive blocks starting at ``starts`` (sample indices shifted)."""
    first = outs[0]
    if isinstance(first, Combined):
        return replace(first, parts=[_cat(parts, starts) for parts in zip(*(o.parts for o in outs))])
    sample = None if first.sample is None else torch.cat([o.sample + s for o, s in zip(outs, starts)])
    return replace(first, values=torch.cat([o.values for o in outs]), sample=sample)


def accuracy_row(data: Source, n_boot: int, seed: int) -> dict[str, Any]:
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


def _runs(spec: MetricSpec, entry: Entry, compared: Sequence[str]) -> bool:
    """Whether ``spec`` scores ``entry``, in the layer study or not."""
    if spec.layer_study is not None:
        return any(entry.name in names for names in spec.layer_study.values())
    return _scores(spec, entry, compared)


def _inputs(models: Models, data: EvalData, maps: Tensor, explain: Callable | None, batch_size: int,
            map_targets: Tensor | None = None) -> MetricInputs:
    return MetricInputs(models.model, data.images, data.labels, data.predictions, maps, data.masks, explain,
                        models.random_labels, models.changes, batch_size, map_targets)


def _streamed_outputs(specs: Sequence[MetricSpec], models: Models, data: Source, entry: Entry, batch_size: int,
                      seed: int) -> list[tuple[Outputs, Tensor]]:
    """(outputs, scored samples) of each :func:`streamed` spec on ``entry``'s maps: one pass over ``data``'s
    blocks (each spec over its first ``samples``), the blocks' outputs concatenated."""
    limits = [len(data) if s.samples is None else min(s.samples, len(data)) for s in specs]
    parts: list[list[tuple[int, Outputs, Tensor]]] = [[] for _ in specs]
    for start, block in data.blocks(max(limits, default=0)):
        maps, targets = entry.read(start, start + len(block))
        maps, targets = maps.to(block.images.device), targets.to(block.images.device)
        for spec, limit, out in zip(specs, limits, parts):
            if start < limit:
                m = limit - start
                inputs = _inputs(models, block.first(m), maps[:m], None, batch_size, targets[:m])
                out.append((start, metric_outputs(spec, inputs, seed), METRICS.get(spec.name).scored(inputs)))
        del maps, targets
    merged = []
    for out in parts:
        starts = [start for start, _, _ in out]
        outputs = [(settings, _cat([o[i][1] for _, o, _ in out], starts)) for i, (settings, _) in enumerate(out[0][1])]
        merged.append((outputs, torch.cat([scored for _, _, scored in out])))
    return merged


def cascade_examples(model: nn.Module, explain: Callable, images: Tensor, blocks: list[str], seed: int,
                     batch_size: int) -> Tensor:
    """Maps (pooled by l1) of the trained model and after each cascading randomisation step, k×(steps+1)×H×W,
    each explaining that model's own prediction on images k×C×H×W."""
    steps = [model] + [randomized_copy(model, blocks[:i + 1], seed) for i in range(len(blocks))]
    maps = [pool_channels(explain_batched(explain, m, images, predict(m, images, batch_size), batch_size), "l1")
            for m in steps]
    return torch.stack(maps, 1)


def evaluate(models: Models, data: Source, entries: Mapping[str, Entry], config: EvalConfig) -> Report:
    """Every metric spec of ``config`` for the entries it names (those missing from ``entries``, e.g.
    excluded for this architecture family, are skipped); see :class:`Report`.

    Memory: the :func:`streamed` metrics read ``data`` and each entry's maps block by block; the others
    read the first ``samples`` (all for None) of them at once, one entry at a time."""
    bs, seed, n_boot = config.batch_size, config.seed, config.n_boot
    compared = compared_entries(config, entries)
    report = Report(rows=[accuracy_row(data, n_boot, seed)])
    k = min(config.examples, len(data))
    cascading = next((s for s in config.specs if s.name == "cascading_randomization" and s.meta_lr is None), None)
    blocks = list(cascading.params.get("blocks") or model_blocks(models.model)) if cascading else []
    in_study = {n for s in config.specs if s.layer_study for names in s.layer_study.values() for n in names}
    wanted = [n for n in entries if n in compared or n in in_study
              or any(s.methods and n in s.methods for s in config.specs)]
    heads = [_needed(config, entries[n], compared, k) for n in wanted]
    head = data.first(None if None in heads else max([*heads, k]))  # the samples held for the other metrics
    if k:
        report.examples = {"images": head.images[:k], "masks": head.masks[:k], "labels": head.labels[:k],
                           "predictions": head.predictions[:k]}
    for name, n_head in zip(wanted, heads):
        entry = entries[name]
        specs = [s for s in config.specs if _runs(s, entry, compared)]
        streams = dict(zip((i for i, s in enumerate(specs) if streamed(s)),
                           _streamed_outputs([s for s in specs if streamed(s)], models, data, entry, bs, seed)))
        cached, targets = entry.read(0, n_head)
        cached, targets = cached.to(head.images.device), targets.to(head.images.device)
        explain = entry.explain(bs)
        meta_maps: dict[tuple[float, int | None], Tensor] = {}

        def rows_of(i: int, spec: MetricSpec, part: EvalData, maps: Tensor, extra: Mapping[str, Any] | None = None,
                    explain: Callable | None = explain, streams: dict = streams, targets: Tensor = targets
                    ) -> list[dict[str, Any]]:
            """Rows of the entry's ``i``-th spec: streamed already, or run on ``part`` and ``maps``."""
            if i in streams:
                return output_rows(spec, *streams[i], n_boot, seed)
            return run_metric(spec, _inputs(models, part, maps, explain, bs, targets[:spec.samples]), n_boot, seed,
                              extra)

        for i, spec in enumerate(specs):
            n = spec.samples
            part = head.first(n)
            if spec.layer_study is not None:
                for group, names in spec.layer_study.items():
                    if name in names:
                        rows = rows_of(i, spec, part, cached[:n])
                        step = names.index(name) + 1
                        report.rows += [{**r, "method": group, "role": role(group), "step": float(step),
                                         "step_label": entry.layer} for r in rows]
                        if k:
                            report.examples[f"layer/{group}/{step}"] = pool_channels(cached[:k], "l1")
            elif spec.meta_lr is None:
                report.rows += [{**r, "method": name, "role": entry.role} for r in rows_of(i, spec, part, cached[:n])]
            else:
                key = (spec.meta_lr, n)
                meta = replace(entry, method=MetaSaliency(entry.method, spec.meta_lr))
                if key not in meta_maps:
                    meta_maps[key] = explain_batched(meta.explain(bs), models.model, part.images,
                                                     targets[:len(part.labels)], bs)
                rows = rows_of(i, spec, part, cached[:n], {"saliency": "plain"})
                rows += rows_of(i, spec, part, meta_maps[key], {"saliency": "meta"}, meta.explain(bs))
                report.rows += [{**r, "method": name, "role": entry.role} for r in rows]
        if k and name in compared:
            report.examples[f"map/{name}"] = pool_channels(cached[:k], "l1")
            if cascading is not None and _scores(cascading, entry, compared):
                report.examples[f"cascade/{name}"] = cascade_examples(models.model, explain, head.images[:k],
                                                                      blocks, seed, bs)
        del cached, targets, meta_maps, streams, rows_of  # one entry's maps at a time
    return report


def _needed(config: EvalConfig, entry: Entry, compared: Sequence[str], examples: int) -> int | None:
    """How many of ``entry``'s maps (the first ones) the metrics that are not :func:`streamed` read and the
    examples show; None: all."""
    used = [s.samples for s in config.specs if _runs(s, entry, compared) and not streamed(s)]
    if any(n is None for n in used):
        return None
    study = any(entry.name in names for s in config.specs if s.layer_study for names in s.layer_study.values())
    return max([*used, examples if entry.name in compared or study else 0, 1])


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
