"""The map normalisations of Sanity Checks for Saliency Maps (Adebayo et al. 2018)."""

from __future__ import annotations

from torch import Tensor

from .base import as_maps


def percentile(x: Tensor, q: float) -> Tensor:
    """Per-row ``q``-th percentile of x (N×L) with linear interpolation, as numpy.percentile -> N."""
    length = x.shape[1]
    position = q / 100 * (length - 1)
    below = min(int(position), length - 2) if length > 1 else 0
    # The two order statistics around the position, from a top-k on the nearer end (faster than a sort).
    if below + 1 > length // 2:
        top = x.topk(length - below, dim=1).values
        low, high = top[:, -1], top[:, max(-2, -top.shape[1])]
    else:
        bottom = x.topk(min(below + 2, length), dim=1, largest=False).values
        low, high = bottom[:, below], bottom[:, -1]
    return low + (high - low) * (position - below)


def abs_normalise(maps: Tensor, q: float = 99) -> Tensor:
    """Channel abs-sum, shifted by its minimum and scaled by its q-th percentile, clipped to [0, 1].

    maps N×C×H×W (or N×H×W) -> N×H×W; the authors' ``VisualizeImageGrayscale``.
    """
    m = as_maps(maps).abs().sum(1)
    flat = m.flatten(1)
    vmin = flat.amin(1)[:, None, None]
    vmax = percentile(flat, q)[:, None, None]
    return ((m - vmin) / (vmax - vmin)).clamp(0, 1)


def signed_normalise(maps: Tensor, q: float = 99) -> Tensor:
    """Signed channel sum scaled by the q-th percentile of its absolute value, clipped to [-1, 1].

    maps N×C×H×W (or N×H×W) -> N×H×W. The authors' ``VisualizeImageDiverging`` divides by the
    absolute value of the percentile of the signed sum instead; SPEC.md section 2 fixes this one.
    """
    m = as_maps(maps).sum(1)
    span = percentile(m.abs().flatten(1), q)[:, None, None]
    return (m / span).clamp(-1, 1)
