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

from .base import SIMILARITIES, batches, check_pair, in_chunks, undefined_where_nonfinite
from .normalise import signed_normalise

K1, K2 = 0.01, 0.03


# Rows of maps per chunk hold about this many input elements on a CPU: the five float64 window sums of
# one 128×128 map then stay in the L2 cache (about 2× faster than CHUNK_ELEMENTS); other devices use
# CHUNK_ELEMENTS.
CPU_CHUNK_ELEMENTS = 1 << 14


def _box_sum(t: Tensor, win_size: int) -> Tensor:
    """Sum over every win_size × win_size window of t (...×H×W) -> ...×(H-w+1)×(W-w+1), by shifted adds."""
    w = t.shape[-1] - win_size + 1
    rows = t[..., :w].clone()
    for i in range(1, win_size):
        rows += t[..., i : w + i]
    h = rows.shape[-2] - win_size + 1
    out = rows[..., :h, :].clone()
    for i in range(1, win_size):
        out += rows[..., i : h + i, :]
    return out


def _mean_ssim(x: Tensor, y: Tensor, data_range: Tensor, mask: Tensor | None = None, *, win_size: int) -> Tensor:
    # scikit-image's SSIM written with window sums S instead of means (n = win_size² pixels per window):
    # ((2 Sx Sy + C1)(2 (n Sxy - Sx Sy) + C2)) / ((Sx² + Sy² + C1)(n (Sxx + Syy) - Sx² - Sy² + C2))
    # with C1 = c1 n² and C2 = c2 n (n - 1), in place where a temporary is not needed again.
    x, y = x.to(torch.float64), y.to(torch.float64)
    n = win_size**2
    sx, sy, sxx, syy, sxy = _box_sum(torch.stack([x, y, x * x, y * y, x * y], 1), win_size).unbind(1)
    c1, c2 = (K1 * data_range) ** 2 * n * n, (K2 * data_range) ** 2 * n * (n - 1)
    p = sx * sy
    q = sx.square_().add_(sy.square_())
    num = (2 * p).add_(c1).mul_(sxy.mul_(n).sub_(p).mul_(2).add_(c2))
    den = sxx.add_(syy).mul_(n).sub_(q).add_(c2).mul_(q.add_(c1))
    s = num.div_(den).flatten(1)
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
    batched = (x, y, R, *([] if mask is None else [mask]))
    if x.device.type != "cpu" or len(x) == 0:
        return in_chunks(partial(_mean_ssim, win_size=win_size), *batched)
    per_chunk = max(1, CPU_CHUNK_ELEMENTS // x[0].numel())
    return torch.cat([_mean_ssim(*(t[s] for t in batched), win_size=win_size) for s in batches(len(x), per_chunk)])


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """SSIM of paired maps (N×C×H×W or N×H×W) after the signed Sanity Checks normalisation to
    [-1, 1]: window 5, data range 2 -> N; NaN for an all-zero map or one with a NaN or ±inf entry."""
    a, b = check_pair(a, b)
    return undefined_where_nonfinite(ssim_index(signed_normalise(a), signed_normalise(b), data_range=2.0, win_size=5),
                                     a, b)


SIMILARITIES.register("ssim")(ssim)
