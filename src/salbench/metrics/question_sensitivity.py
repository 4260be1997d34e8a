"""Question sensitivity (VQA analogue of class sensitivity): do the maps of one image follow the question?

For every pair of questions on the same image whose ground-truth object sets are disjoint (both non-empty),
the Spearman rank correlation of the signed channel sums of their two maps, as class sensitivity correlates
the maps of two classes; lower is better (a map that ignores the question correlates 1 with itself).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import as_maps, undefined_where_nonfinite
from .rank import rank_correlation


def disjoint_pairs(image_index: Tensor, objects: Tensor) -> Tensor:
    """P×2 (i < j) question pairs on the same image with non-empty, disjoint object sets.

    image_index: Q int (the image of each question); objects: Q×O bool (the GT objects of each question).
    Pairs are found by offsets within the questions sorted by image (a loop over offsets up to the most
    questions of one image, not over questions); rows are sorted.
    """
    if image_index.shape != objects.shape[:1]:
        raise ValueError(f"image_index {tuple(image_index.shape)} and objects {tuple(objects.shape)} disagree")
    if len(image_index) < 2:
        return torch.zeros((0, 2), dtype=torch.long)
    order = torch.sort(image_index, stable=True).indices
    idx, sets = image_index[order], objects[order]
    most = int(torch.unique_consecutive(idx, return_counts=True)[1].max())
    pairs = []
    for d in range(1, most):
        a, b = torch.arange(len(idx) - d), torch.arange(d, len(idx))
        ok = (idx[a] == idx[b]) & sets[a].any(1) & sets[b].any(1) & ~(sets[a] & sets[b]).any(1)
        pairs.append(torch.stack([order[a[ok]], order[b[ok]]], 1))
    out = torch.cat(pairs) if pairs else torch.zeros((0, 2), dtype=torch.long)
    out = torch.sort(out, 1).values
    return out[torch.argsort(out[:, 0] * len(image_index) + out[:, 1])]


def question_sensitivity(maps: Tensor, pairs: Tensor) -> Tensor:
    """Spearman correlation of the signed channel sums of maps[i] and maps[j] for each pair (P×2) -> P;
    maps N×C×H×W. NaN where a map is constant or has a NaN or ±inf entry."""
    maps = as_maps(maps, "maps")
    a, b = maps[pairs[:, 0]], maps[pairs[:, 1]]
    if len(pairs) == 0:
        return maps.new_zeros(0)
    return undefined_where_nonfinite(rank_correlation(a.sum(1), b.sum(1)), a, b)
