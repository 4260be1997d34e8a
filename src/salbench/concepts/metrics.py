"""The maths of DEPICT as batched pure torch functions: AUROC, importance, ranks, rule oracle, saliency mass."""
from __future__ import annotations

import itertools

import torch

from ..render.tasks import Presence


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dim of float ...×N, ties getting their average rank (as scipy's rankdata)."""
    s = x.sort(-1).values.contiguous()
    x = x.contiguous()
    lo = torch.searchsorted(s, x, side="left")
    hi = torch.searchsorted(s, x, side="right")
    return (lo + hi + 1).to(torch.float64) / 2


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of float ...×N ``scores`` against bool ...×N ``labels`` (broadcast), along
    the last dim; ties count one half (Mann-Whitney U / (P·Q)). NaN where a row has only one class."""
    scores, labels = torch.broadcast_tensors(scores, labels.to(scores.device))
    pos = labels.bool()
    n_pos = pos.sum(-1).to(torch.float64)
    n_neg = pos.shape[-1] - n_pos
    rank_sum = (average_ranks(scores) * pos).sum(-1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def task_metric(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L of DEPICT for logits ...×N×C and int labels N: AUROC of the logit margin when C = 2, else accuracy."""
    if logits.shape[-1] == 2:
        return auroc(logits[..., 1] - logits[..., 0], labels.bool())
    return (logits.argmax(-1) == labels.to(logits.device)).to(torch.float64).mean(-1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of ...×N ``a`` and ``b`` along the last dim (ties averaged); NaN if one is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()


def permutation_importance(base: torch.Tensor, permuted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance of each concept from L on unpermuted data ``base`` (scalar or ...) and L on permuted data
    ``permuted`` (...×J×P): (mean over the P permutations of base − permuted, its sample std), each ...×J."""
    drop = base[..., None, None] - permuted
    return drop.mean(-1), drop.std(-1, correction=int(drop.shape[-1] > 1))


def rule_table(task: Presence) -> torch.Tensor:
    """Bool 2^K: the task's rule for every presence pattern, indexed by Σ_k present_k · 2^k."""
    k = len(task.names)
    rows = itertools.product((False, True), repeat=k)  # the last concept varies fastest
    table = [task.rule(dict(zip(reversed(task.names), r))) for r in rows]  # so reverse: concept 0 is bit 0
    return torch.tensor(table, dtype=torch.bool)


def rule_scores(task: Presence, concepts: torch.Tensor) -> torch.Tensor:
    """The rule as a classifier: float ...×N in {0, 1} from bool ...×N×K concept annotations."""
    weights = 2 ** torch.arange(concepts.shape[-1], device=concepts.device)
    return rule_table(task).to(concepts.device)[(concepts.long() * weights).sum(-1)].to(torch.float64)


def concept_mass(maps: torch.Tensor, instance: torch.Tensor, carriers: torch.Tensor) -> torch.Tensor:
    """Fraction of each map's mass on the objects that carry each concept: float N×K.

    ``maps`` N×H×W non-negative saliency, ``instance`` N×H×W int ids (0 = ground, i+1 = object i),
    ``carriers`` bool N×(O+1)×K from :func:`~salbench.concepts.annotations.object_concepts`.
    """
    n, o1, _ = carriers.shape
    flat = maps.reshape(n, -1).to(torch.float64)
    per_id = torch.zeros(n, o1, dtype=torch.float64, device=maps.device)
    per_id.scatter_add_(1, instance.reshape(n, -1).long().to(maps.device), flat)
    on = per_id[:, :, None] * carriers.to(maps.device)
    return on.sum(1) / flat.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def mean_where(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 of N×K ``values`` restricted to rows where bool N×K ``mask`` is set (NaN if none)."""
    m = mask.to(values.dtype)
    return (values * m).sum(0) / m.sum(0)
