"""The `evaluate` params section, validated before any map is loaded or computed.

Every metric run is a :class:`MetricSpec`: ``metrics.<name>`` entries directly, and the NormGrad layer
study and meta-saliency sections expand into specs of their metrics (with ``layer_study`` groups or a
``meta_lr``), so one runner handles them all.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..metrics import METRICS
from ..metrics.perturbation import BASELINES, ORDERS
from ..params import ParamsError, check_keys

STAGE_KEYS = ("seed", "device", "batch_size", "threads", "n_boot", "methods", "examples", "metrics", "layer_study",
              "meta_saliency")
# Keys of a metric entry that the stage reads; every other key is passed to the metric.
METRIC_KEYS = ("samples", "methods", "sweep")
LAYER_STUDY_KEYS = ("entries", "metrics")
META_KEYS = ("lr", "samples", "methods", "metrics")


@dataclass(frozen=True)
class MetricSpec:
    """One run of a registered metric: its params, the first ``samples`` test images (None: all), the
    attribute entries it scores (None: the compared methods), ``sweep`` ({param: [values]}: one run per
    value); ``layer_study`` ({group: [entry per layer, input to output]}) scores each group's entries as
    the steps of one curve; ``meta_lr`` scores each method plain and after one SGD step of that rate."""

    name: str
    params: dict[str, Any]
    samples: int | None = None
    methods: list[str] | None = None
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    layer_study: dict[str, list[str]] | None = None
    meta_lr: float | None = None

    def runs(self) -> list[dict[str, Any]]:
        """The params of each run: one per sweep value (one run without a sweep)."""
        if not self.sweep:
            return [dict(self.params)]
        ((param, values),) = self.sweep.items()
        return [{**self.params, param: value} for value in values]

    def variant(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The settings that name a run in the results table: the swept param, the metric's
        ``variant_params`` (with their defaults) and ``layer_study=1`` for the layer study."""
        metric = METRICS.get(self.name)
        defaults = {k: p.default for k, p in inspect.signature(metric.fn).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        out = {k: params.get(k, defaults.get(k)) for k in (*self.sweep, *metric.variant_params)}
        if self.layer_study is not None:
            out["layer_study"] = 1
        return out


@dataclass(frozen=True)
class EvalConfig:
    seed: int
    device: str
    batch_size: int
    n_boot: int
    methods: list[str] | None
    examples: int
    specs: list[MetricSpec]
    threads: int = 1

    @property
    def layer_study(self) -> dict[str, list[str]]:
        """Every layer-study group -> its entries (input to output)."""
        return {g: names for s in self.specs if s.layer_study for g, names in s.layer_study.items()}


def _samples(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or value < 1:
        raise ParamsError(f"{where}.samples must be a positive integer or null (all test images), got {value!r}")
    return value


def _check_aopc(params: Mapping[str, Any], sweep: Mapping[str, list[Any]], where: str) -> None:
    for order in sweep.get("order", [params.get("order", "morf")]):
        if order not in ORDERS:
            raise ParamsError(f"{where}.aopc: unknown order {order!r}; known: {list(ORDERS)}")
    baseline = params.get("baseline", "mean")
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ParamsError(f"{where}.aopc.baseline: unknown baseline {baseline!r}; "
                          f"known: a number or one of {list(BASELINES)}")


def metric_specs(entries: Mapping[str, Any] | None, where: str, **common: Any) -> list[MetricSpec]:
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
        if name == "aopc":
            _check_aopc(entry, sweep, where)
        specs.append(MetricSpec(name, entry, samples, None if methods is None else list(methods), dict(sweep),
                                **common))
    return specs


def parse_config(p: Mapping[str, Any]) -> EvalConfig:
    """An EvalConfig from params.yaml's ``evaluate`` section (unknown keys and names are errors)."""
    check_keys(p, STAGE_KEYS, "evaluate")
    specs = metric_specs(p.get("metrics"), "evaluate.metrics")
    layer = dict(p.get("layer_study") or {})
    check_keys(layer, LAYER_STUDY_KEYS, "evaluate.layer_study")
    if layer:
        groups = {k: list(v) for k, v in (layer.get("entries") or {}).items()}
        specs += metric_specs(layer.get("metrics"), "evaluate.layer_study.metrics", layer_study=groups)
    meta = dict(p.get("meta_saliency") or {})
    check_keys(meta, META_KEYS, "evaluate.meta_saliency")
    if meta:
        if float(meta.get("lr", 0)) <= 0:
            raise ParamsError("evaluate.meta_saliency.lr must be a positive learning rate")
        samples = _samples(meta.get("samples"), "evaluate.meta_saliency")
        methods = None if meta.get("methods") is None else list(meta["methods"])
        specs += [MetricSpec(s.name, s.params, samples, methods, s.sweep, meta_lr=float(meta["lr"]))
                  for s in metric_specs(meta.get("metrics"), "evaluate.meta_saliency.metrics")]
    return EvalConfig(
        seed=int(p.get("seed", 0)),
        device=str(p.get("device", "cpu")),
        batch_size=int(p.get("batch_size", 64)),
        n_boot=int(p.get("n_boot", 1000)),
        methods=None if p.get("methods") is None else list(p["methods"]),
        examples=int(p.get("examples", 4)),
        specs=specs,
        threads=p.get("threads", 1),
    )
