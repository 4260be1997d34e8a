"""LRP on ViTs (CP-LRP, AttnLRP): LXT's efficient mode as reference, conservation, rules by hand, timm families."""
from __future__ import annotations

import functools
import importlib
import math
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
from timm.layers.attention import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from salbench.attribution import METHODS
from salbench.attribution.methods.lrp_rules import LRPError, VitLRP
from salbench.models.zoo import build_model

LRP = METHODS.get("lrp")


def _zero_biases(net: nn.Module) -> nn.Module:
    """Zero every bias-like term: layer biases, class/register/distillation tokens, position embeddings,
    batch-norm shifts and running means (an eval batch norm is then a per-channel scaling)."""
    for name, p in net.named_parameters():
        if name.endswith("bias") or name.split(".")[-1] in ("cls_token", "reg_token", "dist_token", "pos_embed"):
            p.data.zero_()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
    return net


def _relevance(module: nn.Module, x: torch.Tensor, seed: torch.Tensor, rule: str, epsilon: float = 0.0):
    """x ⊙ modified gradient of (module(x) · seed) under the ViT rule, on any module."""
    x = x.clone().requires_grad_(True)
    with VitLRP(rule, epsilon).context(module):
        (grad,) = torch.autograd.grad((module(x) * seed).sum(), x)
    return (x * grad).detach()


# ---- each rule on a hand-made module ----

def test_layernorm_identity_rule_by_hand():
    """y = (x − mean)/σ · w with σ constant: x = [1, 3], w = [2, 1] → y = [−2, 1]; seed [1, 0] gives
    R_out = [−2, 0] and R_x = x ⊙ σ⁻¹(gw − mean gw) = [1, 3] ⊙ [1, −1] = [1, −3] (sum −2: conserved)."""
    norm = nn.LayerNorm(2, eps=0.0)
    norm.weight.data = torch.tensor([2.0, 1.0])
    norm.bias.data.zero_()
    r = _relevance(norm, torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 0.0]]), "cplrp")
    torch.testing.assert_close(r, torch.tensor([[1.0, -3.0]]))


def test_rmsnorm_identity_rule_by_hand():
    """y = x / rms(x) · w with rms constant: x = [1, 3] (rms √5), w = [2, 1]; seed [1, 0]: R_x = [2/√5, 0] = R_out."""
    norm = timm.layers.RmsNorm(2, eps=0.0)
    norm.weight.data = torch.tensor([2.0, 1.0])
    r = _relevance(norm, torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 0.0]]), "attnlrp")
    torch.testing.assert_close(r, torch.tensor([[2 / math.sqrt(5), 0.0]]))


def test_gelu_identity_rule_by_hand():
    """Relevance passes an elementwise activation unchanged: R_x = R_y = GELU(x) for a unit seed."""
    x = torch.tensor([[-1.0, 2.0, 0.0]])
    expected = x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # GELU(−1) = −0.1587, GELU(2) = 1.9545
    torch.testing.assert_close(_relevance(nn.GELU(), x, torch.ones(1, 3), "attnlrp"), expected)
    assert abs(expected[0, 0].item() + 0.158655) < 1e-5


def test_epsilon_rule_by_hand():
    """z = 2·1 − 1·3 + 0.5 = −0.5; ε = 0.1: R_j = x_j w_j R / (z − ε) = [2, −3]·(5/6) = [5/3, −5/2]."""
    layer = nn.Linear(2, 1)
    layer.weight.data, layer.bias.data = torch.tensor([[2.0, -1.0]]), torch.tensor([0.5])
    r = _relevance(layer, torch.tensor([[1.0, 3.0]]), torch.ones(1, 1), "cplrp", epsilon=0.1)
    torch.testing.assert_close(r, torch.tensor([[5 / 3, -2.5]]))


@pytest.mark.parametrize("fused", [True, False])
def test_attention_rules_by_hand(fused):
    """One head, q = k = v = x (identity qkv and projection), tokens x₁ = e₁, x₂ = e₂, seed on output 1, dim 1.

    Logits L = x xᵀ/√2 = I/√2, a = 1/√2, A₁₁ = eᵃ/(eᵃ + 1); output o₁₁ = A₁₁ = R_out.
    CP-LRP: A constant, all relevance through v: R(x₁) = [A₁₁, 0].
    AttnLRP: A·v halves: v gets A₁₁/2; A gets [A₁₁/2, 0], the softmax rule L ⊙ (R − A ΣR) leaves
    a·A₁₁(1 − A₁₁)/2 on L₁₁, split evenly between q₁ and k₁ = x₁: R(x₁) = [A₁₁/2 + a·A₁₁(1 − A₁₁)/2, 0].
    """
    attn = Attention(2, num_heads=1).eval()
    attn.fused_attn = fused
    attn.qkv.weight.data = torch.eye(2).repeat(3, 1)
    attn.proj.weight.data, attn.proj.bias.data = torch.eye(2), torch.zeros(2)
    x, seed = torch.eye(2)[None], torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    a = 1 / math.sqrt(2)
    a11 = math.exp(a) / (math.exp(a) + 1)
    cp = torch.tensor([[[a11, 0.0], [0.0, 0.0]]])
    attn_lrp = torch.tensor([[[a11 / 2 + a * a11 * (1 - a11) / 2, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(_relevance(attn, x, seed, "cplrp"), cp)
    torch.testing.assert_close(_relevance(attn, x, seed, "attnlrp"), attn_lrp)


# ---- LXT's efficient mode on a torchvision ViT with the same weights ----

def _lxt_efficient(monkeypatch):
    """LXT 2.1's efficient-mode modules (rules, patches, torchvision ViT map) without its package __init__,
    which imports every supported language model (transformers; its BERT patch fails on transformers 5)."""
    root = Path(importlib.util.find_spec("lxt").origin).parent / "efficient"
    for name, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(path)]
        monkeypatch.setitem(sys.modules, name, stub)
    patches = importlib.import_module("lxt.efficient.patches")
    rules = importlib.import_module("lxt.efficient.rules")
    vit_torch = importlib.import_module("lxt.efficient.models.vit_torch")
    return patches, rules, vit_torch


def _torchvision_and_timm_twin():
    """A tiny torchvision ViT with random weights and the timm VisionTransformer computing the same function."""
    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

    torch.manual_seed(0)
    tv = TorchvisionViT(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                        num_classes=5).eval()
    for p in tv.parameters():  # torchvision zero-initialises biases and the head: give everything weight
        p.data.normal_(0, 0.3)
    twin = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
                             num_classes=5, qkv_bias=True).eval()
    state = {"patch_embed.proj.weight": tv.conv_proj.weight, "patch_embed.proj.bias": tv.conv_proj.bias,
             "cls_token": tv.class_token, "pos_embed": tv.encoder.pos_embedding,
             "norm.weight": tv.encoder.ln.weight, "norm.bias": tv.encoder.ln.bias,
             "head.weight": tv.heads.head.weight, "head.bias": tv.heads.head.bias}
    for i, layer in enumerate(tv.encoder.layers):
        attn, mlp, b = layer.self_attention, layer.mlp, f"blocks.{i}."
        state.update({b + "norm1.weight": layer.ln_1.weight, b + "norm1.bias": layer.ln_1.bias,
                      b + "attn.qkv.weight": attn.in_proj_weight, b + "attn.qkv.bias": attn.in_proj_bias,
                      b + "attn.proj.weight": attn.out_proj.weight, b + "attn.proj.bias": attn.out_proj.bias,
                      b + "norm2.weight": layer.ln_2.weight, b + "norm2.bias": layer.ln_2.bias,
                      b + "mlp.fc1.weight": mlp[0].weight, b + "mlp.fc1.bias": mlp[0].bias,
                      b + "mlp.fc2.weight": mlp[3].weight, b + "mlp.fc2.bias": mlp[3].bias})
    twin.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return tv, twin


@pytest.mark.parametrize("rule", ["cplrp", "attnlrp"])
def test_equals_lxt_efficient_mode_on_torchvision_vit(rule, monkeypatch):
    """The reference runs where LXT supports it (torchvision's ViT); ours runs on the timm twin with the same
    weights, so the production code path is the one tested. LXT's map ``cp_LRP`` for torchvision ViTs is
    CP-LRP; for AttnLRP its attention rule (``divide_gradient`` on q, k ÷ 4 and v ÷ 2, as LXT's
    ``wrap_attention_forward`` does for language models) is patched into torchvision's MultiheadAttention.
    LXT's efficient mode takes linear layers by their gradient (LRP-0), which is our ViT default (epsilon 0)."""
    patches, rules, vit_torch = _lxt_efficient(monkeypatch)
    tv, twin = _torchvision_and_timm_twin()
    x, t = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 4])
    torch.testing.assert_close(twin(x), tv(x), rtol=0, atol=1e-5)
    ours = LRP(twin, x, t, rule=rule)  # before LXT patches nn.GELU, which timm's blocks use too

    def attn_lrp_forward(self, query, key, value, *args, **kwargs):
        q, k, v = (rules.divide_gradient(query, 4), rules.divide_gradient(key, 4), rules.divide_gradient(value, 2))
        return self.original_forward(q, k, v, *args, **kwargs)

    patch_map = dict(vit_torch.cp_LRP)
    if rule == "attnlrp":
        patch_map[nn.MultiheadAttention] = functools.partial(patches.patch_method, attn_lrp_forward,
                                                             keep_original=True)
    for cls in patch_map:  # LXT patches classes globally: let monkeypatch restore them
        monkeypatch.setattr(cls, "forward", cls.forward)
        monkeypatch.setattr(cls, "original_forward", None, raising=False)
    for cls, patch in patch_map.items():  # what lxt.efficient.monkey_patch does
        assert patch(cls)
    xx = x.clone().requires_grad_(True)
    tv(xx).gather(1, t[:, None]).sum().backward()
    reference = xx * xx.grad

    assert (ours - reference).norm() <= 1e-4 * reference.norm()
    torch.testing.assert_close(ours.sum((1, 2, 3)), reference.sum((1, 2, 3)), rtol=1e-4, atol=1e-7)


# ---- timm families, conservation ----

FAMILIES = [  # (timm name, overrides for a small fast model, two input sizes)
    ("vit_tiny_patch16_224", {"depth": 2}, (32, 48)),
    ("deit_tiny_distilled_patch16_224", {"depth": 2}, (32, 48)),  # class + distillation token
    ("vit_small_patch14_reg4_dinov2", {"depth": 2, "init_values": 1.0}, (28, 42)),  # 4 registers, LayerScale
    ("vit_little_patch16_reg4_gap_256", {"depth": 2, "init_values": 1.0}, (32, 48)),  # registers, avg pooling
]


@pytest.mark.parametrize("name,overrides,sizes", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_timm_families_conserve_relevance(name, overrides, sizes):
    """CP-LRP with zero biases: Σ relevance = target logit (≤ 1e-3 relative), at two input sizes; AttnLRP
    runs too and differs (its softmax rule absorbs relevance by design, AttnLRP Prop. 3.1)."""
    for size in sizes:
        torch.manual_seed(0)
        net = _zero_biases(timm.create_model(name, pretrained=False, img_size=size, num_classes=4, **overrides))
        x, t = torch.randn((2, 3, size, size), generator=torch.Generator().manual_seed(size)), torch.tensor([1, 3])
        logits = net.eval()(x).gather(1, t[:, None]).squeeze(1)
        cp = LRP(net, x, t)
        assert cp.shape == x.shape
        torch.testing.assert_close(cp.sum((1, 2, 3)), logits, rtol=1e-3, atol=1e-6)
        attn = LRP(net, x, t, rule="attnlrp")
        assert torch.isfinite(attn).all() and not torch.allclose(attn, cp)


@pytest.mark.parametrize("size", [32, 64])
def test_default_vit_tiny_with_conv_stem(size):
    """salbench's vit-tiny (normalising wrapper, conv-BN-ReLU stem): the stem's convolutions take the ε-rule
    (gradient × input, ε = 0) and its ReLUs the identity rule, which conserves relevance once batch-norm
    shifts and running means are zero; relevance is read after the wrapper's normalisation."""
    torch.manual_seed(0)
    model = build_model({"arch": "vit-tiny", "kwargs": {"stem": "conv", "patch_size": 8}}, 4, size).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    _zero_biases(model.net)
    x, t = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2])
    logits = model(x).gather(1, t[:, None]).squeeze(1)
    for rule in ("cplrp", "attnlrp"):
        r = LRP(model, x, t, rule=rule)
        assert r.shape == x.shape and torch.isfinite(r).all()
    torch.testing.assert_close(LRP(model, x, t).sum((1, 2, 3)), logits, rtol=1e-3, atol=1e-6)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # switched back after the pass


# ---- contract: per sample, deterministic, model untouched ----

@pytest.mark.parametrize("rule", ["cplrp", "attnlrp"])
def test_per_sample_deterministic_and_model_untouched(rule):
    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, num_classes=4,
                            depth=2).eval()
    x, t = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(2)), torch.tensor([0, 3, 1])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    forwards = {type(m): type(m).forward for m in net.modules()}
    expected = net(x)
    seen = []
    handle = net.register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
    maps = LRP(net, x, t, batch_size=3, rule=rule)
    handle.remove()
    assert torch.equal(seen[0], expected), "the forward pass must be unchanged while the rules are active"
    assert torch.equal(LRP(net, x, t, batch_size=3, rule=rule), maps)
    one_by_one = torch.cat([LRP(net, x[i:i + 1], t[i:i + 1], rule=rule) for i in range(3)])
    torch.testing.assert_close(one_by_one, maps, rtol=1e-4, atol=1e-7)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all("forward" not in vars(m) for m in net.modules())
    assert {type(m): type(m).forward for m in net.modules()} == forwards
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert torch.equal(net(x), expected)


def test_unsupported_attention_and_rule_are_named():
    torch.manual_seed(0)
    net = timm.create_model("vit_dwee_patch16_reg1_gap_256", pretrained=False, img_size=32, num_classes=4,
                            depth=1).eval()
    x, t = torch.rand(1, 3, 32, 32), torch.tensor([0])
    with pytest.raises(LRPError, match="DiffAttention.*timm.layers.Attention"):
        LRP(net, x, t)
    with pytest.raises(LRPError, match=r"rule 'epsilon_plus_flat' does not apply to a vit model.*cplrp"):
        LRP(VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2), x, t,
            rule="epsilon_plus_flat")
