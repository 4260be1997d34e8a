"""Model introspection: architecture family, layer names, token-to-grid reshaping, attribution mode.

Works on timm ResNets and ViT/DeiT models, bare or wrapped (e.g. in a module that normalises
[0, 1] input): the timm network inside is found by search, and layer names may be given with or
without the wrapper's prefix ("layer4" and "net.layer4" name the same module).
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from ..registry import UnknownNameError


@dataclass(frozen=True)
class ModelInfo:
    """What attribution needs to know about a model.

    family: "vit" (token sequences) or "cnn" (N×C×H×W feature maps).
    prefix: name of the timm network inside a wrapper, with a trailing dot ("" when unwrapped).
    inner: that network.
    """

    family: str
    prefix: str
    inner: nn.Module

    def grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """ViT patch grid (h, w) for an input of size ``image_hw``, following timm's padding rule."""
        patch_embed = self.inner.patch_embed
        if hasattr(patch_embed, "dynamic_feat_size"):
            return tuple(patch_embed.dynamic_feat_size(image_hw))
        ph, pw = patch_embed.patch_size
        return image_hw[0] // ph, image_hw[1] // pw

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.inner, "num_prefix_tokens", 0))


def _is_vit(module: nn.Module) -> bool:
    return hasattr(module, "patch_embed") and hasattr(module, "blocks")


def inspect_model(model: nn.Module) -> ModelInfo:
    """Find the timm network in ``model`` (itself or a submodule) and its family."""
    cnn = None
    for name, module in model.named_modules():
        if _is_vit(module):
            return ModelInfo("vit", f"{name}." if name else "", module)
        if cnn is None and isinstance(getattr(module, "feature_info", None), list):
            cnn = ModelInfo("cnn", f"{name}." if name else "", module)
    return cnn or ModelInfo("cnn", "", model)


def default_layer(model: nn.Module) -> str:
    """Default layer name: the last block's norm1 for ViTs, the last feature stage for CNNs.

    ViT: the class token is pooled after the last block, so patch tokens at the last block's output
    get no gradient; its norm1 output is the last place where they feed the class token.
    """
    info = inspect_model(model)
    if info.family == "vit":
        return f"{info.prefix}blocks.{len(info.inner.blocks) - 1}.norm1"
    feature_info = getattr(info.inner, "feature_info", None)
    if feature_info:
        return info.prefix + feature_info[-1]["module"]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d and is not a timm ViT; name a layer explicitly")
    return convs[-1]


def _lookup(root: nn.Module, name: str) -> str | None:
    """Canonical name of ``name`` under ``root`` (negative indices into containers allowed), or None."""
    module, parts = root, []
    for part in name.split("."):
        children = module._modules
        if part not in children and part.lstrip("-").isdigit() and isinstance(module, (nn.Sequential, nn.ModuleList)):
            keys = list(children)
            index = int(part)
            part = keys[index] if -len(keys) <= index < len(keys) else part
        if part not in children or children[part] is None:
            return None
        module, parts = children[part], parts + [part]
    return ".".join(parts)


def layer_names(model: nn.Module) -> list[str]:
    """Names a user would pick from: modules of the timm network up to two levels deep, plus the
    modules beside the default layer (e.g. the last ViT block's norm1, attn, mlp)."""
    info = inspect_model(model)
    names = [name for name, _ in info.inner.named_modules() if name and name.count(".") <= 1]
    parent = default_layer(model).removeprefix(info.prefix).rpartition(".")[0]
    if parent:
        names += [f"{parent}.{child}" for child in info.inner.get_submodule(parent)._modules]
    return names


def resolve_layer(model: nn.Module, name: str | None) -> str:
    """Canonical module name for ``name`` (None: the family default); unknown names list the options."""
    if name is None:
        return default_layer(model)
    found = _lookup(model, name)
    if found:
        return found
    info = inspect_model(model)
    found = _lookup(model, info.prefix + name) if info.prefix else None
    if found:
        return found
    options = layer_names(model)
    every = [n for n, _ in info.inner.named_modules() if n]
    close = difflib.get_close_matches(name.removeprefix(info.prefix), every, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(
        f"unknown layer {name!r} in {type(info.inner).__name__}.{hint} Layers: {', '.join(options)} "
        f"(deeper modules by their full dotted name; negative indices such as 'blocks.-1.norm1' allowed)"
    )


def to_spatial(t: Tensor, info: ModelInfo, image_hw: tuple[int, int], channels_last: bool = False) -> Tensor:
    """A layer's output as an N×K×h×w map.

    CNN maps pass through; ViT tokens N×(prefix+h·w)×D lose their class/register/distillation tokens
    and are laid out on the patch grid of the actual input size; channels-last maps (timm patch
    embeddings with ``dynamic_img_size``) are permuted.
    """
    if t.dim() == 4:
        return t.permute(0, 3, 1, 2) if channels_last else t
    if t.dim() == 3 and info.family == "vit":
        h, w = info.grid(image_hw)
        tokens = t[:, info.num_prefix_tokens:]
        if tokens.shape[1] != h * w:
            raise ValueError(
                f"layer output has {t.shape[1]} tokens but a {image_hw[0]}×{image_hw[1]} input gives "
                f"{info.num_prefix_tokens} prefix + {h}×{w} patch tokens; choose a block-level layer"
            )
        return tokens.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
    raise ValueError(
        f"layer output of shape {tuple(t.shape)} has no spatial layout; choose a convolutional stage "
        f"(CNN) or a transformer block (ViT)"
    )


def is_channels_last(module: nn.Module) -> bool:
    """Whether a module emits N×H×W×C maps (timm patch embedding with ``output_fmt='NHWC'``)."""
    fmt = getattr(module, "output_fmt", None)
    return fmt is not None and str(getattr(fmt, "value", fmt)) == "NHWC"


def model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def attribution_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with parameter gradients off for the block; every module's mode and flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
