"""Wrappers that take any method and return a method with the same call signature.

- :class:`MultiLayer`: a layer method at several layers, min-max normalised per image, combined by
  product (default), weighted sum or weighted geometric product (Rebuffi et al. 2020).
- :class:`MetaSaliency`: the map after one plain SGD step on the explained class's cross-entropy,
  taken for each image separately; the weights are restored bit-exactly and checked.
- :class:`ExplainClass`: explain the predicted, the true or the lowest-softmax class.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from .base import Additional, Method, get_method, reject_needs, slice_additional
from .engine import Plan
from .model import attribution_mode, model_device


def minmax(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-image min-max normalisation of N×C×H×W maps to [0, 1] (constant maps become 0)."""
    lo = maps.amin(dim=(1, 2, 3), keepdim=True)
    hi = maps.amax(dim=(1, 2, 3), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(eps)


COMBINATIONS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("layer combination")
# Each takes normalised maps L×N×C×H×W and weights L and returns N×C×H×W.
COMBINATIONS.register("product")(lambda maps, w: maps.prod(0))
COMBINATIONS.register("sum")(lambda maps, w: (w.view(-1, 1, 1, 1, 1) * maps).sum(0))
COMBINATIONS.register("geometric")(lambda maps, w: (maps.clamp_min(0) ** w.view(-1, 1, 1, 1, 1)).prod(0))


def combine_layers(maps: Sequence[Tensor], mode: str = "product", weights: Sequence[float] | None = None) -> Tensor:
    """Combine per-layer N×C×H×W maps after per-image min-max normalisation.

    ``weights`` (one per layer, default uniform 1/L) apply to "sum" and "geometric"; "product" has none.
    """
    fn = COMBINATIONS.get(mode)
    if weights is not None and mode == "product":
        raise ValueError("combine='product' takes no weights; use 'geometric' for a weighted product")
    if weights is not None and len(weights) != len(maps):
        raise ValueError(f"got {len(weights)} weights for {len(maps)} layers")
    stacked = torch.stack([minmax(m) for m in maps])
    w = torch.full((len(maps),), 1.0 / len(maps)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    return fn(stacked, w.to(stacked))


class MultiLayer(Method):
    """``base`` at each of ``layers`` (its ``layer`` parameter), combined by :func:`combine_layers`.

    A base with an engine plan is evaluated at all layers in one shared pass.
    """

    def __init__(self, base: str | Method, layers: Sequence[str], combine: str = "product",
                 weights: Sequence[float] | None = None) -> None:
        if not layers:
            raise ValueError("MultiLayer needs at least one layer")
        COMBINATIONS.get(combine)
        self.base, self.layer_names, self.mode = get_method(base), list(layers), combine
        reject_needs(self.base, "multi-layer combination")
        self.weights = None if weights is None else list(weights)
        self.name = f"{self.base.name}[{'*'.join(self.layer_names)}]"

    def _combine(self, results: list[Tensor], images: Tensor) -> Tensor:
        return combine_layers(results, self.mode, self.weights)

    def layers(self, model: nn.Module, **params: Any) -> list[str]:
        return sorted({name for layer in self.layer_names for name in self.base.layers(model, layer=layer, **params)})

    def plan(self, model: nn.Module, **params: Any) -> Plan | None:
        plans = [self.base.plan(model, layer=layer, **params) for layer in self.layer_names]
        if any(p is None or len(p.requests) != 1 for p in plans):
            return None
        return Plan(tuple(p.requests[0] for p in plans), self._combine)

    def compute(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
                additional_inputs: Additional = None, **params: Any) -> Tensor:
        maps = [self.base(model, images, targets, batch_size=batch_size, additional_inputs=additional_inputs,
                          layer=layer, **params) for layer in self.layer_names]
        return self._combine(maps, images)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def _restore(model: nn.Module, saved: dict[str, Tensor]) -> None:
    """Copy the saved tensors back and verify the state dict is bit-identical."""
    current = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, v in saved.items():
            current[k].copy_(v)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, saved[k])]
    if changed:
        raise RuntimeError(f"meta-saliency failed to restore the model weights exactly: {changed[:5]}")


class MetaSaliency(Method):
    """``base`` computed after one SGD step (learning rate ``lr``) on the cross-entropy of each image's
    explained class. Each image gets its own step: a step on a batch would make an image's map depend
    on its batch-mates, so this wrapper loops over images, the one place where that is inherent."""

    def __init__(self, base: str | Method, lr: float) -> None:
        self.base, self.lr = get_method(base), float(lr)
        reject_needs(self.base, "meta-saliency")
        self.name = f"meta_{self.base.name}"

    def layers(self, model: nn.Module, **params: Any) -> list[str]:
        return self.base.layers(model, **params)

    def compute(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
                additional_inputs: Additional = None, **params: Any) -> Tensor:
        device, saved = model_device(model), _snapshot(model)
        modes = [(m, m.training) for m in model.modules()]
        weights = list(model.parameters())
        flags = [p.requires_grad for p in weights]
        maps = []
        try:
            model.eval()
            for i in range(len(images)):
                x, t, extra = images[i:i + 1], targets[i:i + 1], slice_additional(additional_inputs, slice(i, i + 1))
                with torch.enable_grad():
                    for p in weights:
                        p.requires_grad_(True)
                    args = [a.to(device) for a in (extra or {}).values()]
                    loss = F.cross_entropy(model(x.to(device), *args), t.to(device))
                    grads = torch.autograd.grad(loss, weights, allow_unused=True)
                with torch.no_grad():
                    for p, g, flag in zip(weights, grads, flags):
                        p.requires_grad_(flag)
                        if g is not None:
                            p.sub_(self.lr * g)
                maps.append(self.base(model, x, t, batch_size=batch_size, additional_inputs=extra, **params))
                _restore(model, saved)
        finally:
            _restore(model, saved)
            for p, flag in zip(weights, flags):
                p.requires_grad_(flag)
            for m, mode in modes:
                m.training = mode
        return torch.cat(maps)


TARGETS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("class to explain")
# Each maps logits N×K and true labels N to the class to explain per image.
TARGETS.register("predicted")(lambda logits, labels: logits.argmax(1))
TARGETS.register("true")(lambda logits, labels: labels)
TARGETS.register("lowest")(lambda logits, labels: logits.softmax(1).argmin(1))


@torch.no_grad()
def select_targets(model: nn.Module, images: Tensor, labels: Tensor, which: str = "predicted",
                   batch_size: int = 32, additional_inputs: Additional = None) -> Tensor:
    """The class to explain per image: "predicted" (argmax), "true" (``labels``) or "lowest" (min softmax).

    images: N×C×H×W; labels: LongTensor N; additional_inputs: further model inputs (N rows each).
    Returns LongTensor N on ``labels.device``.
    """
    pick = TARGETS.get(which)
    if which == "true":
        return labels.long()
    device = model_device(model)
    with attribution_mode(model):
        logits = torch.cat([model(images[i:i + batch_size].to(device),
                                  *[a[i:i + batch_size].to(device) for a in (additional_inputs or {}).values()])
                            for i in range(0, len(images), batch_size)])
    return pick(logits, labels.to(device)).to(labels.device)


class ExplainClass(Method):
    """``base`` explaining the class chosen by :func:`select_targets`.

    ``targets`` must be the true labels (only "true" reads them): a caller that has already replaced
    them with other classes (the attribute stage explains predicted classes by default) passes the
    labels through :func:`call_targets` instead, and records :meth:`explained` as the maps' targets.
    """

    def __init__(self, base: str | Method, which: str) -> None:
        TARGETS.get(which)
        self.base, self.which = get_method(base), which
        reject_needs(self.base, "explain")
        self.name = f"{self.base.name}@{which}"

    def layers(self, model: nn.Module, **params: Any) -> list[str]:
        return self.base.layers(model, **params)

    def compute(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
                additional_inputs: Additional = None, **params: Any) -> Tensor:
        chosen = select_targets(model, images, targets, self.which, batch_size, additional_inputs)
        return self.base(model, images, chosen, batch_size=batch_size, additional_inputs=additional_inputs, **params)

    def explained(self, model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 32,
                  additional_inputs: Additional = None) -> Tensor:
        """The classes (LongTensor N) the maps of images N×C×H×W with true ``labels`` explain."""
        return select_targets(model, images, labels, self.which, batch_size, additional_inputs)


def call_targets(method: Method, model: nn.Module, images: Tensor, labels: Tensor, targets: Tensor,
                 batch_size: int = 32, additional_inputs: Additional = None) -> tuple[Tensor, Tensor]:
    """(targets to call ``method`` with, the classes its maps explain) for a stage that explains ``targets``
    (N) by default: an :class:`ExplainClass` entry gets the true ``labels`` and explains its own choice."""
    if isinstance(method, ExplainClass):
        return labels, method.explained(model, images, labels, batch_size, additional_inputs)
    return targets, targets

