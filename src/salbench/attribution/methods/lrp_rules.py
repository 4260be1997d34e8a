"""LRP rules as single modified-gradient passes (the "gradient × input" form of LRP).

Relevance R = x ⊙ g, where g is a gradient whose backward pass is modified at some layers. A rule
here is a frozen dataclass with ``context(model)``: while the context is open, module forwards or
forward hooks route the backward pass through small autograd Functions; forward values are unchanged
(bit for bit) and the model is restored on exit. The engine runs one forward and one backward inside it.

ViTs (timm VisionTransformer, DeiT, register tokens, conv stems), :class:`VitLRP`:
- AttnLRP (Achtibat et al. 2024, rules as in LXT's efficient mode): identity rule on LayerNorm's
  normalisation (divisor held constant) and on elementwise activations (GELU: gradient := GELU(x)/x);
  softmax by its own gradient (= AttnLRP's softmax rule x ⊙ (R − s ΣR), Prop. 3.1); the two attention
  products by the uniform/ε rule (gradient to q and k ÷ 4, to v ÷ 2: each bilinear product halves
  the relevance of each factor); ε-rule on every linear and convolutional layer (ε = 0 by default:
  their plain gradient, LRP-0, as in LXT's efficient mode). A conv stem (vit-tiny's conv-BN-ReLU) is
  handled the same way: ε-rule on its convolutions, batch norms by their gradient, identity rule on ReLU.
- CP-LRP (Ali et al. 2022): the same but the attention weights are held constant (q and k detached),
  so relevance flows through v only; as LXT's ``cp_LRP`` map for torchvision ViTs.
CNNs (timm ResNet), :class:`EpsilonPlusFlat`: zennit's composite of the same name in one pass:
flat rule at the first layer, z⁺ at other convolutions, ε at dense layers; batch norms folded into the
convolution before them (as zennit's SequentialMergeBatchNorm pairs them: consecutive in module
order); additions, average pooling, max pooling and ReLU by their gradient, which is the Norm and
pass-through rules zennit applies there. The flat rule gives relevance, not a gradient, so the CNN
relevance is the gradient at the network input (see :func:`relevance_of`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

from ...errors import SalbenchError
from ..model import inspect_model


class LRPError(SalbenchError, ValueError):
    """A model or rule LRP cannot handle; the message names the supported ones."""


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """z + ε·sign(z), with sign(0) = +1 (zennit's stabiliser)."""
    return z + torch.where(z >= 0, epsilon, -epsilon)


# ---- autograd Functions: forward returns its input's values unchanged, backward applies the rule ----

class _Scale(Function):
    """Identity forward; gradient × ``factor`` backward (uniform rule of a bilinear product)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.factor, None


class _Epsilon(Function):
    """Identity forward on a layer output z; gradient × z / (z + ε·sign z) backward (ε-rule)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, epsilon: float) -> Tensor:
        ctx.save_for_backward(z / stabilize(z, epsilon))
        return z

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.saved_tensors[0], None


class _IdentityRule(Function):
    """y = fn(x) = x·gate(x) elementwise; backward gradient × gate(x) = y / x, so relevance x ⊙ g_x equals
    y ⊙ g_y. ``gate`` gives y / x without a division (GELU: Φ(x)); None divides (stabilised)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], gate: Callable[[Tensor], Tensor] | None
                ) -> Tensor:
        y = fn(x)
        ctx.save_for_backward(y / stabilize(x, 1e-12) if gate is None else gate(x))
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        return g * ctx.saved_tensors[0], None, None


def _gate(module: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """act(x) / x for activations of the form x·gate(x), else None."""
    name, approximate = type(module).__name__, getattr(module, "approximate", "none")
    if name == "GELU" and approximate == "none":
        return lambda x: torch.special.ndtr(x)
    if name in ("GELUTanh",) or (name == "GELU" and approximate == "tanh"):
        return lambda x: 0.5 * (1 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    if isinstance(module, nn.ReLU):
        return lambda x: (x > 0).to(x.dtype)
    if name in ("SiLU", "Swish"):
        return torch.sigmoid
    if name == "QuickGELU":
        return lambda x: torch.sigmoid(1.702 * x)
    return None


class _LayerNormRule(Function):
    """LayerNorm forward; backward with the divisor σ held constant: y = (x − mean x)/σ · w + b is then linear."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, module: nn.LayerNorm) -> Tensor:
        y, _, rstd = torch.native_layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
        ctx.save_for_backward(rstd, module.weight)
        ctx.dims = tuple(range(-len(module.normalized_shape), 0))
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        rstd, weight = ctx.saved_tensors
        gw = g if weight is None else g * weight
        return rstd * (gw - gw.mean(ctx.dims, keepdim=True)), None


class _RmsNormRule(Function):
    """RMSNorm forward; backward with the divisor held constant (identity rule on the normalisation)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, module: nn.Module) -> Tensor:
        dims = tuple(range(-len(module.normalized_shape), 0))
        eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
        ctx.save_for_backward((x.pow(2).mean(dims, keepdim=True) + eps).rsqrt(), module.weight)
        return type(module).forward(module, x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        rstd, weight = ctx.saved_tensors
        return rstd * (g if weight is None else g * weight), None


class _Layer:
    """A convolution or linear layer with a batch norm folded in: the weights the rules use and the ops."""

    def __init__(self, module: nn.Module, weight: Tensor, bias: Tensor | None) -> None:
        self.module, self.weight = module, weight
        self.w_pos, self.w_neg = weight.clamp(min=0), weight.clamp(max=0)
        self.b_pos = None if bias is None else bias.clamp(min=0)
        # the flat rule's unit weights, one channel in and out (all channels see the same sums)
        self.ones = weight.new_ones((1, 1, *weight.shape[2:]))

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)

    def input_grad(self, shape: torch.Size, weight: Tensor, g: Tensor, groups: int | None = None) -> Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return g @ weight
        # torch.nn.grad.conv2d_input passes an expanded (stride-0) input, which is slower here
        return torch.ops.aten.convolution_backward(
            g, g.new_empty(shape), weight, None, m.stride, m.padding, m.dilation, False, [0, 0],
            m.groups if groups is None else groups, (True, False, False))[0]

    def flat_count(self, shape: torch.Size) -> Tensor:
        """Inputs per output with unit weights (1×C_out×… or 1×1×…, broadcast): the flat rule's denominator."""
        m = self.module
        if isinstance(m, nn.Linear):
            return self.weight.new_full((1, 1), float(m.in_features))
        ones = self.weight.new_ones((1, 1, *shape[2:]))
        return F.conv2d(ones, self.ones, None, m.stride, m.padding, m.dilation) * m.in_channels

    def flat_input_grad(self, shape: torch.Size, g: Tensor) -> Tensor:
        """Backward of the unit-weight layer: every input channel gets the sum over output channels."""
        m = self.module
        if isinstance(m, nn.Linear):
            return g.sum(-1, keepdim=True).expand(shape)
        return self.input_grad((shape[0], 1, *shape[2:]), self.ones, g.sum(1, keepdim=True), groups=1).expand(shape)


class _ZPlus(Function):
    """z⁺ rule (zennit ZPlus: α=1, β=0; negative inputs through negative weights): relevance
    R_in = x⁺ ⊙ W⁺ᵀs + x⁻ ⊙ W⁻ᵀs with s = R_out / (W⁺x⁺ + b⁺ + W⁻x⁻); returned as gradient R_in / x.

    x: the layer's input; the output y = fn(c) is computed here (c: the conv output when fn is the batch
    norm folded into the layer, else x), so that it is a fresh tensor that timm may modify in place.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, c: Tensor, fn: Callable[[Tensor], Tensor], layer: _Layer,
                stabilizer: float) -> Tensor:
        y = fn(c)
        negative = bool(x.amin() < 0)
        z = layer.forward(x.clamp(min=0) if negative else x, layer.w_pos, layer.b_pos)
        if negative:
            z += layer.forward(x.clamp(max=0), layer.w_neg)
        # z >= 0 (positive weights on positive inputs, negative on negative), so zennit's stabiliser is z + ε
        ctx.save_for_backward(torch.div(y, z.add_(stabilizer), out=z), x if negative else None)
        ctx.layer, ctx.shape, ctx.negative = layer, x.shape, negative
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None]:
        s, x = ctx.saved_tensors
        layer, gs = ctx.layer, g * s
        grad = layer.input_grad(ctx.shape, layer.w_pos, gs)
        if ctx.negative:
            grad = torch.where(x > 0, grad, layer.input_grad(ctx.shape, layer.w_neg, gs))
        return grad, None, None, None, None


class _Flat(Function):
    """Flat rule (unit weights and inputs, no bias): relevance spread evenly over each receptive field.
    Its backward returns relevance itself, not a gradient. Arguments as :class:`_ZPlus`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, c: Tensor, fn: Callable[[Tensor], Tensor], layer: _Layer,
                stabilizer: float) -> Tensor:
        y = fn(c)
        ctx.save_for_backward(y / layer.flat_count(x.shape).add_(stabilizer))
        ctx.layer, ctx.shape = layer, x.shape
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None, None]:
        layer = ctx.layer
        return layer.flat_input_grad(ctx.shape, g * ctx.saved_tensors[0]), None, None, None, None


# ---- model-level contexts ----

def _activations() -> tuple[type, ...]:
    from timm.layers import activations

    timm_acts = tuple(getattr(activations, n) for n in ("GELU", "GELUTanh", "QuickGELU", "Swish", "SiLU")
                      if hasattr(activations, n))
    return (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, *timm_acts)


def _norm_rules() -> dict[type, type[Function]]:
    """Normalisation classes over the last dimension(s) and their identity rule (exact classes only:
    subclasses such as timm's LayerNorm2d normalise other dimensions)."""
    from timm import layers

    rules: dict[type, type[Function]] = {nn.LayerNorm: _LayerNormRule, layers.LayerNorm: _LayerNormRule,
                                         layers.RmsNorm: _RmsNormRule}
    if hasattr(nn, "RMSNorm"):
        rules[nn.RMSNorm] = _RmsNormRule
    return rules


@contextlib.contextmanager
def _swapped_forwards(swaps: list[tuple[nn.Module, Callable]], method: str = "forward") -> Iterator[None]:
    """Give modules another ``method`` (an instance attribute, default their forward) for the block; the
    class's method returns after."""
    saved = [(m, m.__dict__.get(method)) for m, _ in swaps]
    try:
        for m, fn in swaps:
            setattr(m, method, fn)
        yield
    finally:
        for m, old in saved:
            if old is None:
                delattr(m, method)
            else:
                setattr(m, method, old)


@contextlib.contextmanager
def _out_of_place(model: nn.Module) -> Iterator[None]:
    """In-place activations switched to out-of-place for the block: a rule's output (or, inside a rule,
    its input) must not be overwritten."""
    acts = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    try:
        for m in acts:
            m.inplace = False
        yield
    finally:
        for m in acts:
            m.inplace = True


@contextlib.contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _output_rule(fn: Callable[[Tensor], Tensor]) -> Callable:
    """A forward hook that passes a module's output through ``fn``."""
    return lambda module, args, output: fn(output)


def _epsilon_hooks(modules: list[nn.Module], epsilon: float) -> list:
    if epsilon <= 0:
        return []
    return [m.register_forward_hook(_output_rule(lambda z: _Epsilon.apply(z, epsilon))) for m in modules]


VIT_RULES = ("cplrp", "attnlrp")
CNN_RULES = ("epsilon_plus_flat",)


@dataclass(frozen=True)
class VitLRP:
    """CP-LRP (``rule="cplrp"``) or AttnLRP (``rule="attnlrp"``) on a timm ViT; ε for linear layers
    (0: their gradient, LRP-0, as LXT's efficient mode)."""

    rule: str = "cplrp"
    epsilon: float = 0.0

    @contextlib.contextmanager
    def context(self, model: nn.Module) -> Iterator[None]:
        from timm.layers.attention import Attention

        inner = inspect_model(model).inner
        attentions, norms, acts, linears, norm_rules = [], [], [], [], _norm_rules()
        for name, m in inner.named_modules():
            if isinstance(m, Attention):
                if getattr(m, "gate", None) is not None:
                    raise LRPError(f"lrp: gated attention ({name}) has no LRP rule here; use a ViT without gate")
                attentions.append(m)
            elif "Attention" in type(m).__name__:
                raise LRPError(f"lrp: {type(m).__name__} ({name}) has no LRP rule here; supported: timm "
                               f"VisionTransformer/DeiT blocks with timm.layers.Attention")
            elif type(m) in norm_rules:
                norms.append(m)
            elif "Norm" in type(m).__name__ and not isinstance(m, nn.BatchNorm2d):
                raise LRPError(f"lrp: {type(m).__name__} ({name}) has no LRP rule here; supported normalisations: "
                               f"{sorted(c.__module__ + '.' + c.__name__ for c in norm_rules)} and BatchNorm2d")
            elif isinstance(m, _activations()):
                acts.append(m)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                linears.append(m)
        handles = _epsilon_hooks(linears, self.epsilon)
        for attn in attentions:
            if self.rule == "cplrp":  # attention weights constant: q and k carry no gradient
                handles += [attn.q_norm.register_forward_hook(_output_rule(torch.Tensor.detach)),
                            attn.k_norm.register_forward_hook(_output_rule(torch.Tensor.detach))]
            else:  # softmax(q kᵀ) v: ÷2 at the output for A·v, ÷2 more on q and k for q·kᵀ
                half = _output_rule(lambda t: _Scale.apply(t, 0.5))
                handles += [attn.q_norm.register_forward_hook(half), attn.k_norm.register_forward_hook(half),
                            attn.norm.register_forward_hook(half)]
        swaps = [(m, lambda x, m=m: norm_rules[type(m)].apply(x, m)) for m in norms]
        swaps += [(m, lambda x, fn=type(m).forward.__get__(m), gate=_gate(m): _IdentityRule.apply(x, fn, gate))
                  for m in acts]
        with _out_of_place(inner), _hooks(handles), _swapped_forwards(swaps):
            yield


def _layers_with_norms(inner: nn.Module) -> list[tuple[nn.Module, nn.Module | None]]:
    """(conv or linear, the batch norm right after it in module order or None), in module order."""
    leaves = [m for m in inner.modules() if not list(m.children())]
    out = []
    for i, m in enumerate(leaves):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nxt = leaves[i + 1] if i + 1 < len(leaves) else None
            out.append((m, nxt if isinstance(nxt, nn.BatchNorm2d) and isinstance(m, nn.Conv2d) else None))
    return out


def _rule_forward(rule: type[Function], module: nn.Module, folded: _Layer, stabilizer: float,
                  inputs: dict | None = None, layer: nn.Module | None = None) -> Callable[[Tensor], Tensor]:
    """A forward for ``module`` that applies ``rule`` to the layer input (``inputs[layer]`` for a batch norm)."""
    fn = type(module).forward.__get__(module)
    if inputs is None:
        return lambda x: rule.apply(x, x, fn, folded, stabilizer)
    return lambda c: rule.apply(inputs.pop(layer), c, fn, folded, stabilizer)


def _kept_input_forward(layer: nn.Module, inputs: dict) -> Callable[[Tensor], Tensor]:
    """The layer's own forward, without autograd (the rule bypasses it), keeping its input in ``inputs``."""
    fn = type(layer).forward.__get__(layer)

    def forward(x: Tensor) -> Tensor:
        inputs[layer] = x
        with torch.no_grad():
            return fn(x)

    return forward


def _folded(layer: nn.Module, norm: nn.Module | None) -> _Layer:
    """The layer's weight and bias with an eval-mode batch norm folded in."""
    w, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    if norm is None:
        return _Layer(layer, w, b)
    scale = (norm.running_var + norm.eps).rsqrt()
    if norm.weight is not None:  # affine=False (FiLM's blocks): no scale or shift of its own
        scale = scale * norm.weight.detach()
    bias = ((torch.zeros_like(norm.running_mean) if b is None else b) - norm.running_mean) * scale
    if norm.bias is not None:
        bias = bias + norm.bias.detach()
    return _Layer(layer, w * scale.view(-1, *[1] * (w.dim() - 1)), bias)


@dataclass(frozen=True)
class EpsilonPlusFlat:
    """zennit's EpsilonPlusFlat on a timm ResNet as one modified backward pass (see the module docstring)."""

    epsilon: float = 1e-6
    stabilizer: float = 1e-6

    @contextlib.contextmanager
    def context(self, model: nn.Module) -> Iterator[None]:
        inner = inspect_model(model).inner
        pairs = _layers_with_norms(inner)
        if not pairs:
            raise LRPError(f"lrp: {type(inner).__name__} has no convolution or linear layer")
        handles, swaps, inputs = [], [], {}
        # the flat rule goes to the first convolution (a question model's question path may come first)
        first = next((i for i, (layer, _) in enumerate(pairs) if isinstance(layer, nn.Conv2d)), 0)
        for i, (layer, norm) in enumerate(pairs):
            if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
                raise LRPError(f"lrp: convolution {layer} pads by {layer.padding_mode!r}/{layer.padding!r}; "
                               f"only zero padding of explicit size is supported")
            if i == first and getattr(layer, "groups", 1) != 1:
                raise LRPError(f"lrp: the first layer {layer} is a grouped convolution; the flat rule here "
                               f"needs groups=1")
            if isinstance(layer, nn.Linear) and i != first:
                handles += _epsilon_hooks([norm or layer], self.epsilon)
                continue
            rule, folded = (_Flat if i == first else _ZPlus), _folded(layer, norm)
            if norm is None:
                swaps.append((layer, _rule_forward(rule, layer, folded, self.stabilizer)))
            else:  # the conv keeps its input and runs without a graph; the batch norm after it applies the rule
                swaps.append((layer, _kept_input_forward(layer, inputs)))
                swaps.append((norm, _rule_forward(rule, norm, folded, self.stabilizer, inputs, layer)))
        with _out_of_place(inner), _hooks(handles), _swapped_forwards(swaps), _question_model_input(inner):
            yield


@contextlib.contextmanager
def _question_model_input(model: nn.Module) -> Iterator[None]:
    """A question-conditioned model (salbench.models.question) standardises and average-pools its images
    inside (``normalise``): while open, the standardisation passes relevance by the identity rule (it is
    elementwise) and the pooling by its gradient (each pooled pixel's relevance spread evenly over its
    pool×pool pixels), so relevance at the images sums to the relevance at the first convolution's input.
    Other models are left as they are."""
    from ...models.question import QuestionModel

    if not isinstance(model, QuestionModel):
        yield
        return
    standardised = type(model).normalise.__get__(model)

    def normalise(images: Tensor) -> Tensor:
        pooled = F.avg_pool2d(images, model.pool) if model.pool > 1 else images
        return pooled + (standardised(images) - pooled).detach()  # forward: standardised; backward: pooled's

    with _swapped_forwards([(model, normalise)], "normalise"):
        yield


def make_rule(family: str, rule: str | None = None, epsilon: float | None = None,
              stabilizer: float = 1e-6) -> VitLRP | EpsilonPlusFlat:
    """The LRP rule for a model family. Defaults: ``rule`` cplrp for ViTs, epsilon_plus_flat for CNNs;
    ``epsilon`` 0 for ViTs (LXT's efficient mode), 1e-6 for CNNs (zennit's EpsilonPlusFlat)."""
    known = VIT_RULES if family == "vit" else CNN_RULES
    rule = rule or known[0]
    if epsilon is None:
        epsilon = 0.0 if family == "vit" else 1e-6
    if rule not in known:
        raise LRPError(f"lrp: rule {rule!r} does not apply to a {family} model; use one of {list(known)} "
                       f"(ViT: {list(VIT_RULES)}, CNN: {list(CNN_RULES)})")
    if epsilon < 0 or stabilizer <= 0:
        raise LRPError(f"lrp: epsilon must be >= 0 and stabilizer > 0, got epsilon={epsilon}, stabilizer={stabilizer}")
    if family == "vit":
        return VitLRP(rule, float(epsilon))
    return EpsilonPlusFlat(float(epsilon), float(stabilizer))
