"""Agreement of method rankings: pixel perturbation (AOPC) vs the ground-truth metrics (CLEVR-XAI, section 1)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..metrics import Summary, rank_correlation

# AOPC key -> sign that makes larger better: MoRF drops fast for a good map, LeRF stays flat.
AOPC_SIGN = {"aopc_morf": 1.0, "aopc_lerf": -1.0}
GT_METRICS = ("mass_accuracy", "rank_accuracy", "pointing_game")


def ranking_agreement(methods: Mapping[str, Mapping[str, Summary]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Spearman correlation across methods between the (better-is-larger) AOPC means and each GT metric's
    means: ``{aopc key: {gt key: {"spearman", "n_methods"}}}``, over the methods with both means finite;
    ``spearman`` is None for fewer than 3 such methods or a constant ranking."""
    keys = {k for results in methods.values() for k in results}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for aopc in (k for k in AOPC_SIGN if k in keys):
        out[aopc] = {}
        for gt in sorted(k for k in keys if k.split("/")[0] in GT_METRICS):
            pairs = [(AOPC_SIGN[aopc] * r[aopc]["mean"], r[gt]["mean"]) for r in methods.values()
                     if aopc in r and gt in r and math.isfinite(r[aopc]["mean"]) and math.isfinite(r[gt]["mean"])]
            rho = None
            if len(pairs) >= 3:
                a, b = torch.tensor(pairs, dtype=torch.float64).T
                value = rank_correlation(a[None], b[None]).item()
                rho = None if math.isnan(value) else round(value, 6)
            out[aopc][gt] = {"spearman": rho, "n_methods": len(pairs)}
    return out
