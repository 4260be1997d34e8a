"""Declared parameters of registered methods and metrics: names, types, defaults (from the signature) and
constraints (ranges, allowed names), turned into pydantic models that validate params.yaml entries.

A registered function declares its params by its signature; ranges and name choices are added where it is
registered, e.g. ``@declare(tolerance=Ge(0), pooling=OneOf(POOLINGS))`` above ``@METRICS.register(...)``
(or ``Annotated[int, Ge(1)]`` in the signature). ``python -m salbench.config methods|metrics`` lists them.
"""
from __future__ import annotations

import difflib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, TypeVar

import annotated_types as at
from pydantic import AfterValidator, BaseModel, ConfigDict, create_model

from ..registry import Registry, UnknownNameError

F = TypeVar("F")
CONSTRAINTS = "__salbench_constraints__"


class OneOf:
    """Constraint: a name (or each name of a list) is one of ``names`` (a Registry or an iterable of names)."""

    def __init__(self, names: Iterable[str], what: str = "name") -> None:
        self._names, self.what = names, getattr(names, "kind", what)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __call__(self, value: Any) -> Any:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v not in self.names:
                raise ValueError(unknown_name(v, self._names, self.what))
        return value

    def __str__(self) -> str:
        return "in {" + ", ".join(self.names) + "}"


def unknown_name(name: str, known: Iterable[str], what: str) -> str:
    """The message for an unknown ``name``: a Registry's own (it lists close matches), or the same for names."""
    if isinstance(known, Registry):
        try:
            known.get(name)
        except UnknownNameError as e:
            return str(e)
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; known: {', '.join(known)}"


def declare(**constraints: Any) -> Callable[[F], F]:
    """Attach constraints (annotated_types such as ``Ge(1)``, or :class:`OneOf`) to a registered function's
    keyword params; the signature gives their types and defaults."""

    def decorator(fn: F) -> F:
        setattr(fn, CONSTRAINTS, {**getattr(fn, CONSTRAINTS, {}), **constraints})
        return fn

    return decorator


@dataclass(frozen=True)
class Param:
    """One declared parameter: its type hint (``Annotated`` constraints included), default and constraints."""

    name: str
    annotation: Any
    default: Any = inspect.Parameter.empty
    constraints: tuple[Any, ...] = ()

    def describe(self) -> str:
        """E.g. ``steps (int >= 1, default 32)``."""
        kind = " ".join([type_name(self.annotation), *map(constraint_text, self.constraints)])
        default = "" if self.default is inspect.Parameter.empty else f", default {yaml_value(self.default)}"
        return f"{self.name} ({kind}{default})"


def signature_params(fn: Callable[..., Any], skip: Iterable[str] = (),
                     constraints: Mapping[str, Any] | None = None) -> dict[str, Param]:
    """The named params of ``fn`` (not ``*args``/``**kwargs``, not ``skip``) with their hints and defaults, plus
    the constraints declared on ``fn`` (:func:`declare`) or given here."""
    hints = typing.get_type_hints(fn, include_extras=True)
    extra = {**getattr(fn, CONSTRAINTS, {}), **(constraints or {})}
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(p.name, Any)
        found: list[Any] = []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *found = typing.get_args(hint)
        c = extra.get(p.name)
        found += [] if c is None else list(c) if isinstance(c, (list, tuple)) else [c]
        out[p.name] = Param(p.name, hint, p.default, tuple(found))
    unknown = set(extra) - set(out)
    if unknown:
        raise TypeError(f"constraints on unknown params {sorted(unknown)} of {fn}")
    return out


def _validator(c: Any) -> Any:
    if isinstance(c, OneOf):
        return AfterValidator(c)
    if isinstance(c, at.BaseMetadata):
        return c
    raise TypeError(f"unsupported constraint {c!r}")


STRICT = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


def params_model(name: str, params: Mapping[str, Param]) -> type[BaseModel]:
    """A pydantic model (unknown keys forbidden, strict types) of ``params``; a param without a default is
    required."""
    fields = {}
    for p in params.values():
        hint = typing.Annotated[(p.annotation, *map(_validator, p.constraints))] if p.constraints else p.annotation
        fields[p.name] = (hint, ... if p.default is inspect.Parameter.empty else p.default)
    return create_model(name, __config__=STRICT, **fields)


_NAMES = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null", Any: "any"}


def type_name(hint: Any) -> str:
    """A short YAML-minded name of a type hint: ``int``, ``list[str] | null``, ``float | str``."""
    if hint in _NAMES:
        return _NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):  # YAML has no other classes (e.g. a Method object)
        return " | ".join(type_name(a) for a in args if a in _NAMES or typing.get_origin(a) is not None)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin is not None:
        base = {list: "list", tuple: "list", dict: "mapping"}.get(origin, getattr(origin, "__name__", str(origin)))
        if base in ("Sequence", "list") or origin in (list, tuple):
            return f"list[{type_name(args[0])}]" if args else "list"
        return f"{base}[{', '.join(type_name(a) for a in args if a is not Ellipsis)}]"
    return getattr(hint, "__name__", str(hint))


def constraint_text(c: Any) -> str:
    """E.g. ``>= 1`` for ``Ge(1)``, ``in {a, b}`` for ``OneOf``."""
    for cls, op, attr in ((at.Ge, ">=", "ge"), (at.Gt, ">", "gt"), (at.Le, "<=", "le"), (at.Lt, "<", "lt")):
        if isinstance(c, cls):
            return f"{op} {getattr(c, attr)}"
    return str(c)


def yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(yaml_value, v)) + "]"
    return str(v)
