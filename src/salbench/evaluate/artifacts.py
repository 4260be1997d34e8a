"""Evaluate-stage I/O: entries from the attribute params and map cache, models from the train outputs,
and the report as JSON (`dvc metrics`), CSV (`dvc plots`) and an examples shard (figures)."""
from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..attribution import build
from ..attribution.cache import MANIFEST, cache_key, load_maps, method_inputs
from ..io import atomic_file, file_hash, require, save_shard, write_json
from ..models import load_checkpoint
from ..params import ParamsError
from .config import EvalConfig
from .suite import Entry, Models, Report

CSV_FIELDS = {
    "perturbation": ("method", "order", "fraction", "score", "n"),
    "randomization": ("method", "mode", "step", "block", "similarity", "value", "ci_low", "ci_high", "n"),
    "layers": ("group", "entry", "layer", "metric", "mean", "ci_low", "ci_high", "n"),
}


def check_entry_names(config: EvalConfig, known: Iterable[str]) -> None:
    """Every entry the config names must be an `attribute.methods` entry."""
    known = sorted(known)
    named = {"evaluate.methods": config.methods or [], "evaluate.perturbation.methods":
             config.perturbation.get("methods") or [], "evaluate.meta_saliency.methods": config.meta.get("methods") or []}
    named.update({f"evaluate.metrics.{s.name}.methods": s.methods or [] for s in config.metrics})
    named.update({f"evaluate.layer_study.entries.{g}": names for g, names in config.layer_study.items()})
    for where, names in named.items():
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ParamsError(f"{where} names {unknown}, which are not attribute.methods entries; known: {known}")


def load_entries(methods: Mapping[str, Any], family: str, maps_dir: Path, model: torch.nn.Module,
                 model_hash: str, targets: Tensor, seed: int, stage: str,
                 inputs: Mapping[str, Tensor] | None = None) -> dict[str, Entry]:
    """Entries of `attribute.methods` for ``family``, with lazy loaders of their cached maps; a missing or
    stale cache raises naming ``stage`` (the attribute stage that writes ``maps_dir``). ``inputs``: the
    per-sample inputs the attribute stage passed (``masks``), which the keys of the control entries cover."""
    entries = {}
    for name, spec in methods.items():
        built = build(name, spec, family)
        if built is None:
            continue
        method, params = built
        layer = ",".join(method.layers(model, **params)) or None
        require(maps_dir / name / MANIFEST, stage)
        key = cache_key(model_hash, name, spec or {}, layer, targets, seed, method_inputs(method.needs, inputs or {}))
        load = functools.partial(_load, maps_dir / name, key, stage)
        entries[name] = Entry(name, method, params, load, _short_layer(layer, model))
    return entries


def _short_layer(layer: str | None, model: torch.nn.Module) -> str:
    from ..attribution.model import inspect_model

    prefix = inspect_model(model).prefix
    return ",".join(part.removeprefix(prefix) for part in (layer or "").split(",") if part)


def _load(map_dir: Path, key: str, stage: str) -> tuple[Tensor, Tensor]:
    try:
        maps, targets, _ = load_maps(map_dir, key)
    except ValueError as e:
        raise ParamsError(f"{e} (`dvc repro {stage}`)") from None
    return maps, targets


def load_models(model_dir: Path, device: torch.device, stage: str) -> Models:
    """The final model, its random-label twin and the COSE model changes (random init, epoch checkpoints)."""
    model, _ = load_checkpoint(require(model_dir / "final", stage), device)
    random_labels = load_checkpoint(require(model_dir / "random_labels", stage), device)[0]
    changes = {"random_init": load_checkpoint(require(model_dir / "random_init", stage), device)[0]}
    epochs = sorted(require(model_dir / "checkpoints", stage).glob("epoch_*"), key=lambda p: int(p.name[6:]))
    changes.update({p.name: load_checkpoint(p, device)[0] for p in epochs})
    return Models(model, random_labels, changes)


def model_hash(model_dir: Path) -> str:
    return file_hash(model_dir / "final" / "model.safetensors")


def _json_float(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v  # NaN (nothing scored) -> null


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    return _json_float(obj)


def write_csv(path: Path, rows: list[Mapping[str, Any]], fields: Iterable[str]) -> None:
    with atomic_file(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if _json_float(v) is None else v for k, v in row.items()})


def save_report(report: Report, metrics_path: Path, plots_dir: Path, out_dir: Path, meta: Mapping[str, Any]) -> None:
    """metrics_path: {task, model, accuracy..., method_order (params order; JSON keys are sorted), methods:
    {entry: {metric: Summary}}, agreement, meta_saliency, layer_study}; plots_dir: perturbation.csv, randomization.csv, layers.csv; out_dir: examples.safetensors
    (images, masks, per-entry pooled maps, cascading-randomisation maps) and blocks.json."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, fields in CSV_FIELDS.items():
        write_csv(plots_dir / f"{name}.csv", getattr(report, name), fields)
    layer_study: dict[str, dict[str, dict[str, Any]]] = {}
    for r in report.layers:
        layer_study.setdefault(r["group"], {}).setdefault(r["entry"], {"layer": r["layer"]})[r["metric"]] = {
            k: r[k] for k in ("mean", "ci_low", "ci_high", "n")}
    write_json(metrics_path, _clean({**meta, "method_order": list(report.methods), "methods": report.methods, "agreement": report.agreement,
                                     "meta_saliency": report.meta, "layer_study": layer_study}))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_shard(out_dir / "examples.safetensors",
               {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in report.examples.items()})
    write_json(out_dir / "blocks.json", {"cascading": report.blocks})
