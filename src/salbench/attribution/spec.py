"""Methods from params.yaml entries.

An entry is ``{method: <registry name>, <method params>..., layers: [...], combine: product,
weights: [...], meta_lr: 0.01, explain: predicted, families: [cnn]}``; every key is optional
(``method`` defaults to the entry's name). Wrapper keys build, innermost first: multi-layer
combination (``layers``/``combine``/``weights``), meta-saliency (``meta_lr``), class selection
(``explain``). ``families`` limits the entry to some architecture families, and any value may be
given per family, e.g. ``layer: {cnn: layer3, vit: blocks.-2.norm1}``.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..registry import UnknownNameError
from .base import Method, get_method
from .wrappers import ExplainClass, MetaSaliency, MultiLayer

WRAPPER_KEYS = ("method", "layers", "combine", "weights", "meta_lr", "explain", "families")
FAMILIES = ("cnn", "vit")


def _for_family(value: Any, family: str | None, where: str) -> Any:
    if not (isinstance(value, Mapping) and value and set(value) <= set(FAMILIES)):
        return value
    if family not in value:
        raise ValueError(f"{where} is given per family {sorted(value)} but not for {family!r}; add it or "
                         f"limit the entry with 'families'")
    return value[family]


def build(name: str, entry: Mapping[str, Any] | None = None,
          family: str | None = None) -> tuple[Method, dict[str, Any]] | None:
    """The method an entry describes and the params to call it with (everything that is not a wrapper key);
    None if ``families`` excludes ``family``."""
    entry = {k: _for_family(v, family, f"{name}.{k}") for k, v in (entry or {}).items()}
    if family is not None and family not in entry.get("families", FAMILIES):
        return None
    method = get_method(entry.get("method", name))
    if "layers" in entry:
        method = MultiLayer(method, entry["layers"], entry.get("combine", "product"), entry.get("weights"))
    elif "combine" in entry or "weights" in entry:
        raise ValueError(f"{name}: 'combine'/'weights' need 'layers' (a list of layer names)")
    if "meta_lr" in entry:
        method = MetaSaliency(method, entry["meta_lr"])
    if "explain" in entry:
        method = ExplainClass(method, entry["explain"])
    return method, {k: v for k, v in entry.items() if k not in WRAPPER_KEYS}


def applicable(entries: Mapping[str, Mapping[str, Any] | None], family: str,
               model: nn.Module) -> tuple[dict[str, tuple[Method, dict[str, Any], str | None]], list[str]]:
    """The entries built for ``family`` whose layers exist in ``model`` (name -> (method, params, canonical
    layers or None)), and the names of those skipped because they name layers the model does not have (e.g. the
    timm ResNet layers of the layer study on a question-conditioned CNN)."""
    kept, skipped = {}, []
    for name, entry in entries.items():
        built = build(name, entry, family)
        if built is None:
            continue
        try:
            layer = ",".join(built[0].layers(model, **built[1])) or None
        except UnknownNameError:
            skipped.append(name)
            continue
        kept[name] = (*built, layer)
    return kept, skipped
