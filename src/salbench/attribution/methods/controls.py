"""Model-independent control maps: what a metric gives maps that know nothing of the model.

- ``edge``: Sobel gradient magnitude of the input, sqrt(g_x² + g_y²) with the 3×3 Sobel kernels
  ([1, 2, 1] smoothing ⊗ [-1, 0, 1] difference), per colour channel, edge pixels replicated
  (scipy.ndimage.sobel with mode "reflect"): N×C×H×W, each metric pools the channels as it pools
  gradient maps. A metric that ranks it above real methods measures the image, not the model
  (Binder et al., CVPR 2023).
- ``gt_mask``: the ground-truth mask itself (an oracle), N×1×H×W in {0, 1}.
- ``gt_blur``: the mask blurred by a Gaussian of ``sigma`` px (truncated at 4 sigma, edge pixels
  replicated: scipy.ndimage.gaussian_filter with mode "nearest"), N×1×H×W in [0, 1].

None of them calls the model; the GT controls need ``masks`` (N×H×W bool), which the attribute
stage passes from the split's ``gt_mask``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import SalbenchError
from ..base import FunctionMethod, register

SOBEL_SMOOTH = (1.0, 2.0, 1.0)
SOBEL_DIFF = (-1.0, 0.0, 1.0)


def _correlate(x: Tensor, weights: Tensor, dim: int) -> Tensor:
    """Correlate x along ``dim`` (-1 or -2) with odd-length ``weights``, edge values replicated; same shape.
    Shifted weighted adds: several times faster than a one-channel conv2d on a CPU."""
    radius = len(weights) // 2
    pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
    padded = F.pad(x, pad, mode="replicate")
    size = x.shape[dim]
    out = torch.zeros_like(x)
    for k, w in enumerate(weights.tolist()):
        if w != 0:
            out.add_(padded.narrow(dim, k, size), alpha=w)
    return out


def separable_filter(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Correlate every channel of x (N×C×H×W) with the outer product rows ⊗ cols (odd lengths),
    edge pixels replicated; N×C×H×W."""
    return _correlate(_correlate(x, cols, -1), rows, -2)


def sobel_magnitude(images: Tensor) -> Tensor:
    """Per-channel Sobel gradient magnitude of images N×C×H×W -> N×C×H×W (non-negative)."""
    smooth, diff = torch.tensor(SOBEL_SMOOTH), torch.tensor(SOBEL_DIFF)
    gy = separable_filter(images, diff, smooth)
    gx = separable_filter(images, smooth, diff)
    return torch.hypot(gx, gy)


def gaussian_kernel(sigma: float) -> Tensor:
    """1-D Gaussian weights of radius round(4 sigma), summing to 1 (scipy's gaussian_filter kernel)."""
    radius = int(4.0 * sigma + 0.5)
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    return (g / g.sum()).float()


def _mask_maps(masks: Tensor, images: Tensor) -> Tensor:
    expected = (images.shape[0], *images.shape[2:])
    if masks.dtype != torch.bool or tuple(masks.shape) != expected:
        raise SalbenchError(f"masks must be a bool tensor N×H×W = {expected} matching the images, got "
                            f"{masks.dtype} {tuple(masks.shape)}")
    return masks.to(device=images.device, dtype=images.dtype).unsqueeze(1)


def edge(model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int) -> Tensor:
    """Sobel magnitude of the images, N×C×H×W; ``model`` and ``targets`` are not used."""
    return sobel_magnitude(images)


def gt_mask(model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int, masks: Tensor) -> Tensor:
    """The GT masks as maps, N×1×H×W in {0, 1}."""
    return _mask_maps(masks, images)


def gt_blur(model: nn.Module, images: Tensor, targets: Tensor, *, batch_size: int, masks: Tensor,
            sigma: float = 4.0) -> Tensor:
    """The GT masks blurred by a Gaussian of ``sigma`` px, N×1×H×W in [0, 1]."""
    if not sigma > 0:
        raise SalbenchError(f"gt_blur: sigma must be a positive number of pixels, got {sigma}")
    g = gaussian_kernel(float(sigma))
    return separable_filter(_mask_maps(masks, images), g, g)


register("edge", FunctionMethod(edge))
register("gt_mask", FunctionMethod(gt_mask, needs=("masks",)))
register("gt_blur", FunctionMethod(gt_blur, needs=("masks",)))
