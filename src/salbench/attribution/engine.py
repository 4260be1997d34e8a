"""Fused single-pass engine: one forward and one backward serve every request that can share them.

A :class:`Request` names what to read from a pass: a reader function of (value, gradient), at the
input (``layer=None``), at a named layer, or at the input of the timm network inside a wrapper
(``layer=NET_INPUT``, after the wrapper's normalisation). Requests that share a sampler (plain input, SmoothGrad
noise, an integration path) and a backward rule (plain gradient, guided backprop, deconvolution)
share their passes: hooks go on every requested layer once, the forward runs once, and one
``torch.autograd.grad`` call returns the input and all layer gradients (parameter gradients off).
Samples or path steps are stacked into the batch dimension, chunked by ``batch_size``.

Question-conditioned models (VQA) take further per-sample inputs, captum's ``additional_forward_args``:
``additional`` (tensors with N rows, e.g. question tokens N×L) are chunked with the images and repeated for
each sampler point, and the model is called ``model(x, *additional)``; maps are taken w.r.t. the images only.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Iterator, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SalbenchError
from ..registry import Registry
from .model import ModelInfo, attribution_mode, inspect_model, is_channels_last, model_device, to_spatial

Reader = Callable[..., Tensor]
"""(value, gradient, **options) -> map: N×C×H×W at the input, N×1×h×w at a layer (N×K×h×w inputs)."""

NET_INPUT = "<net input>"
"""Request layer meaning the input of the timm network (``inspect_model(model).inner``), N×C×H×W."""


class ModelRule(Protocol):
    """A backward rule for the whole model (e.g. LRP): a hashable object whose ``context(model)`` modifies
    the model's backward pass while open and restores the model on exit."""

    def context(self, model: nn.Module) -> ContextManager[None]: ...


@dataclass(frozen=True)
class Plain:
    """The images themselves: one point per image."""

    size = 1  # a class constant, not a field

    def weights(self) -> Tensor:
        return torch.ones(1)

    def points(self, images: Tensor, steps: Tensor) -> Tensor:
        """n_i images × n_s sample indices → (n_i·n_s)×C×H×W inputs, image-major."""
        return images


@functools.lru_cache(maxsize=4)
def _draws(size: int, seed: int, shape: tuple[int, ...]) -> Tensor:
    return torch.randn((size, *shape), generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Noise:
    """SmoothGrad noise: x + sigma·(max x − min x)·z_s with z_s ~ N(0, 1).

    The draws z_1..z_S are shared by every image of a call, so an image's maps do not depend on
    which other images are in its batch.
    """

    size: int
    sigma: float
    seed: int

    def weights(self) -> Tensor:
        return torch.full((self.size,), 1.0 / self.size)

    def draws(self, shape: tuple[int, ...]) -> Tensor:
        """The S×C×H×W standard-normal draws, from a CPU generator so every device sees the same noise."""
        return _draws(self.size, self.seed, shape)

    def points(self, images: Tensor, steps: Tensor) -> Tensor:
        z = self.draws(tuple(images.shape[1:])).to(images.device)[steps]
        spread = (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))) * self.sigma
        noisy = images[:, None] + spread[:, None, None, None, None] * z[None]
        return noisy.flatten(0, 1)


@dataclass(frozen=True)
class IntegrationPath:
    """Integrated-gradients path baseline + α(x − baseline), Gauss–Legendre nodes and weights on [0, 1]."""

    size: int
    baseline: float = 0.0

    def _nodes(self) -> tuple[np.ndarray, np.ndarray]:
        x, w = np.polynomial.legendre.leggauss(self.size)
        return 0.5 * (1 + x), 0.5 * w

    def weights(self) -> Tensor:
        return torch.from_numpy(self._nodes()[1]).float()

    def points(self, images: Tensor, steps: Tensor) -> Tensor:
        alphas = torch.from_numpy(self._nodes()[0]).float().to(images.device)[steps]
        base = torch.full_like(images, self.baseline)
        return (base[:, None] + alphas[None, :, None, None, None] * (images - base)[:, None]).flatten(0, 1)


Sampler = Plain | Noise | IntegrationPath
PLAIN = Plain()


@dataclass(frozen=True)
class Request:
    """One map to read from a shared pass.

    read: reader function; layer: canonical module name or None for the input; options: sorted
    (name, value) pairs passed to the reader; sampler/rule: what the pass is; reduce: "mean"
    (sampler-weighted mean over points) or "var" (variance over noise samples, VarGrad).
    rule may also be a :class:`ModelRule`.
    """

    read: Reader
    layer: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    sampler: Sampler = PLAIN
    rule: str | ModelRule = "gradient"
    reduce: str = "mean"


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(n_in: int, n_out: int) -> Tensor:
    """n_out×n_in weights of 1-D linear interpolation (align_corners=False), as F.interpolate uses them."""
    eye = torch.eye(n_in).unsqueeze(1)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False).squeeze(1).T.contiguous()


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (align_corners=False) of N×C×h×w maps to ``size``.

    Bilinear interpolation is separable, so two small matrix products give F.interpolate's result
    (to float rounding) several times faster on the CPU. Maps already of ``size`` are returned as they are.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    rows = _interpolation_matrix(maps.shape[-2], size[0]).to(maps)
    cols = _interpolation_matrix(maps.shape[-1], size[1]).to(maps)
    return rows @ maps @ cols.T


def _single(results: list[Tensor], images: Tensor) -> Tensor:
    return results[0]


@dataclass(frozen=True)
class Plan:
    """A method's maps as requests plus how to combine their N×C'×H×W results (with the images)."""

    requests: tuple[Request, ...]
    combine: Callable[[list[Tensor], Tensor], Tensor] = field(default=_single)


def with_sampler(plan: Plan, sampler: Sampler, reduce: str) -> Plan | None:
    """The plan evaluated under ``sampler`` (None if that cannot be done inside the engine).

    Only single, unwrapped requests qualify: the mean or variance of a non-linear combination is
    not the combination of the requests' means or variances.
    """
    if len(plan.requests) != 1 or plan.combine is not _single or plan.requests[0].sampler != PLAIN:
        return None
    return Plan((replace(plan.requests[0], sampler=sampler, reduce=reduce),))


# Backward rules: how gradients cross activation functions.
RULES: Registry[Callable[[Tensor, Tensor], Tensor] | None] = Registry("backward rule")
RULES.register("gradient")(None)
# Guided backprop (Springenberg et al. 2015): keep positive gradients after the activation's own backward.
RULES.register("guided")(lambda grad_in, grad_out: F.relu(grad_in))
# Deconvolution (Zeiler & Fergus 2014): pass positive output gradients, ignoring the forward pass.
RULES.register("deconvolution")(lambda grad_in, grad_out: F.relu(grad_out))

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)


@contextlib.contextmanager
def backward_rule(model: nn.Module, rule: str | ModelRule) -> Iterator[None]:
    """Apply a backward rule at every activation module (ReLU for CNNs, GELU for ViTs), or a model rule.

    In-place activations are switched to out-of-place meanwhile: module backward hooks cannot wrap
    a tensor that is modified in place.
    """
    if not isinstance(rule, str):
        with rule.context(model):
            yield
        return
    fn = RULES.get(rule)
    if fn is None:
        yield
        return
    acts = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    inplace = [(m, getattr(m, "inplace", None)) for m in acts]
    handles = []
    try:
        for m in acts:
            if getattr(m, "inplace", False):
                m.inplace = False
            handles.append(m.register_full_backward_hook(lambda mod, gi, go: (fn(gi[0], go[0]),)))
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in inplace:
            if flag is not None:
                m.inplace = flag


class _Capture:
    """Forward hooks that keep each requested layer's output (passing a copy downstream, so a later
    in-place operation such as timm's ``x += shortcut`` cannot change the captured tensor)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.outputs: dict[str, Tensor] = {}
        self.handles = [inspect_model(model).inner.register_forward_pre_hook(self._input_hook) if name == NET_INPUT
                        else model.get_submodule(name).register_forward_hook(self._hook(name)) for name in layers]

    def _input_hook(self, module: nn.Module, args: Any) -> None:
        self.outputs[NET_INPUT] = args[0]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> Tensor:
            if not isinstance(output, Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; choose another layer")
            if name in self.outputs:
                raise ValueError(f"layer {name!r} runs more than once per forward pass; choose a module that runs once")
            self.outputs[name] = output
            return output.clone()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _check_inputs(images: Tensor, targets: Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float N×C×H×W tensor, got {images.dtype} of shape {tuple(images.shape)}")
    if targets.shape != images.shape[:1] or targets.is_floating_point() or targets.is_complex():
        raise ValueError(
            f"targets must be an integer tensor of shape ({images.shape[0]},), got {targets.dtype} "
            f"{tuple(targets.shape)}; pass torch.as_tensor(labels, dtype=torch.long)"
        )


def _pass(model: nn.Module, x: Tensor, targets: Tensor, additional: Sequence[Tensor], layers: Sequence[str],
          need_input: bool, capture: _Capture, info: ModelInfo, image_hw: tuple[int, int],
          channels_last: dict[str, bool]) -> dict[str | None, tuple[Tensor, Tensor]]:
    """One forward ``model(x, *additional)`` and one backward: (value, gradient of the summed target logits)
    at the input (key None, if needed) and at each layer (N×K×h×w)."""
    # The input always requires grad so the graph exists; autograd.grad only runs the part of the
    # backward that leads to the requested tensors.
    x = x.detach().requires_grad_(True)
    capture.outputs.clear()
    score = model(x, *additional).gather(1, targets[:, None]).sum()
    keys = ([None] if need_input else []) + list(layers)
    wrt = [x if key is None else capture.outputs[key] for key in keys]
    grads = torch.autograd.grad(score, wrt, materialize_grads=True)
    out = {}
    for key, value, grad in zip(keys, wrt, grads):
        if key is None:
            out[key] = (value.detach(), grad)
        else:
            out[key] = tuple(to_spatial(t.detach(), info, image_hw, channels_last[key]) for t in (value, grad))
    return out


def _run_group(
    model: nn.Module, images: Tensor, targets: Tensor, requests: Sequence[Request], batch_size: int,
    additional: Sequence[Tensor] = (),
) -> dict[Request, Tensor]:
    """Maps for requests sharing one sampler and one rule, accumulated on ``images.device``.

    Chunks hold whole images with all their sampler points when ``batch_size`` allows, else one
    image with as many points as fit.
    """
    sampler, rule = requests[0].sampler, requests[0].rule
    info, device = inspect_model(model), model_device(model)
    n, hw = images.shape[0], tuple(images.shape[2:])
    layers = sorted({r.layer for r in requests if r.layer is not None})
    channels_last = {name: name != NET_INPUT and is_channels_last(model.get_submodule(name)) for name in layers}
    need_input = any(r.layer is None for r in requests)
    weights = sampler.weights()
    per_chunk_images, per_chunk_steps = max(1, batch_size // sampler.size), min(sampler.size, batch_size)
    sums: dict[Request, Tensor] = {}
    squares: dict[Request, Tensor] = {}

    capture = _Capture(model, layers)
    try:
        with attribution_mode(model), backward_rule(model, rule), torch.enable_grad():
            for i0 in range(0, n, per_chunk_images):
                i1 = min(n, i0 + per_chunk_images)
                # non_blocking: an asynchronous host-to-GPU copy when ``images`` is pinned (the streamed stage pins
                # its shards on CUDA); a plain copy otherwise
                x_chunk = images[i0:i1].to(device, non_blocking=True)
                t_chunk = targets[i0:i1].to(device, non_blocking=True)
                a_chunk = [a[i0:i1].to(device, non_blocking=True) for a in additional]
                for s0 in range(0, sampler.size, per_chunk_steps):
                    steps = torch.arange(s0, min(sampler.size, s0 + per_chunk_steps))
                    values = _pass(model, sampler.points(x_chunk, steps.to(device)),
                                   t_chunk.repeat_interleave(len(steps)),
                                   [a.repeat_interleave(len(steps), dim=0) for a in a_chunk], layers, need_input,
                                   capture, info, hw, channels_last)
                    w = weights[steps].to(device).view(1, -1, 1, 1, 1)
                    for r in requests:
                        m = r.read(*values[r.layer], **dict(r.options))
                        # A weighted mean commutes with (linear) upsampling, so upsample once per image;
                        # a variance needs every point at input resolution.
                        at_layer = r.layer is not None
                        if at_layer and r.reduce == "var":
                            m, at_layer = upsample(m, hw), False
                        m = m.unflatten(0, (i1 - i0, len(steps)))
                        total = (w * m).sum(1)
                        if at_layer:
                            total = upsample(total, hw)
                        if r not in sums:
                            sums[r] = images.new_zeros((n, *total.shape[1:]))
                            squares[r] = images.new_zeros((n, *total.shape[1:])) if r.reduce == "var" else None
                        sums[r][i0:i1] += total.to(images.device)
                        if r.reduce == "var":
                            squares[r][i0:i1] += (w * m * m).sum(1).to(images.device)
    finally:
        capture.remove()
    return {r: (squares[r] - sums[r] ** 2).clamp_min(0) if r.reduce == "var" else sums[r] for r in requests}


def additional_args(additional_inputs: Mapping[str, Tensor] | None, n: int) -> tuple[Tensor, ...]:
    """The model's extra positional inputs, in the mapping's order, each checked to hold ``n`` rows."""
    out = []
    for key, value in (additional_inputs or {}).items():
        if not isinstance(value, Tensor) or value.dim() == 0 or len(value) != n:
            got = f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
            raise SalbenchError(f"additional_inputs[{key!r}] must be a tensor with {n} rows, one per image (the "
                                f"model is called model(images, *additional_inputs.values())), got {got}")
        out.append(value)
    return tuple(out)


def execute(model: nn.Module, images: Tensor, targets: Tensor, plans: Sequence[Plan],
            batch_size: int = 32, additional_inputs: Mapping[str, Tensor] | None = None) -> list[Tensor]:
    """Evaluate plans together: one pass per chunk for all requests that share a sampler and a rule.

    images: N×C×H×W on any device (chunks go to the model's device); targets: LongTensor N;
    additional_inputs: further model inputs with N rows each (``model(images, *values)``), e.g. question tokens.
    Returns one N×C'×H×W map per plan, on ``images.device``.
    """
    _check_inputs(images, targets)
    additional = additional_args(additional_inputs, len(images))
    targets = targets.long()
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    groups: dict[tuple[Sampler, str | ModelRule], list[Request]] = {}
    for plan in plans:
        for r in plan.requests:
            group = groups.setdefault((r.sampler, r.rule), [])
            if r not in group:
                group.append(r)
    results: dict[Request, Tensor] = {}
    for group in groups.values():
        results.update(_run_group(model, images, targets, group, batch_size, additional))
    return [plan.combine([results[r] for r in plan.requests], images) for plan in plans]
