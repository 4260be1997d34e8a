"""Models from outside the pipeline (params.yaml ``train.models.<name>: {source: checkpoint, ...}``).

Three kinds, each with its preprocessing stated in params (``input_size``, ``mean``, ``std``; the task's
images must be at ``input_size``: import the folder with ``image_size``):

- ``timm: <name>`` + ``weights: <file>``: a timm ResNet/ViT/DeiT, packaged as a regular :class:`Classifier`;
- ``entry: "module:function"`` (+ ``kwargs``, optional ``weights``): ``function(**kwargs)`` returns an nn.Module;
- ``torchscript: <file.pt>``: a scripted module. Autograd-only methods (gradient, gradient_x_input,
  integrated_gradients, smoothgrad, vargrad, the controls) work; methods that hook modules (CAMs, guided
  backprop, deconvolution, LRP, NormGrad) cannot hook a ScriptModule and stop with an error naming them.

The train stage packages one into ``final`` (model.safetensors + manifest with ``external``; a TorchScript
file travels as ``model.pt``), makes the random-init twin by re-initialising (timm/entry: a fresh build;
TorchScript: PyTorch's default Linear/Conv init, norms to 1, biases to 0) and trains the random-label
model from that twin; it writes no intermediate checkpoints (COSE's model changes are the random init).
"""
from __future__ import annotations

import importlib
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SalbenchError
from .zoo import Classifier, ModelSpecError, build_model

KINDS = ("timm", "entry", "torchscript")
SCRIPT_FILE = "model.pt"


class External(Classifier):
    """An arbitrary network ``net`` (entry point or TorchScript) behind its input normalisation.

    Input: float32 N×3×H×W in [0, 1] at ``input_size``; output logits N×``num_classes``; ``family`` is "vit"
    for a timm-like ViT (``patch_embed`` and ``blocks``), else "cnn" (default layer: the last Conv2d).
    """

    def __init__(self, net: nn.Module, arch: str, kwargs: Mapping[str, Any], input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], num_classes: int) -> None:
        from ..attribution.model import inspect_model

        nn.Module.__init__(self)
        self.net, self.arch, self.kwargs, self.input_size = net, arch, dict(kwargs), input_size
        self.family, self.num_classes = inspect_model(net).family, num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))


def kind_of(spec: Mapping[str, Any]) -> str:
    given = [k for k in KINDS if spec.get(k)]
    if len(given) != 1:
        raise ModelSpecError(f"an external model names exactly one of {list(KINDS)}, got {given or 'none'}")
    return given[0]


def _entry(target: str) -> Any:
    module, _, name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ModelSpecError(f"entry {target!r}: cannot import it ({e}); give 'package.module:function' "
                             "importable on PYTHONPATH") from None
    return fn


def _state(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _net(spec: Mapping[str, Any], kind: str, weights: bool) -> nn.Module:
    if kind == "torchscript":
        return torch.jit.load(spec["torchscript"], map_location="cpu")
    net = _entry(spec["entry"])(**(spec.get("kwargs") or {}))
    if not isinstance(net, nn.Module):
        raise ModelSpecError(f"entry {spec['entry']!r} returned a {type(net).__name__}, not an nn.Module")
    if weights and spec.get("weights"):
        _load(net, spec["weights"], spec["entry"])
    return net


def _load(net: nn.Module, weights: str, what: str) -> None:
    try:
        net.load_state_dict(_state(weights))
    except (RuntimeError, OSError, ValueError) as e:
        raise ModelSpecError(f"weights {weights!r} do not fit {what!r}: {str(e)[:300]}") from None


def build_external(spec: Mapping[str, Any], num_classes: int, weights: bool = True) -> Classifier:
    """The model of ``spec`` (params ``train.models.<name>``) for a task of ``num_classes`` classes;
    ``weights=False``: the same architecture freshly initialised from the torch RNG (the random-init twin)."""
    kind, size = kind_of(spec), int(spec["input_size"])
    mean, std = tuple(spec.get("mean") or (0.0, 0.0, 0.0)), tuple(spec.get("std") or (1.0, 1.0, 1.0))
    if kind == "timm":
        model = build_model({"arch": spec["timm"], "kwargs": dict(spec.get("kwargs") or {}), "mean": list(mean),
                             "std": list(std)}, num_classes, size)
        if weights:  # strict, head included (timm's pretrained loading would drop a head of another size)
            _load(model.net, spec["weights"], spec["timm"])
    else:
        arch = spec["entry"] if kind == "entry" else "torchscript"
        model = External(_net(spec, kind, weights), arch, spec.get("kwargs") or {}, size, mean, std, num_classes)
        if kind == "torchscript" and not weights:
            reinit(model.net)
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, size, size))
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ModelSpecError(f"the {kind} model gives outputs of shape {tuple(out.shape)} for one "
                             f"{size}×{size} image, but the task has {num_classes} classes: give one logit per class "
                             "(folders.<task>.classes orders them)")
    return model


@torch.no_grad()
def reinit(net: nn.Module) -> None:
    """PyTorch's default Linear/Conv initialisation for every parameter of rank >= 2 (kaiming-uniform,
    a=√5), 1 for rank-1 ``*weight`` (norms), 0 for biases: works on ScriptModules, which have no
    ``reset_parameters``."""
    for name, p in net.named_parameters():
        if p.ndim >= 2:
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        elif name.endswith("weight"):
            p.fill_(1.0)
        else:
            p.zero_()


def package(spec: Mapping[str, Any], model: Classifier, path: Path, manifest: Mapping[str, Any]) -> None:
    """Save ``model`` as a checkpoint at ``path`` (:func:`save_checkpoint`); entry-point and TorchScript
    models record ``external`` in the manifest, and a TorchScript file travels as ``model.pt`` (the
    saved weights overwrite its parameters on load)."""
    from .checkpoint import save_checkpoint

    kind = kind_of(spec)
    extra = {} if kind == "timm" else {"external": {"kind": kind, "entry": spec.get("entry")}}
    save_checkpoint(path, model, {**manifest, **extra})
    if kind == "torchscript":
        shutil.copyfile(spec["torchscript"], path / SCRIPT_FILE)


def rebuild(path: Path, manifest: Mapping[str, Any]) -> Classifier:
    """An empty :class:`External` for checkpoint ``path`` (the caller loads its state dict)."""
    ext = manifest["external"]
    if ext["kind"] == "torchscript":
        net = torch.jit.load(str(require_script(path)), map_location="cpu")
    else:
        net = _net({"entry": ext["entry"], "kwargs": manifest["kwargs"]}, "entry", weights=False)
    return External(net, manifest["arch"], manifest["kwargs"], int(manifest["input_size"]), tuple(manifest["mean"]),
                    tuple(manifest["std"]), len(manifest["classes"]))


def require_script(path: Path) -> Path:
    f = Path(path) / SCRIPT_FILE
    if not f.is_file():
        raise SalbenchError(f"{f} is missing: the checkpoint of a TorchScript model needs it; rerun its train stage")
    return f


# Methods that only need autograd through the whole model (no module hooks, no layer, no module-type
# rules): the ones a TorchScript model can run. Others would hook nothing in a ScriptModule (guided
# backprop would silently give the plain gradient), so they are refused.
SCRIPT_SAFE = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad", "random", "edge",
               "gt_mask", "gt_blur")


def check_hooks(model: nn.Module, methods: Mapping[str, Mapping[str, Any] | None]) -> None:
    """For a TorchScript model: stop, naming every ``attribute.methods`` entry whose method (or wrapped
    ``base``) is not in :data:`SCRIPT_SAFE`, before any work; other models pass."""
    if not isinstance(getattr(model, "net", None), torch.jit.ScriptModule):
        return
    bad = [name for name, spec in methods.items()
           if {str((spec or {}).get("method", name)), str((spec or {}).get("base", "gradient"))} - set(SCRIPT_SAFE)]
    if bad:
        raise SalbenchError(f"attribute.methods {bad} hook modules or layers, which a TorchScript model does not "
                            f"allow (it runs {list(SCRIPT_SAFE)}); drop them for this model or give it as an entry "
                            "point (module:function) or timm weights")
