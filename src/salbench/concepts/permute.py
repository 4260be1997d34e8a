"""Concept permutations: distinct seeded reorderings of one annotation column, labels untouched."""
from __future__ import annotations

import difflib
import math
from typing import Sequence

import torch

from ..params import ParamsError


class ConceptParamsError(ParamsError):
    """Invalid ``concepts`` params (unknown concept, impossible permutation count, ...); says what to change."""


def concept_indices(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Column indices of ``wanted`` among the task's concept ``names``; unknown names list the known ones."""
    out = []
    for c in wanted:
        if c not in names:
            close = difflib.get_close_matches(c, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConceptParamsError(f"unknown concept {c!r} in concepts.concepts{hint}; the task's concepts: "
                                     f"{list(names)}")
        out.append(list(names).index(c))
    if len(set(out)) != len(out):
        raise ConceptParamsError(f"concepts.concepts lists a concept twice: {list(wanted)}")
    return out


def n_orderings(column: torch.Tensor) -> int:
    """Distinct orderings of a bool column of N values with P present: C(N, P)."""
    return math.comb(len(column), int(column.sum()))


def draw_permutations(concepts: torch.Tensor, columns: Sequence[int], count: int, seed: int,
                      names: Sequence[str] | None = None) -> torch.Tensor:
    """Int64 J×count×N index permutations, ``count`` per column in ``columns``, whose permuted columns
    ``concepts[perm, j]`` are pairwise distinct. ``concepts`` is bool N×K. Seeded, CPU-generated."""
    if count < 1:
        raise ConceptParamsError(f"concepts.permutations must be >= 1, got {count}")
    names = list(names) if names is not None else [str(j) for j in range(concepts.shape[1])]
    gen = torch.Generator().manual_seed(seed)
    n = concepts.shape[0]
    out = torch.empty(len(columns), count, n, dtype=torch.int64)
    for a, j in enumerate(columns):
        col = concepts[:, j].cpu()
        possible = n_orderings(col)
        if count > possible:
            raise ConceptParamsError(
                f"concepts.permutations={count} but concept {names[j]!r} is present in {int(col.sum())} of {n} "
                f"images, which has only {possible} distinct orderings; lower concepts.permutations or use more "
                "images (concepts.n_images)")
        seen: set[bytes] = set()
        k = 0
        while k < count:  # rejection of repeated columns; expected draws <= count * H(count) when count == possible
            perm = torch.randperm(n, generator=gen)
            key = col[perm].numpy().tobytes()
            if key not in seen:
                seen.add(key)
                out[a, k] = perm
                k += 1
    return out


def permute_column(concepts: torch.Tensor, j: int, perm: torch.Tensor) -> torch.Tensor:
    """Copy of bool N×K ``concepts`` whose column ``j`` is reordered by ``perm`` (N); other columns unchanged."""
    out = concepts.clone()
    out[:, j] = concepts[perm.to(concepts.device), j]
    return out
