"""Structural similarity, batched, with scikit-image's ``structural_similarity`` definition.

Uniform win_size × win_size window, sample covariance, K1 = 0.01, K2 = 0.03; the mean is taken
over the pixels whose window lies inside the image (scikit-image crops (win_size - 1) / 2 px),
optionally restricted further to a mask. Sanity Checks use data range 2 on [-1, 1] maps; COSE
uses the larger value range of the two maps and a validity mask (see :mod:`.cose`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from .base import SIMILARITIES, check_pair, in_chunks, undefined_where_nonfinite
from .normalise import signed_normalise

K1, K2 = 0.01, 0.03


def _box_mean(t: Tensor, win_size: int) -> Tensor:
    """Mean over every win_size × win_size window of t (...×H×W) -> ...×(H-w+1)×(W-w+1), separably."""
    return t.unfold(-1, win_size, 1).sum(-1).unfold(-2, win_size, 1).sum(-1) / win_size**2


def _mean_ssim(x: Tensor, y: Tensor, data_range: Tensor, mask: Tensor | None = None, *, win_size: int) -> Tensor:
    x, y = x.to(torch.float64), y.to(torch.float64)
    means = _box_mean(torch.stack([x, y, x * x, y * y, x * y], 1), win_size)
    ux, uy, uxx, uyy, uxy = means.unbind(1)
    cov_norm = win_size**2 / (win_size**2 - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = (((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))).flatten(1)
    if mask is None:
        return s.mean(1)
    pad = (win_size - 1) // 2
    keep = mask[:, pad : mask.shape[1] - pad, pad : mask.shape[2] - pad].flatten(1)
    return torch.where(keep, s, 0).sum(1) / keep.sum(1)


def ssim_index(
    x: Tensor, y: Tensor, data_range: float | Tensor, win_size: int = 5, mask: Tensor | None = None
) -> Tensor:
    """Mean SSIM of paired images x, y (N×H×W each) -> N, computed in float64.

    ``data_range``: a number or a tensor N. ``mask`` (N×H×W bool): average only over its pixels
    (NaN where none of them is at least (win_size - 1) / 2 px from the border).
    """
    if x.shape != y.shape or x.dim() != 3:
        raise ValueError(f"x and y must both be N×H×W, got {tuple(x.shape)} and {tuple(y.shape)}")
    if win_size % 2 == 0 or win_size > min(x.shape[1:]):
        raise ValueError(f"win_size must be odd and at most the image size {tuple(x.shape[1:])}, got {win_size}")
    R = torch.as_tensor(data_range, dtype=torch.float64, device=x.device).reshape(-1, 1, 1).expand(len(x), 1, 1)
    return in_chunks(partial(_mean_ssim, win_size=win_size), x, y, R, *([] if mask is None else [mask]))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """SSIM of paired maps (N×C×H×W or N×H×W) after the signed Sanity Checks normalisation to
    [-1, 1]: window 5, data range 2 -> N; NaN for an all-zero map or one with a NaN or ±inf entry."""
    a, b = check_pair(a, b)
    return undefined_where_nonfinite(ssim_index(signed_normalise(a), signed_normalise(b), data_range=2.0, win_size=5),
                                     a, b)


SIMILARITIES.register("ssim")(ssim)
