"""Histogram of oriented gradients, batched, matching ``skimage.feature.hog`` on single-channel images,
and the Sanity Checks HOG similarity: Spearman correlation of the HOG features of the [0, 1] maps.

Settings follow scikit-image's documented HOG example, whose 16-px cells SPEC.md names: 8
orientations, 16×16-px cells at 224 px (scaled with image size), 1×1-cell blocks, L2-Hys.

Deliberate difference: scikit-image sums each cell's histogram in float32; this sums in float64.
Features agree to ~1e-7, but features closer than float32 resolution can rank differently, so
the Spearman correlation of HOG features agrees with scikit-image + scipy to ~1e-4, not 1e-5.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from .base import SIMILARITIES, check_pair, in_chunks, undefined_where_nonfinite
from .normalise import abs_normalise
from .rank import rank_correlation

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
_EPS = 1e-5


def hog_cell_size(height: int, width: int) -> tuple[int, int]:
    """The authors' 16-px cells at 224 px, scaled to an image of ``height`` × ``width``."""
    return max(1, round(16 * height / 224)), max(1, round(16 * width / 224))


def _normalise_blocks(blocks: Tensor, method: str) -> Tensor:
    """Normalise blocks N×B×L over their last dimension, as skimage's ``_hog_normalize_block``."""
    if method == "L1":
        return blocks / (blocks.abs().sum(-1, keepdim=True) + _EPS)
    if method == "L1-sqrt":
        return (blocks / (blocks.abs().sum(-1, keepdim=True) + _EPS)).sqrt()
    out = blocks / (blocks.square().sum(-1, keepdim=True) + _EPS**2).sqrt()
    if method == "L2":
        return out
    out = out.clamp(max=0.2)
    return out / (out.square().sum(-1, keepdim=True) + _EPS**2).sqrt()


def hog(
    images: Tensor,
    orientations: int = 8,
    pixels_per_cell: tuple[int, int] = (16, 16),
    cells_per_block: tuple[int, int] = (1, 1),
    block_norm: str = "L2-Hys",
) -> Tensor:
    """HOG feature vectors of single-channel images N×H×W -> N×F (F as skimage's ``feature_vector``).

    Central-difference gradients (0 on the border), unsigned orientations in [0°, 180°), per-cell
    histograms of gradient magnitude divided by the cell area, block normalisation.
    """
    if images.dim() != 3:
        raise ValueError(f"hog takes single-channel images N×H×W, got shape {tuple(images.shape)}")
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"unknown block_norm {block_norm!r}; known: {', '.join(BLOCK_NORMS)}")
    cells = (images.shape[1] // pixels_per_cell[0], images.shape[2] // pixels_per_cell[1])
    if cells[0] < cells_per_block[0] or cells[1] < cells_per_block[1]:
        raise ValueError(
            f"images of {tuple(images.shape[1:])} px are too small for "
            f"{pixels_per_cell}-px cells in {cells_per_block} blocks"
        )
    return in_chunks(
        partial(_hog, orientations=orientations, cell=pixels_per_cell, block=cells_per_block, norm=block_norm), images
    )


def _hog(images: Tensor, orientations: int, cell: tuple[int, int], block: tuple[int, int], norm: str) -> Tensor:
    (c_row, c_col), (b_row, b_col) = cell, block
    n_cells = (images.shape[1] // c_row, images.shape[2] // c_col)
    x = images.to(torch.float64)
    g_row, g_col = torch.zeros_like(x), torch.zeros_like(x)
    g_row[:, 1:-1] = x[:, 2:] - x[:, :-2]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    magnitude = torch.hypot(g_row, g_col)
    orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    # skimage compares against bin edges computed in float32.
    width = torch.tensor(180 / orientations, dtype=torch.float32)
    edges = (width * torch.arange(orientations, dtype=torch.float32)).to(x.device, torch.float64)
    # Bin = last edge <= orientation: a division, then one step of correction for its rounding.
    bins = (orientation / float(width)).floor().long().clamp(0, orientations - 1)
    bins = bins - (orientation < edges[bins]).long()
    upper = (bins + 1).clamp(max=orientations - 1)
    bins = bins + ((bins + 1 < orientations) & (orientation >= edges[upper])).long()
    rows = torch.arange(x.shape[1], device=x.device)[:, None]
    cols = torch.arange(x.shape[2], device=x.device)[None, :]
    cell_index = (rows // c_row) * n_cells[1] + cols // c_col
    # Pixels beyond the last whole cell vote into a discarded extra slot, as skimage drops them.
    outside = (rows >= n_cells[0] * c_row) | (cols >= n_cells[1] * c_col)
    slot = torch.where(outside, n_cells[0] * n_cells[1] * orientations, cell_index * orientations + bins)
    hist = torch.zeros(len(x), n_cells[0] * n_cells[1] * orientations + 1, dtype=x.dtype, device=x.device)
    hist.scatter_add_(1, slot.flatten(1), magnitude.flatten(1))
    hist = hist[:, :-1].reshape(len(x), *n_cells, orientations) / (c_row * c_col)
    blocks = hist.unfold(1, b_row, 1).unfold(2, b_col, 1)  # N×blocks_row×blocks_col×O×b_row×b_col
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).flatten(3)  # N×blocks_row×blocks_col×(b_row·b_col·O)
    return _normalise_blocks(blocks.flatten(1, 2), norm).flatten(1)


def hog_similarity(
    a: Tensor, b: Tensor, orientations: int = 8, pixels_per_cell: tuple[int, int] | None = None
) -> Tensor:
    """Spearman correlation of the HOG features of the [0, 1]-normalised maps -> N.

    a, b: N×C×H×W or N×H×W; ``pixels_per_cell`` defaults to :func:`hog_cell_size`. NaN for a constant map
    or one with a NaN or ±inf entry.
    """
    a, b = check_pair(a, b)
    cell = pixels_per_cell or hog_cell_size(*a.shape[2:])
    features = [hog(abs_normalise(m), orientations, cell) for m in (a, b)]
    return undefined_where_nonfinite(rank_correlation(*features), a, b)


SIMILARITIES.register("hog")(hog_similarity)
