"""Reading params.yaml sections, with errors that name the offending key."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import SalbenchError


class ParamsError(SalbenchError, ValueError):
    """A params.yaml problem; the message names the key and the fix."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found; run from the repository root or pass --params")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML; fix it here: {e}") from None


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``params[name]`` (dotted names allowed) or an error naming the missing key."""
    node: Any = params
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ParamsError(f"params.yaml has no {name!r} section")
        node = node[part]
    return dict(node or {})


def check_keys(p: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Reject unknown keys (typos would otherwise be ignored silently)."""
    known = list(known)
    for k in p:
        if k not in known:
            close = difflib.get_close_matches(k, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamsError(f"unknown key {where}.{k}{hint}; known keys: {sorted(known)}")
