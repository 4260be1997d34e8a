"""Saliency methods with one call signature, a fused single-pass engine, wrappers and a map cache.

``METHODS.get(name)(model, images, targets, batch_size=32, **params) -> maps``: images N×C×H×W
(float, any device; chunks run on the model's device), targets LongTensor N, maps N×C'×H×W at input
resolution on ``images.device`` (C' = C for input-space methods, 1 for layer methods).
``attribute_many`` evaluates several methods with shared passes wherever they can share them.
"""
from . import methods  # noqa: F401  (registers every method)
from .base import METHODS, Method, attribute_many, get_method
from .engine import IntegrationPath, Noise, Plan, Request, execute
from .model import default_layer, inspect_model, resolve_layer
from .spec import build
from .wrappers import ExplainClass, MetaSaliency, MultiLayer, call_targets, combine_layers, select_targets

__all__ = [
    "METHODS", "Method", "attribute_many", "get_method", "IntegrationPath", "Noise", "Plan", "Request", "execute",
    "default_layer", "inspect_model", "resolve_layer", "build", "ExplainClass", "MetaSaliency", "MultiLayer",
    "call_targets", "combine_layers", "select_targets",
]
