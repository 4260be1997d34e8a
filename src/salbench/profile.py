"""Parameter profiles: ``profiles/<name>.yaml`` holds overrides of params.yaml.

    python -m salbench.profile paper            # prints `-S key=value ...` for `dvc exp run`
    python -m salbench.profile paper --write    # merges the overrides into params.yaml, comments kept
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping

import yaml
from ruamel.yaml import YAML

from .errors import cli
from .io import atomic_file
from .params import ParamsError, load_params


def load_profile(name: str, root: Path = Path(".")) -> dict[str, Any]:
    path = root / "profiles" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise ParamsError(f"unknown profile {name!r}; known profiles: {known}")
    return yaml.safe_load(path.read_text()) or {}


def leaves(over: Mapping[str, Any], prefix: str = "", base: Any = None) -> Iterator[tuple[str, Any]]:
    """Dotted keys of the overrides down to non-mapping values (lists are leaves); with ``base`` (the params), a
    mapping whose params value is not a mapping (e.g. null) is one leaf: its keys cannot be set one by one."""
    for k, v in over.items():
        key = f"{prefix}{k}"
        sub = base.get(k) if isinstance(base, Mapping) else None
        if isinstance(v, Mapping) and v and (base is None or isinstance(sub, Mapping)):
            yield from leaves(v, f"{key}.", sub)
        else:
            yield key, v


def merge(base: Mapping[str, Any], over: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``base`` with ``over`` applied; an override key that params.yaml lacks is an error (a typo)."""
    out = dict(base)
    for k, v in over.items():
        if k not in out:
            raise ParamsError(f"profile sets {where}{k}, which params.yaml does not have")
        out[k] = merge(out[k], v, f"{where}{k}.") if isinstance(v, Mapping) and isinstance(out[k], Mapping) else v
    return out


def set_params_args(over: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` (values in the override grammar of DVC's Hydra: JSON lists and
    scalars, mappings as ``{key:value,...}``); ``base``: the params, see :func:`leaves`."""
    return [a for k, v in leaves(over, base=base) for a in ("-S", f"{k}={v if isinstance(v, str) else _value(v)}")]


def _value(v: Any) -> str:
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return json.dumps(v, separators=(",", ":"))


def _apply(doc: MutableMapping[str, Any], over: Mapping[str, Any], tag: str) -> None:
    """Set ``over`` in the ruamel ``doc``; each value set is marked ``[<tag>; default <old>]`` in front of its
    end-of-line comment, which describes the default (the old value), not the profile's; values inside a flow
    mapping (``{a: 1}``) are set without a mark."""
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(doc.get(k), Mapping):
            _apply(doc[k], v, tag)
            continue
        if doc.get(k) == v:
            continue
        if doc.fa.flow_style():  # {a: 1, b: 2}: a comment inside would break the line
            doc[k] = v
            continue
        note = f"[{tag}; default {_value(doc.get(k))}]"
        old = doc.ca.items.get(k, [None] * 4)[2]
        doc[k] = v
        if old is not None and old.value.lstrip().startswith("#"):
            old.value = old.value.replace("#", f"# {note}", 1)
        else:
            doc.yaml_add_eol_comment(note, k)


def write_profile(params: Path, over: Mapping[str, Any], name: str = "profile") -> None:
    """Merge ``over`` into the params file in place, keeping its comments and layout (ruamel round trip); each
    value the profile sets is marked ``[profile <name>; default <old value>]`` in its comment."""
    merge(load_params(params), over)  # validates every key first
    rt = YAML()
    rt.width = 120
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(params.read_text())
    _apply(doc, over, f"profile {name}")
    with atomic_file(params) as f:
        rt.dump(doc, f)


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--write", action="store_true", help="merge into params.yaml instead of printing -S args")
    args = ap.parse_args()
    over = load_profile(args.name, Path(args.params).parent)
    if args.write:
        write_profile(Path(args.params), over, args.name)
    else:
        base = load_params(args.params)
        merge(base, over)  # validates every key
        print(" ".join(set_params_args(over, base)))


if __name__ == "__main__":
    main()
