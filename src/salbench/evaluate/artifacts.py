"""Evaluate-stage I/O: entries from the attribute params and map cache, models from the train outputs,
and the outputs: the results table (salbench.results), the headline metrics (`dvc metrics`) and the
example arrays (figures)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..attribution import Method, build, call_targets
from ..attribution.cache import MapReader, check_maps
from ..errors import SalbenchError
from ..io import file_hash, require, save_shard, write_json
from ..models import load_checkpoint
from ..params import ParamsError
from ..results import write_results
from .config import EvalConfig
from .data import Source
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
                 model_hash: str, data: Source, targets: Tensor, seed: int, stage: str,
                 batch_size: int = 64) -> dict[str, Entry]:
    """Entries of `attribute.methods` for ``family``, with readers of their cached maps (keyed as the attribute
    stage keys them: ``targets`` (N) by default, an entry's own `explain` choice from ``data``'s labels, and
    the per-sample inputs the method reads, :meth:`Source.input_hashes`); a missing, stale, truncated or
    corrupt cache raises here, before any metric work, naming ``stage`` (the attribute stage that writes
    ``maps_dir``). One pass over ``data`` finds the classes every entry explains."""
    built = {name: b for name, spec in methods.items() if (b := build(name, spec, family)) is not None}
    names = list(built)
    explained = dict(zip(names, data.scan(lambda start, d: [
        call_targets(built[n][0], model, d.images, d.labels, targets[start:start + len(d)], batch_size)[1]
        for n in names]))) if names else {}
    hashes = data.input_hashes()
    entries = {}
    for name, (method, params) in built.items():
        spec = methods[name]
        missing = [key for key in method.needs if key not in hashes]
        if missing:
            raise SalbenchError(f"attribute.methods.{name} reads {missing}, which the test split lacks; the render "
                                "stage writes gt_mask: run `dvc repro render` or drop the entry")
        layer = ",".join(method.layers(model, **params)) or None
        entries[name] = cached_entry(maps_dir, name, spec, method, params, layer, model, model_hash, explained[name],
                                     seed, stage, {k: hashes[k] for k in method.needs})
    return entries


def cached_entry(maps_dir: Path, name: str, spec: Mapping[str, Any] | None, method: Method,
                 params: Mapping[str, Any], layer: str | None, model: torch.nn.Module, model_hash: str,
                 explained: Tensor, seed: int, stage: str, inputs: Mapping[str, str]) -> Entry:
    """The :class:`Entry` of `attribute.methods` entry ``name`` (``spec``) with a reader of its cached maps, checked
    up front (:func:`~salbench.attribution.cache.check_maps`: keyed by the ``explained`` classes N and the
    per-sample ``inputs`` hashes) so a missing, stale or corrupt cache raises naming ``stage``."""
    key = check_maps(maps_dir / name, model_hash=model_hash, method=name, params=spec or {}, layer=layer,
                     targets=explained, seed=seed, stage=stage, inputs=inputs)
    registry = str((spec or {}).get("method", name))
    return Entry(name, method, params, MapReader(maps_dir / name, key, stage).read, _short_layer(layer, model),
                 registry)


def _short_layer(layer: str | None, model: torch.nn.Module) -> str:
    from ..attribution.model import inspect_model

    prefix = inspect_model(model).prefix
    return ",".join(part.removeprefix(prefix) for part in (layer or "").split(",") if part)


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
