"""SmoothGrad (Smilkov et al. 2017) and VarGrad (Adebayo et al. 2018) over any base method.

The mean (SmoothGrad) or variance (VarGrad) of the base map over ``samples`` noisy copies
x + sigma·(max x − min x)·z. A base that reads a plain pass (gradient, GradCAM, NormGrad, ...) runs
inside the engine, so several noise-wrapped methods with the same noise share one pass per sample;
any other base is called once per noise sample.
"""
from __future__ import annotations

from typing import Any

from annotated_types import Ge
from torch import Tensor, nn

from ...config.declare import OneOf
from ..base import METHODS, Additional, Method, get_method, register, reject_needs
from ..engine import Noise, Plan, with_sampler


class NoiseWrapper(Method):
    """Parameters: ``base`` (method name or Method, default "gradient"), ``samples`` (16), ``sigma``
    (0.15, a fraction of each image's value range), ``seed`` (0), and the base method's own params."""

    takes_base_params = True

    def __init__(self, reduce: str) -> None:
        self.reduce = reduce

    @staticmethod
    def _sampler(samples: int, sigma: float, seed: int) -> Noise:
        if samples < 1 or sigma < 0:
            raise ValueError(f"samples must be >= 1 and sigma >= 0, got samples={samples}, sigma={sigma}")
        return Noise(int(samples), float(sigma), int(seed))

    def plan(self, model: nn.Module, base: str | Method = "gradient", samples: int = 16, sigma: float = 0.15,
             seed: int = 0, **base_params: Any) -> Plan | None:
        reject_needs(get_method(base), self.name)
        base_plan = get_method(base).plan(model, **base_params)
        sampler = self._sampler(samples, sigma, seed)
        return None if base_plan is None else with_sampler(base_plan, sampler, self.reduce)

    def layers(self, model: nn.Module, base: str | Method = "gradient", samples: int = 16, sigma: float = 0.15,
               seed: int = 0, **base_params: Any) -> list[str]:
        return get_method(base).layers(model, **base_params)

    def compute(self, model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int,
                additional_inputs: Additional = None, base: str | Method = "gradient", samples: int = 16,
                sigma: float = 0.15, seed: int = 0, **base_params: Any) -> Tensor:
        method, sampler = get_method(base), self._sampler(samples, sigma, seed)
        total = squares = None
        for s in range(sampler.size):
            noisy = sampler.points(images, images.new_tensor([s]).long())
            m = method(model, noisy, targets, batch_size=batch_size, additional_inputs=additional_inputs,
                       **base_params)
            total = m if total is None else total + m
            if self.reduce == "var":
                squares = m * m if squares is None else squares + m * m
        mean = total / sampler.size
        return (squares / sampler.size - mean**2).clamp_min(0) if self.reduce == "var" else mean


register("smoothgrad", NoiseWrapper("mean"), base=OneOf(METHODS), samples=Ge(1), sigma=Ge(0))
register("vargrad", NoiseWrapper("var"), base=OneOf(METHODS), samples=Ge(1), sigma=Ge(0))
