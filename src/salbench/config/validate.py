"""Validate the whole params.yaml before a stage does any work; every problem is a ParamsError naming the key.

``validate_params(params, stage, task=..., model=..., generator=...)`` checks every section's keys, types
and ranges (:mod:`salbench.config.sections`), each method's and metric's params against what it declares
(:mod:`salbench.config.declare`), the task definitions, names that must refer to other sections, paths that
must exist, and for ``stage`` its own sections, its device and its command-line selectors.
Stage scripts call :func:`preflight` first thing, before their heavy imports.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import importlib.util
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ValidationError, create_model

from ..attribution import METHODS
from ..attribution.spec import FAMILIES, WRAPPER_KEYS
from ..metrics import METRICS
from ..params import ParamsError, load_params
from ..render.tasks import TASKS, TaskError, build_task
from ..render.world import RenderParamsError, World, task_world
from ..registry import Registry
from . import sections as S
from .declare import Param, params_model, signature_params, unknown_name

# Sections each stage reads (they must be present); every other section is checked when present.
STAGE_SECTIONS = {"render": ("render", "tasks"), "import": ("folders",), "train": ("train",), "attribute": ("attribute",),
                  "evaluate": ("evaluate", "attribute"), "generate": ("concepts",), "permutation": ("concepts",),
                  "plot": ("plot", "attribute", "train")}
# The section whose `device` a stage uses.
STAGE_DEVICE = {"train": "train", "attribute": "attribute", "evaluate": "evaluate", "generate": "concepts",
                "permutation": "concepts"}
METRIC_FIXED = ("inputs", "n_boot", "seed")  # passed by the evaluate stage, not params
TAKES: dict[type[BaseModel], str] = {}  # what an entry model takes, for unknown-key messages


# ---- declared params of methods and metrics -----------------------------------------------------------------------

def method_params(name: str) -> dict[str, Param]:
    """The params attribution method ``name`` declares."""
    return METHODS.get(name).params()


def metric_params(name: str) -> dict[str, Param]:
    """The params metric ``name`` declares (besides n_boot and seed, which the stage passes)."""
    metric = METRICS.get(name)
    return signature_params(getattr(metric, "fn", metric), skip=METRIC_FIXED)


def describe(params: Mapping[str, Param]) -> str:
    return ", ".join(p.describe() for p in params.values()) or "no parameters"


def _entry(keys: type[BaseModel], name: str, params: Mapping[str, Param], takes: str) -> type[BaseModel]:
    """One model of ``keys`` (what the stage reads from an entry) and the declared ``params``; ``takes`` says
    what it takes in unknown-key messages."""
    own = params_model(f"{name}_params", params)
    model = create_model(f"{name}_entry", __base__=(keys,),
                         **{k: (f.annotation, f) for k, f in own.model_fields.items()})
    TAKES[model] = takes
    return model


@functools.cache
def _method_model(method: str, base: str | None) -> type[BaseModel]:
    """An attribute.methods entry of ``method`` (with ``base``'s params too, for a wrapper such as smoothgrad)."""
    params, takes = method_params(method), describe(method_params(method))
    if base:
        params, takes = {**params, **method_params(base)}, f"{takes}, and {base}'s {describe(method_params(base))}"
    return _entry(S.EntryKeys, method, params, f"{takes}; entry keys: {', '.join(WRAPPER_KEYS)}")


@functools.cache
def _metric_model(name: str) -> type[BaseModel]:
    return _entry(S.MetricKeys, name, metric_params(name),
                  f"{describe(metric_params(name))}; entry keys: {', '.join(S.MetricKeys.model_fields)}")


# ---- pydantic errors as messages --------------------------------------------------------------------------------

_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
             "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
             "sequence_str": "a list (not a string)", "tuple_type": "a list", "dict_type": "a mapping",
             "model_type": "a mapping", "model_attributes_type": "a mapping", "none_required": "null"}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _unwrap(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _members(ann: Any) -> list[Any]:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(ann) if a is not type(None)]
    return [ann]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _pick(members: list[Any], tag: Any) -> Any | None:
    """The union member a pydantic union tag (e.g. 'str', 'ModelSpec', 'dict[str,float]') names, or None."""
    if not isinstance(tag, str):
        return None
    for m in members:
        if _is_model(m) and m.__name__ == tag:
            return m
    head = tag.split("[")[0]
    for m in members:
        origin = typing.get_origin(m) or m
        name = {dict: "dict", list: "list"}.get(origin, getattr(origin, "__name__", ""))
        if name and (head == name or head.endswith("-" + name) or head.startswith(name)):
            return m
    if "[" in tag or tag.startswith(("function-", "constrained-", "literal")) or tag in ("none", "str", "int", "float"):
        return members[0]
    return None


def _walk(model: type[BaseModel], loc: tuple) -> tuple[list[Any], Any]:
    """(``loc`` without pydantic's union tags, the annotation at its end or None)."""
    ann: Any = model
    out: list[Any] = []
    for part in loc:
        if part == "[key]":  # pydantic's marker of a mapping key (the key itself is the previous part)
            continue
        members = _members(_unwrap(ann)) if ann is not None else [None]
        if len(members) > 1:
            tagged = _pick(members, part)
            if tagged is not None:
                ann = tagged
                continue
        ann = members[0]
        out.append(part)
        if _is_model(ann):
            ann = ann.model_fields[part].annotation if part in ann.model_fields else None
        elif typing.get_origin(ann) in (dict, list, tuple):
            ann = typing.get_args(ann)[-1 if typing.get_origin(ann) is dict else 0]
        else:
            ann = None
    return out, ann


def _path(where: str, parts: Iterable[Any]) -> str:
    text = where
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else f".{p}" if text else str(p)
    return text


def _mapping_model(ann: Any) -> type[BaseModel] | None:
    """The model of the mapping at a path (for an unknown key: what it takes)."""
    return next((m for m in _members(_unwrap(ann)) if _is_model(m)), None)


def _input(value: Any) -> str:
    return repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 80 else type(value).__name__


def messages(error: ValidationError, where: str, model: type[BaseModel], owner: str | None = None) -> list[str]:
    """One message per offending key: ``<key path>: <problem>; <fix>``."""
    by_path: dict[str, list[dict]] = {}
    for e in error.errors():
        parts, _ = _walk(model, tuple(e["loc"]))
        by_path.setdefault(_path(where, parts), []).append({**e, "parts": parts})
    # A union member that got into a value's structure reports deeper paths: drop the other members' type errors.
    deeper = {q for q in by_path for r in by_path if r.startswith((q + ".", q + "["))}
    out = []
    for path, errs in by_path.items():
        if path in deeper and all(e["type"] in _EXPECTED for e in errs):
            continue
        specific = [e for e in errs if e["type"] not in _EXPECTED and e["type"] != "is_instance_of"]
        if not specific:
            expected = " or ".join(dict.fromkeys(_EXPECTED[e["type"]] for e in errs if e["type"] in _EXPECTED))
            value = errs[0]["input"]
            hint = ""
            if isinstance(value, str) and _NUMBER.match(value) and "number" in expected:
                hint = " (quoted, or a YAML exponent without a dot such as 1e-3: write 1.0e-3)"
            out.append(f"{path}: expected {expected}, got {_input(value)}{hint}")
            continue
        e = specific[0]
        kind, ctx, value = e["type"], e.get("ctx") or {}, e["input"]
        if kind == "extra_forbidden":
            key = e["parts"][-1]
            parent_parts, parent_ann = _walk(model, tuple(e["loc"][:-1]))
            parent = _mapping_model(parent_ann)
            known = list(parent.model_fields) if parent else []
            allowed = TAKES.get(parent) or ", ".join(known)  # type: ignore[arg-type]
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            what = "parameter" if parent in TAKES else "key"
            name = str(parent_parts[-1]) if parent_parts else (owner or where.rsplit(".", 1)[-1] or "params.yaml")
            out.append(f"{path}: unknown {what}{hint}; {name} takes: {allowed}")
        elif kind == "missing":
            out.append(f"{path}: missing; add it")
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            bound = next(iter(ctx.values()))
            text = {"greater_than_equal": f"is below the minimum of {bound}", "greater_than": f"must be > {bound}",
                    "less_than_equal": f"is above the maximum of {bound}", "less_than": f"must be < {bound}"}[kind]
            out.append(f"{path}: {value!r} {text}")
        elif kind == "too_short":
            out.append(f"{path}: must not be empty")
        elif kind == "literal_error":
            out.append(f"{path}: {value!r} is not one of {ctx.get('expected', '').replace(' or ', ', ')}")
        elif kind == "value_error":
            out.append(f"{path}: {ctx.get('error', e['msg'])}")
        else:
            out.append(f"{path}: invalid value {_input(value)} ({e['msg']})")
    return out


def _check(model: type[BaseModel], value: Any, where: str, errors: list[str], owner: str | None = None) -> Any:
    """``model`` validated from ``value`` (None if invalid: the messages go to ``errors``)."""
    try:
        return model.model_validate({} if value is None else value)
    except ValidationError as e:
        errors.extend(messages(e, where, model, owner))
        return None


# ---- entries of registered methods and metrics ----------------------------------------------------------------------

def _unknown(name: str, known: Iterable[str], what: str) -> str:
    return unknown_name(name, known if isinstance(known, Registry) else sorted(known), what)


def _for_family(entry: Mapping[str, Any], family: str, where: str, errors: list[str]) -> dict[str, Any] | None:
    out = {}
    for k, v in entry.items():
        if isinstance(v, Mapping) and v and set(v) <= set(FAMILIES):
            if family not in v:
                errors.append(f"{where}.{k} is given per family {sorted(v)} but not for {family!r}; add it or limit "
                              f"the entry with 'families'")
                return None
            v = v[family]
        out[k] = v
    return out


def method_entry(name: str, entry: Any, where: str, errors: list[str]) -> None:
    """Check one attribute.methods entry: wrapper keys and the method's (and its base method's) declared params,
    for every architecture family the entry applies to (values may be given per family)."""
    entry = {} if entry is None else entry
    if not isinstance(entry, Mapping):
        errors.append(f"{where}: expected a mapping of params (or {{}}), got {_input(entry)}")
        return
    families = entry.get("families", FAMILIES)
    for family in families if isinstance(families, list) and set(families) <= set(FAMILIES) else FAMILIES:
        found: list[str] = []
        _method_entry(name, entry, family, where, found)
        if found:
            errors.extend(found)
            return


def _method_entry(name: str, entry: Mapping[str, Any], family: str, where: str, errors: list[str]) -> None:
    resolved = _for_family(entry, family, where, errors)
    if resolved is None:
        return
    method = resolved.get("method", name)
    if not isinstance(method, str) or method not in METHODS:
        if "method" in resolved:
            _check(S.EntryKeys, {"method": method}, where, errors)
        else:
            errors.append(f"{where}: {_unknown(name, METHODS, 'attribution method')}; name the method of this "
                          "entry with `method: <name>`")
        return
    base = resolved.get("base", "gradient") if METHODS.get(method).takes_base_params else None
    if base is not None and (not isinstance(base, str) or base not in METHODS):
        _check(_method_model(method, None), {"base": base}, where, errors)
        return
    checked = _check(_method_model(method, base), resolved, where, errors, owner=method)
    if checked is None:
        return
    if checked.layers is None and ("combine" in resolved or "weights" in resolved):
        errors.append(f"{where}: 'combine'/'weights' need 'layers' (a list of layer names)")
    elif checked.layers is not None and "layer" in resolved:
        errors.append(f"{where}: give either layer or layers, not both")
    elif checked.weights is not None and checked.combine == "product":
        errors.append(f"{where}.weights: combine 'product' takes no weights; use 'geometric' or 'sum'")
    elif checked.weights is not None and len(checked.weights) != len(checked.layers or []):
        errors.append(f"{where}.weights: {len(checked.weights)} weights for {len(checked.layers or [])} layers")


def metric_entry(name: str, entry: Any, where: str, errors: list[str]) -> None:
    """Check one metric entry: the stage's keys (samples, methods, sweep) and the metric's declared params."""
    if name not in METRICS:
        errors.append(f"{where}: {_unknown(name, METRICS, 'metric')}")
        return
    if entry is not None and not isinstance(entry, Mapping):
        errors.append(f"{where}: expected a mapping of params (or {{}}), got {_input(entry)}")
        return
    model = _metric_model(name)
    checked = _check(model, entry, where, errors, owner=name)
    if checked is None:
        return
    if len(checked.sweep) > 1:
        errors.append(f"{where}.sweep: sweeps one parameter at a time, got {sorted(checked.sweep)}")
    for param, values in checked.sweep.items():
        if param not in metric_params(name):
            close = difflib.get_close_matches(param, metric_params(name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{where}.sweep.{param}: {name} has no parameter {param!r}{hint}; it takes: "
                          f"{describe(metric_params(name))}")
            continue
        for v in values:
            _check(model, {**(entry or {}), "sweep": {}, param: v}, f"{where}.sweep", errors, owner=name)


# ---- cross-section checks -------------------------------------------------------------------------------------

def _external(m: S.ExternalModel, where: str, errors: list[str]) -> None:
    """One of timm/entry/torchscript; the files it names exist; the entry is 'module:function'."""
    given = [k for k in ("timm", "entry", "torchscript") if getattr(m, k)]
    if len(given) != 1:
        errors.append(f"{where}: name exactly one of timm (with weights), entry or torchscript, got {given or 'none'}")
    if m.timm and not m.weights:
        errors.append(f"{where}.weights: a timm model from a checkpoint needs its weights file")
    if m.entry and (":" not in m.entry or not all(m.entry.split(":"))):
        errors.append(f"{where}.entry: {m.entry!r} is not 'package.module:function'")
    for key in ("torchscript", "weights"):
        if getattr(m, key) and not Path(getattr(m, key)).is_file():
            errors.append(f"{where}.{key}: no file {getattr(m, key)!r}")
    if len(m.mean) != 3 or len(m.std) != 3 or min(m.std) <= 0:
        errors.append(f"{where}: mean and std need 3 values each (std > 0), got {m.mean} and {m.std}")


def _names_in(names: Iterable[str] | None, known: Iterable[str], where: str, what: str, errors: list[str]) -> None:
    """Each of ``names`` must be one of ``known`` (names defined in another section, ``what``)."""
    known = list(known)
    for n in names or []:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            errors.append(f"{where}: {n!r} is not {what}{hint}; known: {', '.join(known)}")


def _given(section: BaseModel | None, key: str) -> bool:
    """Whether params.yaml sets ``key`` in ``section`` (cross-section names are checked against given lists only)."""
    return section is not None and key in section.model_fields_set


def _world(render: S.Render | None, raw: Mapping[str, Any] | None, task: Mapping[str, Any] | None,
           errors: list[str], where: str = "render") -> tuple[World, dict[str, Any]]:
    """The world a task renders in (``render`` with the task's ``world`` on top) and the task's own params."""
    own = {k: v for k, v in (task or {}).items() if k != "world"}
    if render is None:
        return World(), own
    fields = {k: v for k, v in (raw or {}).items() if k in World.__dataclass_fields__ and k != "values"}
    try:
        return task_world(fields, task, where)
    except RenderParamsError as e:
        errors.append(str(e))
        return World(), own


def _pretrained(value: str, where: str, errors: list[str]) -> None:
    """A local diffusers pipeline dir must exist; ``org/name`` that is no local dir is a hub id."""
    path = Path(value).expanduser()
    if path.is_dir():
        return
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", value) and not value.startswith("."):
        return
    errors.append(f"{where}: no directory {value!r}; give an existing diffusers pipeline directory, a hub id "
                  "(org/name), or null to train one")


def _device(name: str, where: str, errors: list[str]) -> None:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        errors.append(f"{where}: {name!r} but CUDA is not available here; use cpu or auto")
    elif name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        errors.append(f"{where}: {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                      "use cuda:0 or auto")


def validate_params(params: Mapping[str, Any], stage: str | None = None, *, task: str | None = None,
                    model: str | None = None, generator: str | None = None) -> S.Params:
    """The validated params; raises ParamsError listing every problem (key path and fix), for ``stage`` also
    its own sections, device, files and command-line ``task``/``model``/``generator``."""
    if not isinstance(params, Mapping):
        raise ParamsError(f"params.yaml must be a mapping of sections, got {_input(params)}")
    errors: list[str] = []
    for name in STAGE_SECTIONS.get(stage or "", ()):
        if params.get(name) is None:
            errors.append(f"params.yaml has no {name!r} section, which stage {stage} reads; add it")
    p = _check(S.Params, params, "", errors, owner="params.yaml")
    if p is None or errors:
        raise ParamsError("\nerror: ".join(errors))

    base = _world(p.render, params.get("render"), None, errors)[0]
    for name, raw in (params.get("tasks") or {}).items():
        where = f"tasks.{name}"
        if name not in S.TASK_PARAMS:
            errors.append(f"{where}: {_unknown(name, TASKS, 'task')}")
        elif _check(S.TASK_PARAMS[name], raw, where, errors) is not None:
            world, own = _world(p.render, params.get("render"), raw, errors, f"{where}.world") \
                if "world" in (raw or {}) else (base, dict(raw or {}))
            try:
                build_task(name, world, own)
            except TaskError as e:
                errors.append(str(e))
    if p.render and p.tasks is not None:
        _names_in(p.render.tasks, p.tasks, "render.tasks", "defined under tasks", errors)

    for name, f in (p.folders or {}).items():
        root = Path(f.root)
        if name in (p.render.tasks if p.render else []):
            errors.append(f"folders.{name}: {name!r} is also in render.tasks; give the imported task another name")
        if not root.is_dir():
            errors.append(f"folders.{name}.root: no folder {f.root!r}")
        for key, want in (("csv", Path.is_file), ("masks", Path.is_dir)):
            if getattr(f, key) and root.is_dir() and not want(root / getattr(f, key)):
                errors.append(f"folders.{name}.{key}: no {'file' if key == 'csv' else 'folder'} "
                              f"{str(root / getattr(f, key))!r}")

    if p.train:
        if _given(p.render, "tasks"):
            _names_in(p.train.tasks, [*p.render.tasks, *(p.folders or {})], "train.tasks",
                      "in render.tasks or folders", errors)
        if isinstance(p.train.min_test_accuracy, dict):
            for t in p.train.tasks:
                if t not in p.train.min_test_accuracy:
                    errors.append(f"train.min_test_accuracy has no entry for task {t!r} (it has "
                                  f"{sorted(p.train.min_test_accuracy)}); add one")
        for name, m in p.train.models.items():
            if isinstance(m, S.ExternalModel):
                _external(m, f"train.models.{name}", errors)
                continue
            for sub, cfg in (("", m), (".random_labels", m and m.random_labels)):
                late = [e for e in (cfg.checkpoint_epochs if cfg else []) if e > cfg.epochs]
                if late:
                    errors.append(f"train.models.{name}{sub}.checkpoint_epochs {late} lie outside "
                                  f"1..epochs={cfg.epochs}")
            spec = m.model if m else None
            if isinstance(spec, S.ModelSpec) and spec.pretrained_file and not Path(spec.pretrained_file).is_file():
                errors.append(f"train.models.{name}.model.pretrained_file: no file {spec.pretrained_file!r}")

    if p.concepts:
        c = p.concepts
        task_def = (params.get("tasks") or {}).get(c.task) if p.tasks is not None else None
        if p.tasks is not None and c.task not in p.tasks:
            errors.append(f"concepts.task: {_unknown(c.task, p.tasks, 'task')}")
        elif p.tasks is not None and c.task != "presence":
            errors.append(f"concepts.task: {c.task!r} has no concepts; use a task with concepts and a rule (presence)")
        elif task_def and c.concepts is not None:
            for n in c.concepts:
                if n not in task_def["concepts"]:
                    errors.append(f"concepts.concepts: {_unknown(n, task_def['concepts'], 'concept')} "
                                  f"(tasks.{c.task}.concepts)")
        if _given(p.train, "models"):
            _names_in(c.models, p.train.models, "concepts.models", "in train.models", errors)
        d = c.diffusion
        if d is not None:
            if len(d.channels) < 2 or any(ch % 8 or ch % d.attention_head_dim for ch in d.channels):
                errors.append(f"concepts.diffusion.channels: {d.channels}: give >= 2 widths, each a multiple of 8 and "
                              f"of attention_head_dim={d.attention_head_dim}")
            elif d.vae_channels and (any(ch % 8 for ch in d.vae_channels)
                                     or d.resolution % 2 ** (len(d.vae_channels) - 1)):
                errors.append(f"concepts.diffusion.vae_channels: {d.vae_channels}: give widths that are multiples of 8, "
                              f"with resolution={d.resolution} divisible by 2^(len(vae_channels)-1); or [] for pixels")
            elif d.resolution % (factor := 2 ** (len(d.channels) - 1 + max(len(d.vae_channels) - 1, 0))):
                errors.append(f"concepts.diffusion.resolution: {d.resolution} must be divisible by "
                              f"2^(len(channels)-1) = {2 ** (len(d.channels) - 1)}"
                              + (f" times the autoencoder's 2^(len(vae_channels)-1): {factor}" if d.vae_channels else ""))
            if d.pretrained:
                _pretrained(d.pretrained, "concepts.diffusion.pretrained", errors)

    if p.attribute:
        for name, entry in p.attribute.methods.items():
            method_entry(name, entry, f"attribute.methods.{name}", errors)
        if _given(p.train, "tasks"):
            _names_in(p.attribute.tasks, p.train.tasks, "attribute.tasks", "in train.tasks", errors)
        if p.attribute.workers > 1 and p.attribute.ray is not None and p.attribute.ray.address:
            errors.append(f"attribute.workers: {p.attribute.workers} starts a local Ray instance but attribute.ray."
                          f"address joins the cluster at {p.attribute.ray.address!r}; set one of them")

    if p.evaluate:
        ev = p.evaluate
        for name, entry in ev.metrics.items():
            metric_entry(name, entry, f"evaluate.metrics.{name}", errors)
        for block, sub in (("layer_study", ev.layer_study), ("meta_saliency", ev.meta_saliency)):
            for name, entry in (sub.metrics if sub else {}).items():
                metric_entry(name, entry, f"evaluate.{block}.metrics.{name}", errors)
        if p.attribute is not None:
            known = list(p.attribute.methods)
            named = {"evaluate.methods": ev.methods,
                     "evaluate.meta_saliency.methods": ev.meta_saliency and ev.meta_saliency.methods}
            named.update({f"evaluate.metrics.{n}.methods": (e or {}).get("methods") for n, e in ev.metrics.items()})
            named.update({f"evaluate.layer_study.entries.{g}": v
                          for g, v in (ev.layer_study.entries if ev.layer_study else {}).items()})
            for where, names in named.items():
                _names_in(names if isinstance(names, list) else None, known, where,
                          "an attribute.methods entry", errors)

    if stage is not None and not errors:
        _stage_checks(p, params, stage, task, model, generator, errors)
    if errors:
        raise ParamsError("\nerror: ".join(dict.fromkeys(errors)))
    return p


def _stage_checks(p: S.Params, params: Mapping[str, Any], stage: str, task: str | None, model: str | None,
                  generator: str | None, errors: list[str]) -> None:
    section = STAGE_DEVICE.get(stage)
    if section and getattr(p, section) is not None:
        _device(getattr(p, section).device, f"{section}.device", errors)
    if stage == "render" and task is not None and task not in TASKS:
        errors.append(f"--task {task}: {_unknown(task, TASKS, 'task')}")
    listed = {"train": ("train.tasks", p.train and p.train.tasks),
              "attribute": ("attribute.tasks", p.attribute and p.attribute.tasks),
              "evaluate": ("attribute.tasks", p.attribute and p.attribute.tasks)}
    # stages train_vqa, attribute_vqa, evaluate_vqa: a VQA task with a question model
    vqa = stage in ("train", "attribute", "evaluate") and p.train is not None and task in p.train.vqa_tasks
    if task is not None and not vqa and stage in listed and listed[stage][1] and task not in listed[stage][1]:
        where, known = listed[stage]
        errors.append(f"--task {task}: {_unknown(task, known, 'task')} ({where})")
    if model is not None and stage in ("train", "attribute", "evaluate") and p.train is not None:
        models, where = (p.train.vqa_models, "train.vqa_models") if vqa else (p.train.models, "train.models")
        if (vqa or "models" in params["train"]) and model not in models:
            errors.append(f"--model {model}: {_unknown(model, models, 'model')} ({where})")
    if stage == "train" and model is not None and p.train and (m := p.train.models.get(model)) is not None:
        spec = getattr(m, "model", None)
        if isinstance(spec, S.ModelSpec) and spec.checkpoint and not Path(spec.checkpoint).is_dir():
            errors.append(f"train.models.{model}.model.checkpoint: no checkpoint directory {spec.checkpoint!r}")
    if stage == "attribute" and p.attribute and (p.attribute.workers > 1 or p.attribute.ray is not None) \
            and importlib.util.find_spec("ray") is None:
        errors.append(f"attribute.{'workers' if p.attribute.workers > 1 else 'ray'} runs the stage on Ray, which is "
                      "not installed here: pip install 'salbench[ray]' (or workers: 0 and no ray key: in-process)")
    if stage == "import" and task is not None and task not in (p.folders or {}):
        errors.append(f"--task {task}: {_unknown(task, p.folders or {}, 'task')} (folders)")
    if stage == "generate" and generator is not None and generator not in S.GENERATORS:
        errors.append(f"--generator {generator}: {_unknown(generator, S.GENERATORS, 'generator')}")


# ---- entry points -------------------------------------------------------------------------------------------------

def check_params_file(path: str | Path, stage: str | None = None, **selectors: str | None) -> dict[str, Any]:
    """Load and validate a params file (see :func:`validate_params`); returns the raw params."""
    params = load_params(path)
    validate_params(params, stage, **selectors)
    return params


def preflight(stage: str) -> None:
    """When run as ``stages/<stage>.py``: validate its ``--params`` file (default params.yaml) and command-line
    selectors, printing ``error: ...`` and exiting 2 on a problem. Stage scripts call it before their heavy
    imports, so a bad params.yaml fails in about a second, before any work."""
    if Path(sys.argv[0]).stem != stage or {"-h", "--help"} & set(sys.argv[1:]):
        return
    ap = argparse.ArgumentParser(add_help=False)
    for opt in ("--params", "--task", "--model", "--generator"):
        ap.add_argument(opt)
    args, _ = ap.parse_known_args()
    try:
        check_params_file(args.params or "params.yaml", stage, task=args.task, model=args.model,
                          generator=args.generator)
    except ParamsError as e:
        if os.environ.get("SALBENCH_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def listing(kind: str) -> str:
    """``methods`` or ``metrics``: each registered name with its params (types, ranges, defaults)."""
    if kind == "methods":
        return "\n".join(f"{n}: {describe(method_params(n))}"
                         + (" (and the base method's params)" if METHODS.get(n).takes_base_params else "")
                         for n in METHODS.names())
    if kind == "metrics":
        return "\n".join(f"{n}: {describe(metric_params(n))}" for n in METRICS.names())
    raise ParamsError(f"unknown listing {kind!r}; use methods or metrics")


__all__ = ["STAGE_SECTIONS", "check_params_file", "describe", "listing", "messages", "method_entry",
           "method_params", "metric_entry", "metric_params", "preflight", "validate_params"]
