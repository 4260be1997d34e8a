"""Evaluate-stage I/O: entries from the attribute params and map cache, models from the train outputs,
and the outputs: the results table (salbench.results), the headline metrics (`dvc metrics`) and the
example arrays (figures)."""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..attribution import build, call_targets
from ..attribution.cache import check_maps, load_maps, method_inputs
from ..io import file_hash, require, save_shard, write_json
from ..models import load_checkpoint
from ..params import ParamsError
from ..results import write_results
from .config import EvalConfig
from .headlines import headlines
from .suite import Entry, Models, Report


def check_entry_names(config: EvalConfig, known: Iterable[str]) -> None:
    """Every entry the config names must be an `attribute.methods` entry."""
    known = sorted(known)
    named = {"evaluate.methods": config.methods or []}
    for s in config.specs:
        where = ("evaluate.layer_study.entries" if s.layer_study is not None else "evaluate.meta_saliency.methods"
                 if s.meta_lr is not None else f"evaluate.metrics.{s.name}.methods")
        named.setdefault(where, [])
        named[where] += [n for names in (s.layer_study or {}).values() for n in names] + (s.methods or [])
    for where, names in named.items():
        unknown = [n for n in dict.fromkeys(names) if n not in known]
        if unknown:
            raise ParamsError(f"{where} names {unknown}, which are not attribute.methods entries; known: {known}")


def load_entries(methods: Mapping[str, Any], family: str, maps_dir: Path, model: torch.nn.Module,
                 model_hash: str, images: Tensor, labels: Tensor, targets: Tensor, seed: int, stage: str,
                 batch_size: int = 64, inputs: Mapping[str, Tensor] | None = None) -> dict[str, Entry]:
    """Entries of `attribute.methods` for ``family``, with lazy loaders of their cached maps (keyed as the
    attribute stage keys them: ``targets`` by default, an entry's own `explain` choice from ``labels``;
    ``inputs``: the per-sample inputs the attribute stage passed (``masks``), which the keys of the control
    entries cover); a missing, stale, truncated or corrupt cache raises here, before any metric work, naming
    ``stage`` (the attribute stage that writes ``maps_dir``)."""
    entries = {}
    for name, spec in methods.items():
        built = build(name, spec, family)
        if built is None:
            continue
        method, params = built
        layer = ",".join(method.layers(model, **params)) or None
        explained = call_targets(method, model, images, labels, targets, batch_size)[1]
        key = check_maps(maps_dir / name, model_hash=model_hash, method=name, params=spec or {}, layer=layer,
                         targets=explained, seed=seed, stage=stage,
                         inputs=method_inputs(method.needs, inputs or {}))
        load = functools.partial(_load, maps_dir / name, key, stage)
        registry = str((spec or {}).get("method", name))
        entries[name] = Entry(name, method, params, load, _short_layer(layer, model), registry)
    return entries


def _short_layer(layer: str | None, model: torch.nn.Module) -> str:
    from ..attribution.model import inspect_model

    prefix = inspect_model(model).prefix
    return ",".join(part.removeprefix(prefix) for part in (layer or "").split(",") if part)


def _load(map_dir: Path, key: str, stage: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    maps, targets, _ = load_maps(map_dir, key, stage, limit)
    return maps, targets


def load_models(model_dir: Path, device: torch.device, stage: str) -> Models:
    """The final model, its random-label twin and the COSE model changes (random init, epoch checkpoints)."""
    model, _ = load_checkpoint(require(model_dir / "final", stage), device, stage)
    random_labels = load_checkpoint(require(model_dir / "random_labels", stage), device, stage)[0]
    changes = {"random_init": load_checkpoint(require(model_dir / "random_init", stage), device, stage)[0]}
    epochs = sorted(require(model_dir / "checkpoints", stage).glob("epoch_*"), key=lambda p: int(p.name[6:]))
    changes.update({p.name: load_checkpoint(p, device, stage)[0] for p in epochs})
    return Models(model, random_labels, changes)


def model_hash(model_dir: Path) -> str:
    return file_hash(model_dir / "final" / "model.safetensors")


def table_rows(report: Report, task: str, model: str, family: str) -> list[dict[str, Any]]:
    """The report's rows with their task, model and family: rows of the results table."""
    return [{"task": task, "model": model, "family": family, **r} for r in report.rows]


def save_report(report: Report, task: str, model: str, family: str, results_path: Path, metrics_path: Path,
                out_dir: Path) -> list[dict[str, Any]]:
    """results_path: the results table (CSV); metrics_path: the headline numbers (JSON, `dvc metrics`);
    out_dir: examples.safetensors (images, masks, labels, predictions, pooled maps per entry, cascading
    randomisation and layer-study maps). Returns the table's rows."""
    rows = table_rows(report, task, model, family)
    write_results(results_path, rows)
    write_json(metrics_path, headlines(rows))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_shard(out_dir / "examples.safetensors",
               {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in report.examples.items()})
    return rows
