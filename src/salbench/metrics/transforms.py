"""COSE's input transforms (Daroya, Sun, Maji 2023; SPEC.md section 3), batched, a magnitude per image.

Geometric transforms (translate x/y, rotate, flips) are equivariances: each has an inverse that
maps a saliency map back to the original frame. They use torchvision's affine grid (rotation
counter-clockwise about the image centre) with nearest interpolation and black fill, built per
image so that one ``grid_sample`` call serves a batch of different magnitudes. Photometric
transforms are invariances; the factor-controlled ones blend with torchvision's degenerate images
exactly as ``torchvision.transforms.v2.functional`` does, with a factor per image.

Magnitudes: 31 bins from 0 to the maximum (translation 32 px at 224 px, scaled with the image
size and rounded to whole pixels, at least 1, so the inverse is exact; rotation 135°;
photometric factor 1 ± 0.99), bin 0 (the identity) excluded, sign drawn at random. Blur and
smooth (PIL's fixed filters), autocontrast, equalize and the flips have no magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ..registry import Registry

GEOMETRIC, PHOTOMETRIC = "geometric", "photometric"
N_BINS = 31


@dataclass(frozen=True)
class Transform:
    """One COSE transform of kind GEOMETRIC or PHOTOMETRIC.

    ``apply(images N×C×H×W, magnitudes N)``; ``max_magnitude(H, W)``: the largest |magnitude|
    (None: no magnitude); ``invert(maps N×C×H×W, magnitudes N)``: a geometric transform's output
    mapped back to the original frame; ``whole``: magnitudes are rounded to whole numbers.
    """

    kind: str
    apply: Callable[[Tensor, Tensor], Tensor]
    max_magnitude: Callable[[int, int], float] | None = None
    invert: Callable[[Tensor, Tensor], Tensor] | None = None
    whole: bool = False


TRANSFORMS: Registry[Transform] = Registry("transform")


def sample_magnitudes(transform: Transform, n: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """n signed magnitudes (float64, CPU) from bins 1..30 of 31 evenly spaced ones; zeros if the transform has none."""
    if transform.max_magnitude is None:
        return torch.zeros(n, dtype=torch.float64)
    bins = torch.randint(1, N_BINS, (n,), generator=generator)
    signs = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    magnitudes = bins.to(torch.float64) / (N_BINS - 1) * transform.max_magnitude(*size)
    if transform.whole:
        magnitudes = magnitudes.round().clamp(min=1)
    return signs * magnitudes


def affine(x: Tensor, angle: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Rotate x (N×C×H×W) counter-clockwise by ``angle`` degrees about the centre, then shift by
    (tx, ty) px; one value per image (N each). Nearest interpolation, black fill; the same grid
    as torchvision's ``rotate`` and ``affine``."""
    n, _, height, width = x.shape
    # torchvision builds the inverse matrix in double precision from angle % 360.
    rot = torch.deg2rad(-(angle.to(torch.float64) % 360))
    cos, sin = rot.cos(), rot.sin()
    tx, ty = tx.to(torch.float64), ty.to(torch.float64)
    theta = torch.stack([cos, sin, -cos * tx - sin * ty, -sin, cos, sin * tx - cos * ty], 1)
    theta = theta.to(x.device, x.dtype).reshape(n, 2, 3)
    base = torch.empty(1, height, width, 3, dtype=x.dtype, device=x.device)
    base[..., 0] = torch.linspace((1 - width) * 0.5, (width - 1) * 0.5, width, device=x.device)
    base[..., 1] = torch.linspace((1 - height) * 0.5, (height - 1) * 0.5, height, device=x.device)[:, None]
    base[..., 2] = 1
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * width, 0.5 * height], dtype=x.dtype, device=x.device)
    grid = base.reshape(1, -1, 3).expand(n, -1, -1).bmm(scaled).reshape(n, height, width, 2)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """factor·x + (1 - factor)·degenerate clipped to [0, 1], a factor (N) per image, as torchvision's ``_blend``."""
    f = factor.to(torch.float64).reshape(-1, 1, 1, 1)
    return (x * f.to(x.device, x.dtype) + degenerate * (1 - f).to(x.device, x.dtype)).clamp(0, 1)


def keep_border_filter(x: Tensor, kernel: Tensor) -> Tensor:
    """Convolve each channel of x (N×C×H×W) with a k×k ``kernel``, keeping the (k - 1) / 2 px border
    unchanged, as PIL's ``ImageFilter`` kernels do."""
    n, c, height, width = x.shape
    pad = kernel.shape[0] // 2
    inner = F.conv2d(x.reshape(n * c, 1, height, width), kernel.to(x)[None, None]).reshape(
        n, c, height - 2 * pad, width - 2 * pad
    )
    out = x.clone()
    out[..., pad : height - pad, pad : width - pad] = inner
    return out


# PIL's ImageFilter.SMOOTH (torchvision's sharpness degenerate) and ImageFilter.BLUR kernels.
SMOOTH_KERNEL = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
BLUR_KERNEL = torch.ones(5, 5)
BLUR_KERNEL[1:4, 1:4] = 0
BLUR_KERNEL /= 16


def _zero(m: Tensor) -> Tensor:
    return torch.zeros_like(m)


def _translate_x(x: Tensor, m: Tensor) -> Tensor:
    return affine(x, _zero(m), m, _zero(m))


def _translate_y(x: Tensor, m: Tensor) -> Tensor:
    return affine(x, _zero(m), _zero(m), m)


def _rotate(x: Tensor, m: Tensor) -> Tensor:
    return affine(x, m, _zero(m), _zero(m))


def _hflip(x: Tensor, m: Tensor) -> Tensor:
    return x.flip(-1)


def _vflip(x: Tensor, m: Tensor) -> Tensor:
    return x.flip(-2)


def _gray(x: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x


def _translation(size: int) -> float:
    return 32 * size / 224


TRANSFORMS.register("translate_x")(
    Transform(GEOMETRIC, _translate_x, lambda h, w: _translation(w), lambda maps, m: _translate_x(maps, -m), whole=True)
)
TRANSFORMS.register("translate_y")(
    Transform(GEOMETRIC, _translate_y, lambda h, w: _translation(h), lambda maps, m: _translate_y(maps, -m), whole=True)
)
TRANSFORMS.register("rotate")(Transform(GEOMETRIC, _rotate, lambda h, w: 135.0, lambda maps, m: _rotate(maps, -m)))
TRANSFORMS.register("hflip")(Transform(GEOMETRIC, _hflip, invert=_hflip))
TRANSFORMS.register("vflip")(Transform(GEOMETRIC, _vflip, invert=_vflip))


def _factor(height: int, width: int) -> float:
    """Photometric factors are 1 ± [0, 0.99]."""
    return 0.99


TRANSFORMS.register("brightness")(Transform(PHOTOMETRIC, lambda x, m: blend(x, torch.zeros_like(x), 1 + m), _factor))
TRANSFORMS.register("saturation")(Transform(PHOTOMETRIC, lambda x, m: blend(x, _gray(x), 1 + m), _factor))
TRANSFORMS.register("contrast")(
    Transform(PHOTOMETRIC, lambda x, m: blend(x, _gray(x).mean((-3, -2, -1), keepdim=True), 1 + m), _factor)
)
TRANSFORMS.register("sharpness")(
    Transform(PHOTOMETRIC, lambda x, m: blend(x, keep_border_filter(x, SMOOTH_KERNEL), 1 + m), _factor)
)
TRANSFORMS.register("autocontrast")(Transform(PHOTOMETRIC, lambda x, m: TF.autocontrast(x)))
TRANSFORMS.register("equalize")(Transform(PHOTOMETRIC, lambda x, m: TF.equalize(x)))
TRANSFORMS.register("blur")(Transform(PHOTOMETRIC, lambda x, m: keep_border_filter(x, BLUR_KERNEL)))
TRANSFORMS.register("smooth")(Transform(PHOTOMETRIC, lambda x, m: keep_border_filter(x, SMOOTH_KERNEL)))
