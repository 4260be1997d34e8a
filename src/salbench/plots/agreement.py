"""Agreement of method rankings: pixel perturbation (AOPC) vs the ground-truth metrics (CLEVR-XAI, section 1),
computed from the results table."""
from __future__ import annotations

import math
from typing import Any

from ..results import parse_variant

# AOPC order -> sign that makes larger better: MoRF drops fast for a good map, LeRF stays flat.
AOPC_SIGN = {"order=morf": 1.0, "order=lerf": -1.0}
GT_METRICS = ("mass_accuracy", "rank_accuracy", "pointing_game")


def ranking_agreement(table: Any) -> list[dict[str, Any]]:
    """Spearman correlation across saliency methods (control maps left out) between the better-is-larger
    AOPC means and each GT metric variant's means, for one task × model's results ``table`` (DataFrame):
    rows {aopc (the order variant), metric, variant, spearman, n_methods} over the methods with both means
    finite; ``spearman`` is None for fewer than 3 such methods or a constant ranking."""
    scalars = table[(table["role"] == "method") & (table["statistic"] == "value") & table["step"].isna()]
    out = []
    for aopc_variant, sign in AOPC_SIGN.items():
        aopc = scalars[(scalars["metric"] == "aopc") & (scalars["variant"] == aopc_variant)]
        if aopc.empty:
            continue
        a = dict(zip(aopc["method"], sign * aopc["mean"]))
        plain = scalars["variant"].map(lambda v: set(parse_variant(v)) <= {"pooling"})  # not meta-saliency
        gt = scalars[scalars["metric"].isin(GT_METRICS) & plain]
        for (metric, variant), rows in gt.groupby(["metric", "variant"], sort=True):
            pairs = [(a[m], v) for m, v in zip(rows["method"], rows["mean"])
                     if m in a and math.isfinite(a[m]) and math.isfinite(v)]
            rho = None
            if len(pairs) >= 3:
                import pandas as pd

                x, y = (pd.Series(v, dtype="float64").rank() for v in zip(*pairs))
                value = float(x.corr(y))  # Spearman: Pearson correlation of the (average) ranks
                rho = None if math.isnan(value) else round(value, 6)
            out.append({"aopc": aopc_variant.removeprefix("order="), "metric": metric, "variant": variant,
                        "spearman": rho, "n_methods": len(pairs)})
    return out
