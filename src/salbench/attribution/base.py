"""The uniform method interface, the method registry, and multi-method evaluation.

Every method is called as ``method(model, images, targets, batch_size=32, **params) -> maps`` with
images N×C×H×W (float, any device), targets LongTensor N, and maps N×C'×H×W at input resolution
on ``images.device`` (C' = C for input-space methods, 1 for layer methods). ``batch_size`` bounds
the inputs per forward pass on the model's device (images × IG steps or noise samples). Methods that read a
plain forward/backward pass also expose :meth:`Method.plan`, which lets :func:`attribute_many`
(and the attribute stage) serve them all from shared passes.

A method that reads per-sample inputs besides the images declares them in ``needs`` (e.g. the GT-mask
controls: ``("masks",)``) and takes each as a keyword of that name, a tensor with N along its first
dimension (masks: N×H×W bool); :func:`attribute_many` hands each method the inputs it declares.

Question-conditioned models take further model inputs: every method and :func:`attribute_many` accept
``additional_inputs`` (a mapping of tensors with N rows, e.g. ``{"tokens": N×L}``, captum's
``additional_forward_args``); the model is called ``model(images, *additional_inputs.values())`` and the maps
explain the target w.r.t. the images, those inputs held fixed. Methods with their own passes receive them
as the keyword ``additional_inputs`` and pass them on, sliced like the images.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from ..config.declare import OneOf, Param, signature_params
from ..errors import SalbenchError
from ..registry import Registry
from .engine import PLAIN, Plan, Reader, Request, _check_inputs, additional_args, execute
from .model import resolve_layer

Additional = Mapping[str, Tensor] | None
"""Further model inputs with N rows each (``model(images, *values)``), or None for a plain classifier."""


def slice_additional(additional_inputs: Additional, index: slice) -> Additional:
    """The rows ``index`` of every additional input (None stays None)."""
    return None if additional_inputs is None else {k: v[index] for k, v in additional_inputs.items()}


class Method:
    """A saliency method with the uniform call signature; subclasses define ``plan`` or ``compute``."""

    name = "method"
    constraints: Mapping[str, Any] = {}  # ranges and name choices of params, declared by `register`
    takes_base_params = False  # also takes the params of the method named by its `base` param
    needs: tuple[str, ...] = ()
    """Per-sample inputs the method reads besides the images, passed as keywords of these names."""

    def params(self) -> dict[str, Param]:
        """The params this method takes (types and defaults from its signature, constraints from `register`)."""
        return signature_params(self.plan, skip=("model",), constraints=self.constraints)

    def plan(self, model: nn.Module, **params: Any) -> Plan | None:
        """Engine requests for these params, or None when the method runs its own passes."""
        return None

    def layers(self, model: nn.Module, **params: Any) -> list[str]:
        """Canonical names of the layers the method reads ([] for input-space methods)."""
        plan = self.plan(model, **params)
        return [] if plan is None else sorted({r.layer for r in plan.requests if r.layer is not None})

    def compute(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
                additional_inputs: Additional = None, **params: Any) -> Tensor:
        raise NotImplementedError(f"{self.name} has neither an engine plan nor its own computation")

    def __call__(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int = 32,
                 additional_inputs: Additional = None, **params: Any) -> Tensor:
        _check_inputs(images, targets)
        check_needs(self, len(images), params)
        additional_args(additional_inputs, len(images))
        plan = self.plan(model, **params)
        if plan is not None:
            return execute(model, images, targets, [plan], batch_size=batch_size,
                           additional_inputs=additional_inputs)[0]
        return self.compute(model, images, targets.long(), batch_size=batch_size,
                            additional_inputs=additional_inputs, **params)

    def __repr__(self) -> str:
        return f"<attribution method {self.name}>"


METHODS: Registry[Method] = Registry("attribution method")


def register(name: str, method: Method, **constraints: Any) -> Method:
    """Register ``method`` under its params.yaml name, declaring ranges and choices of its params
    (e.g. ``steps=Ge(1)``, see :mod:`salbench.config.declare`)."""
    method.name, method.constraints = name, constraints
    return METHODS.register(name)(method)


def get_method(method: str | Method) -> Method:
    """A method by registry name (unknown names list the known ones), or the method itself."""
    return method if isinstance(method, Method) else METHODS.get(method)


def check_needs(method: Method, n: int, given: Mapping[str, Any]) -> None:
    """Raise unless every input ``method.needs`` is in ``given`` as a tensor with ``n`` rows."""
    for key in method.needs:
        value = given.get(key)
        if not isinstance(value, Tensor) or value.dim() == 0 or len(value) != n:
            got = "nothing" if value is None else f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
            raise SalbenchError(f"method {method.name!r} needs {key}=<tensor with {n} rows, one per image>, got "
                                f"{got}; pass it as a keyword (attribute_many(..., {key}=...) passes it on). A "
                                f"metric that recomputes maps on new inputs has no {key} to give: leave "
                                f"{method.name!r} out of its methods")


def reject_needs(base: Method, wrapper: str) -> None:
    """Wrappers call their base on transformed or sliced images; a base with per-sample inputs cannot follow."""
    if base.needs:
        raise SalbenchError(f"{wrapper} cannot wrap {base.name!r}: it reads per-sample inputs {list(base.needs)} "
                            "(a control map); use it without wrappers")


def check_params(name: str, params: Mapping[str, Any], known: Sequence[str]) -> None:
    """Reject parameters a method does not take, listing the ones it does."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(f"{name}: unknown parameter(s) {unknown}; known: {sorted(known) or 'none'}")


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


class InputMethod(Method):
    """A method that reads the input and its gradient from one pass (``layer`` is not a parameter)."""

    def __init__(self, read: Reader, rule: str = "gradient") -> None:
        self.read, self.rule = read, rule

    def plan(self, model: nn.Module, **params: Any) -> Plan:
        check_params(self.name, params, [])
        return Plan((Request(self.read, None, rule=self.rule),))


class LayerMethod(Method):
    """A method that reads one layer's activation and gradient from one pass.

    Parameters: ``layer`` (module name; default: the family's default layer) and the reader's
    keyword options, whose defaults are ``defaults``; options named in ``choices`` are checked
    against that registry before any pass runs.
    """

    def __init__(self, read: Reader, choices: Mapping[str, Registry] | None = None, **defaults: Any) -> None:
        self.read, self.choices, self.defaults = read, dict(choices or {}), defaults

    def params(self) -> dict[str, Param]:
        choices = {k: OneOf(r) for k, r in self.choices.items()}
        options = signature_params(self.read, skip=("act", "grad"), constraints={**choices, **self.constraints})
        return {"layer": Param("layer", str | None, None),  # type: ignore[arg-type]
                **{k: dataclasses.replace(options[k], default=v) for k, v in self.defaults.items()}}

    def plan(self, model: nn.Module, layer: str | None = None, **options: Any) -> Plan:
        check_params(self.name, options, list(self.defaults))
        for key, registry in self.choices.items():
            registry.get(options.get(key, self.defaults[key]))
        merged = {k: _hashable(v) for k, v in {**self.defaults, **options}.items()}
        return Plan((Request(self.read, resolve_layer(model, layer), tuple(sorted(merged.items())), PLAIN),))


class FunctionMethod(Method):
    """A method with its own passes, from a function ``fn(model, images, targets, *, batch_size, **params)``;
    ``needs`` names keyword arguments of ``fn`` that are per-sample inputs rather than params. A function
    that calls the model takes ``additional_inputs`` (see the module docstring); one that does not (the
    controls, random maps) need not, and ignores them."""

    fixed = ("model", "images", "targets", "batch_size", "additional_inputs")  # the call's arguments

    def __init__(self, fn: Callable[..., Tensor], needs: Sequence[str] = ()) -> None:
        self.fn, self.needs = fn, tuple(needs)
        self.known = [p for p in inspect.signature(fn).parameters if p not in self.fixed]
        missing = [k for k in self.needs if k not in self.known]
        if missing:
            raise TypeError(f"{fn.__name__} does not take the inputs it needs: {missing}")

    def params(self) -> dict[str, Param]:
        return signature_params(self.fn, skip=(*self.fixed, *self.needs), constraints=self.constraints)

    def compute(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
                additional_inputs: Additional = None, **params: Any) -> Tensor:
        check_params(self.name, params, self.known)
        if "additional_inputs" in inspect.signature(self.fn).parameters:
            params["additional_inputs"] = additional_inputs
        return self.fn(model, images, targets, batch_size=batch_size, **params)


def attribute_many(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    methods: Sequence[tuple[str | Method, Mapping[str, Any]]],
    *,
    batch_size: int = 32,
    additional_inputs: Additional = None,
    **inputs: Tensor,
) -> list[Tensor]:
    """Maps for several (method, params) at once; every method with an engine plan shares passes.

    ``inputs``: per-sample inputs (e.g. ``masks`` N×H×W bool), each handed to the methods that declare
    it in ``needs``; ``additional_inputs``: further model inputs, e.g. ``{"tokens": N×L}`` for a VQA model
    (``model(images, *additional_inputs.values())``, see the module docstring). Returns one N×C'×H×W
    tensor per entry, in order.
    """
    _check_inputs(images, targets)
    additional_args(additional_inputs, len(images))
    resolved = [(get_method(m), dict(p)) for m, p in methods]
    for method, params in resolved:
        check_needs(method, len(images), inputs)
        params.update({key: inputs[key] for key in method.needs})
    plans = [m.plan(model, **p) for m, p in resolved]
    fused = [i for i, plan in enumerate(plans) if plan is not None]
    out: list[Tensor | None] = [None] * len(resolved)
    for i, maps in zip(fused, execute(model, images, targets, [plans[i] for i in fused], batch_size=batch_size,
                                        additional_inputs=additional_inputs)):
        out[i] = maps
    for i, (method, params) in enumerate(resolved):
        if out[i] is None:
            out[i] = method(model, images, targets, batch_size=batch_size, additional_inputs=additional_inputs,
                            **params)
    return out
