"""Modified-backward methods: guided backprop, deconvolution and guided GradCAM.

Guided backprop (Springenberg et al. 2015) and deconvolution (Zeiler & Fergus 2014) change how
gradients cross every activation (see ``engine.RULES``), so they run their own pass; guided GradCAM
(Selvaraju et al. 2017) multiplies the guided-backprop map by the GradCAM map, N×C×H×W.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..base import METHODS, InputMethod, Method, check_params, register
from ..engine import Plan, Request
from . import gradcam  # noqa: F401  (registers the GradCAM this method builds on)
from .gradient import gradient_read


def _product(results: list[Tensor], images: Tensor) -> Tensor:
    return results[0] * results[1]


class GuidedGradCam(Method):
    """Guided backprop (N×C×H×W) times GradCAM at ``layer`` upsampled to the input (N×1×H×W)."""

    def plan(self, model: nn.Module, layer: str | None = None, **params: Any) -> Plan:
        check_params(self.name, params, [])
        cam = METHODS.get("gradcam").plan(model, layer=layer).requests[0]
        return Plan((Request(gradient_read, None, rule="guided"), cam), _product)


register("guided_backprop", InputMethod(gradient_read, rule="guided"))
register("deconvolution", InputMethod(gradient_read, rule="deconvolution"))
register("guided_gradcam", GuidedGradCam())
