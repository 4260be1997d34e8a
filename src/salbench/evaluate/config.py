"""The `evaluate` params section, validated before any map is loaded or computed."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..metrics import METRICS
from ..metrics.perturbation import BASELINES, ORDERS
from ..params import ParamsError, check_keys

STAGE_KEYS = ("seed", "device", "batch_size", "n_boot", "methods", "examples", "metrics", "perturbation",
              "layer_study", "meta_saliency")
# Keys of a metric entry that the stage reads; every other key is passed to the metric.
METRIC_KEYS = ("samples", "methods", "sweep")
PERTURBATION_KEYS = ("orders", "samples", "methods", "steps", "patch", "baseline", "pooling", "score")
LAYER_STUDY_KEYS = ("entries", "metrics")
META_KEYS = ("lr", "samples", "methods", "metrics")


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric: its params, the first ``samples`` test images (None: all), the attribute
    entries it scores (None: the compared methods) and ``sweep`` ({param: [values]}: one run per value)."""

    name: str
    params: dict[str, Any]
    samples: int | None = None
    methods: list[str] | None = None
    sweep: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalConfig:
    seed: int
    device: str
    batch_size: int
    n_boot: int
    methods: list[str] | None
    examples: int
    metrics: list[MetricSpec]
    perturbation: dict[str, Any]
    layer_study: dict[str, list[str]]
    layer_metrics: list[MetricSpec]
    meta: dict[str, Any]
    meta_metrics: list[MetricSpec]


def _samples(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or value < 1:
        raise ParamsError(f"{where}.samples must be a positive integer or null (all test images), got {value!r}")
    return value


def metric_specs(entries: Mapping[str, Any] | None, where: str) -> list[MetricSpec]:
    """MetricSpecs of a ``{registry name: params}`` mapping; unknown metric names list the known ones."""
    specs = []
    for name, entry in (entries or {}).items():
        METRICS.get(name)
        entry = dict(entry or {})
        sweep = entry.pop("sweep", None) or {}
        if not isinstance(sweep, Mapping) or not all(isinstance(v, list) and v for v in sweep.values()):
            raise ParamsError(f"{where}.{name}.sweep must map a parameter to a non-empty list, got {sweep!r}")
        if len(sweep) > 1:
            raise ParamsError(f"{where}.{name}.sweep sweeps one parameter at a time, got {sorted(sweep)}")
        samples = _samples(entry.pop("samples", None), f"{where}.{name}")
        methods = entry.pop("methods", None)
        specs.append(MetricSpec(name, entry, samples, None if methods is None else list(methods), dict(sweep)))
    return specs


def parse_config(p: Mapping[str, Any]) -> EvalConfig:
    """An EvalConfig from params.yaml's ``evaluate`` section (unknown keys and names are errors)."""
    check_keys(p, STAGE_KEYS, "evaluate")
    perturbation = dict(p.get("perturbation") or {})
    check_keys(perturbation, PERTURBATION_KEYS, "evaluate.perturbation")
    for order in perturbation.get("orders", ORDERS):
        if order not in ORDERS:
            raise ParamsError(f"evaluate.perturbation.orders: unknown order {order!r}; known: {list(ORDERS)}")
    _samples(perturbation.get("samples"), "evaluate.perturbation")
    baseline = perturbation.get("baseline", "mean")
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ParamsError(f"evaluate.perturbation.baseline: unknown baseline {baseline!r}; "
                          f"known: a number or one of {list(BASELINES)}")
    layer = dict(p.get("layer_study") or {})
    check_keys(layer, LAYER_STUDY_KEYS, "evaluate.layer_study")
    meta = dict(p.get("meta_saliency") or {})
    check_keys(meta, META_KEYS, "evaluate.meta_saliency")
    _samples(meta.get("samples"), "evaluate.meta_saliency")
    if meta and float(meta.get("lr", 0)) <= 0:
        raise ParamsError("evaluate.meta_saliency.lr must be a positive learning rate")
    return EvalConfig(
        seed=int(p.get("seed", 0)),
        device=str(p.get("device", "cpu")),
        batch_size=int(p.get("batch_size", 64)),
        n_boot=int(p.get("n_boot", 1000)),
        methods=None if p.get("methods") is None else list(p["methods"]),
        examples=int(p.get("examples", 4)),
        metrics=metric_specs(p.get("metrics"), "evaluate.metrics"),
        perturbation=perturbation,
        layer_study={k: list(v) for k, v in (layer.get("entries") or {}).items()},
        layer_metrics=metric_specs(layer.get("metrics"), "evaluate.layer_study.metrics"),
        meta=meta,
        meta_metrics=metric_specs(meta.get("metrics"), "evaluate.meta_saliency.metrics"),
    )
