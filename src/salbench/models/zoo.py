"""Classifiers by name: small timm ResNets and ViTs, any timm ResNet/ViT/DeiT name, pretrained weights.

Every model is a :class:`Classifier`: a timm network with the input normalisation inside, so it
takes images in pixel space, float32 N×3×H×W in [0, 1]. Attribution methods that reason in pixel
space (gradient × input, integrated-gradient baselines, pixel perturbation) then need no knowledge
of mean/std, and a black image is exactly 0.
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import HybridEmbed
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import SalbenchError
from ..registry import Registry, UnknownNameError

# A builder makes the bare timm network: (num_classes, input_size, **kwargs) -> nn.Module.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
SPEC_KEYS = ("arch", "kwargs", "pretrained", "pretrained_file", "checkpoint", "mean", "std")
_VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")


class ModelSpecError(SalbenchError, ValueError):
    """An invalid model spec or an incompatible checkpoint; the message says what to change."""


class Classifier(nn.Module):
    """A timm network ``net`` behind its input normalisation.

    Input: float32 N×3×H×W in [0, 1] with H = W = ``input_size``. Output: logits N×``num_classes``.
    ``family`` is "cnn" (timm ResNet) or "vit" (timm VisionTransformer, DeiT included); ``arch`` and
    ``kwargs`` rebuild the same network.
    """

    def __init__(self, net: nn.Module, arch: str, kwargs: Mapping[str, Any], input_size: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.net, self.arch, self.kwargs, self.input_size = net, arch, dict(kwargs), input_size
        self.family = family_of(net, arch)
        self.num_classes = int(net.num_classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def family_of(net: nn.Module, arch: str) -> str:
    if isinstance(net, VisionTransformer):
        return "vit"
    if isinstance(net, ResNet):
        return "cnn"
    raise ModelSpecError(f"model {arch!r} is a timm {type(net).__name__}; salbench supports the timm ResNet "
                         "family (resnet*, resnext*, ...) and the ViT/DeiT family (vit_*, deit_*)")


@MODELS.register("resnet-small")
def resnet_small(num_classes: int, input_size: int, channels: tuple[int, ...] = (16, 32, 64, 128),
                 layers: tuple[int, ...] = (1, 1, 1, 1), stem_width: int = 8, **kw: Any) -> nn.Module:
    """A ResNet-10-like timm ResNet: a deep stem of three 3×3 convs (stem_width, stem_width, 2·stem_width
    channels; stride 2, then max-pool), one BasicBlock per stage of ``channels`` (total stride 32)."""
    return ResNet(BasicBlock, layers=tuple(layers), channels=tuple(channels), num_classes=num_classes,
                  stem_type="deep", stem_width=stem_width, **kw)


@MODELS.register("vit-tiny")
def vit_tiny(num_classes: int, input_size: int, patch_size: int = 8, embed_dim: int = 64, depth: int = 4,
             num_heads: int = 2, stem: str = "patch", stem_widths: tuple[int, ...] = (16, 32, 64), **kw: Any
             ) -> nn.Module:
    """A tiny timm VisionTransformer with a class token over an (input_size / patch_size)² token grid.

    ``stem="patch"``: the standard linear patch embedding (a pure ViT). ``stem="conv"``: log2(patch_size)
    3×3 stride-2 conv-BN-ReLU layers of ``stem_widths`` channels, then a 1×1 projection (timm HybridEmbed;
    ViT-hybrid, Xiao et al. 2021 "Early convolutions help transformers see better"): the same token grid,
    much faster to train from scratch on a small dataset.
    """
    if input_size % patch_size:
        raise ModelSpecError(f"vit-tiny: input size {input_size} is not a multiple of patch_size {patch_size}")
    if stem == "conv":
        n_conv = patch_size.bit_length() - 1
        if 1 << n_conv != patch_size or len(stem_widths) != n_conv:
            raise ModelSpecError(f"vit-tiny stem=conv needs a power-of-two patch_size and one stem width per "
                                 f"stride-2 conv (log2(patch_size)); got patch_size={patch_size}, "
                                 f"stem_widths={list(stem_widths)}")
        layers, c = [], 3
        for w in stem_widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        kw["embed_layer"] = functools.partial(HybridEmbed, backbone=nn.Sequential(*layers))
        patch_size = 1  # HybridEmbed's patch size is counted on the stem's output grid
    elif stem != "patch":
        raise ModelSpecError(f"vit-tiny: unknown stem {stem!r}; use 'patch' (pure ViT) or 'conv'")
    return VisionTransformer(img_size=input_size, patch_size=patch_size, num_classes=num_classes,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kw)


def as_spec(name_or_spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """A validated spec dict: ``{arch, kwargs, pretrained, pretrained_file, checkpoint, mean, std}``.

    ``arch`` is a registered name (see ``MODELS``) or a timm model name; ``pretrained`` a timm name
    with weights (``true`` = arch's default weights, or e.g. "resnet18.a1_in1k", which also sets
    ``arch``); ``pretrained_file`` a local file with those weights (offline); ``checkpoint`` a salbench
    checkpoint dir whose weights initialise the model (``arch`` and ``kwargs`` default to the checkpoint's).
    """
    spec = {"arch": name_or_spec} if isinstance(name_or_spec, str) else dict(name_or_spec)
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ModelSpecError(f"unknown model spec keys {unknown}; known keys: {list(SPEC_KEYS)}")
    pre = spec.get("pretrained")
    if isinstance(pre, str):
        base = timm.models.parse_model_name(pre)[1].split(".")[0]
        if spec.get("arch", base) != base:
            raise ModelSpecError(f"pretrained {pre!r} is weights for {base!r}, not arch {spec['arch']!r}; "
                                 "drop arch or make them agree")
        spec["arch"] = base
    if spec.get("checkpoint") and not spec.get("arch"):
        from .checkpoint import read_manifest

        saved = read_manifest(spec["checkpoint"])
        spec["arch"], spec["kwargs"] = saved["arch"], spec.get("kwargs", saved["kwargs"])
    if not spec.get("arch"):
        raise ModelSpecError(f"model spec {spec} names no arch; give arch: <one of {MODELS.names()} or a timm name>")
    if spec.get("pretrained_file") and not pre:
        raise ModelSpecError("pretrained_file is given without pretrained; set pretrained: true")
    if pre and spec.get("checkpoint"):
        raise ModelSpecError("give either pretrained or checkpoint, not both")
    return spec


def _timm_net(arch: str, num_classes: int, input_size: int, pretrained: bool | str, pretrained_file: str | None,
              kwargs: Mapping[str, Any]) -> nn.Module:
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, MODELS.names() + timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown model {arch!r}.{hint} Known models: {', '.join(MODELS.names())}, "
                               "or any timm ResNet/ViT/DeiT name (timm.list_models('resnet*'), ('vit_*'), ('deit_*'))")
    kw = dict(kwargs)
    if timm.models.model_entrypoint(arch).__module__ in _VIT_MODULES:
        kw.setdefault("img_size", input_size)
    if pretrained and pretrained_file:
        if not Path(pretrained_file).is_file():
            raise ModelSpecError(f"pretrained_file {pretrained_file} does not exist; give the path of the "
                                 f"weights file for {arch!r}")
        kw["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
    name = pretrained if isinstance(pretrained, str) else arch
    if not pretrained:
        return timm.create_model(name, num_classes=num_classes, **kw)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kw)
    except Exception as e:  # hub, network and file errors alike: the fix is the same
        raise ModelSpecError(f"could not load pretrained weights {name!r} ({type(e).__name__}: {e}); without "
                             "network access put them in the Hugging Face cache or give pretrained_file: <path>"
                             ) from e


def _default_norm(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean, std of timm weights ``name`` (arch or arch.tag); ImageNet's for salbench models."""
    if name in MODELS or not timm.is_model(name):
        return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    cfg = timm.models.get_pretrained_cfg(name)
    return (cfg.mean, cfg.std) if cfg is not None else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def build_model(name_or_spec: str | Mapping[str, Any], num_classes: int, input_size: int) -> Classifier:
    """A :class:`Classifier` for ``num_classes`` classes at ``input_size``² px (weights from the torch RNG,
    timm pretrained weights, or a salbench checkpoint, as the spec says; see :func:`as_spec`)."""
    spec = as_spec(name_or_spec)
    arch, kwargs = spec["arch"], dict(spec.get("kwargs") or {})
    if spec.get("pretrained") and arch in MODELS:
        raise ModelSpecError(f"{arch!r} is a salbench model without pretrained weights; use a timm name "
                             "(e.g. resnet18, vit_tiny_patch16_224) or a checkpoint")
    if arch in MODELS:
        net = MODELS.get(arch)(num_classes, input_size, **kwargs)
    else:
        net = _timm_net(arch, num_classes, input_size, spec.get("pretrained") or False, spec.get("pretrained_file"),
                        kwargs)
    mean, std = _default_norm(spec["pretrained"] if isinstance(spec.get("pretrained"), str) else arch)
    model = Classifier(net, arch, kwargs, input_size, tuple(spec.get("mean", mean)), tuple(spec.get("std", std)))
    if spec.get("checkpoint"):
        from .checkpoint import load_state

        model.load_state_dict(load_state(spec["checkpoint"], num_classes, input_size, arch))
    return model


def preprocess(images: np.ndarray | torch.Tensor, manifest: Mapping[str, Any], device: str | torch.device | None = None
               ) -> torch.Tensor:
    """uint8 N×H×W×3 images -> float32 N×3×H×W in [0, 1], the input of every salbench model.

    Normalisation with the manifest's mean/std happens inside the model; this checks the size.
    """
    x = torch.as_tensor(images, device=device)
    size = int(manifest["input_size"])
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"preprocess expects uint8 N×H×W×3 images, got {x.dtype} of shape {tuple(x.shape)}")
    if x.shape[1:3] != (size, size):
        raise ValueError(f"images are {x.shape[1]}×{x.shape[2]} px but the model takes {size}×{size}; "
                         "render the task at the model's input size")
    return to_unit(x)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×3 -> float32 N×3×H×W in [0, 1] (no checks; see :func:`preprocess`)."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)
