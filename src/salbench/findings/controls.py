"""Negative controls (Binder et al. 2023; SPEC.md §7): does a metric rank model-independent maps above real methods?

For every (task, model, metric, variant, statistic) that scored the control maps, the table compares the edge
detector and the random map with every real method (role ``method``) by the same CI rule as the findings: a control
*beats* a method when its 95% CI lies entirely on the metric's better side of the method's CI, *loses* when the
method's CI lies entirely on the better side, and ties otherwise. A metric that lets the edge detector beat most real
methods measures the image, not the model; one where most real methods do not beat random cannot tell maps apart.
Scalar rows are compared; of the randomisation curves, cascading randomisation at its last step (every block
randomised). Metrics of unknown direction are listed with ``better = unknown`` and no counts.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .table import Results

CONTROLS = ("edge", "random", "gt_mask", "gt_blur")
HIGHER_IS_BETTER = {
    "mass_accuracy": True, "rank_accuracy": True, "pointing_game": True, "cose": True,
    "cascading_randomization": False, "independent_randomization": False, "data_randomization": False,
    "class_sensitivity": False, "question_sensitivity": False,
    "smooth_mprt": False,     # Quantus 0.6 SmoothMPRT: ScoreDirection.LOWER (similarity to the randomised maps)
    "efficient_mprt": True,   # Quantus 0.6 EfficientMPRT: ScoreDirection.HIGHER (rise in complexity)
}
KEYS = ["task", "model", "family", "metric", "variant", "statistic"]
COLUMNS = KEYS + [
    "step", "better", "n_methods",
    "edge_mean", "edge_ci_low", "edge_ci_high", "edge_n", "edge_beats", "edge_ties", "edge_loses", "edge_rank",
    "edge_above_methods",
    "random_mean", "random_ci_low", "random_ci_high", "random_n", "random_beats", "random_ties", "random_loses",
    "random_rank", "random_beaten",
    "gt_mask_mean", "gt_mask_rank", "gt_blur_mean", "gt_blur_rank"]


def higher_is_better(metric: str, variant: str) -> bool | None:
    """The metric's better direction (AOPC: MoRF higher, LeRF lower); None when unknown."""
    if metric == "aopc":
        return {"order=morf": True, "order=lerf": False}.get(variant)
    return HIGHER_IS_BETTER.get(metric)


def compared_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Scalar rows, plus cascading randomisation at each curve's last step."""
    scalar = table[table["step"].isna()]
    casc = table[table["metric"] == "cascading_randomization"]
    last = casc.groupby(KEYS + ["method"])["step"].transform("max")
    return pd.concat([scalar, casc[casc["step"] == last]], ignore_index=True)


def controls_table(results: Results) -> pd.DataFrame:
    """One row per (task, model, metric, variant, statistic) with a control: the controls' means, CIs and how many
    real methods each beats, ties and loses to (see the module docstring); ranks are 1 = best among the real methods
    and that control, by mean."""
    rows = compared_rows(results.table)
    out = []
    for key, group in rows.groupby(KEYS, sort=False):
        ctrl = group[(group["role"] == "control") & group["method"].isin(CONTROLS) & (group["n"] > 0)]
        if ctrl.empty:
            continue
        methods = group[(group["role"] == "method") & (group["n"] > 0)]
        higher = higher_is_better(key[3], key[4])
        rec: dict = dict(zip(KEYS, key))
        rec.update(step=group["step"].max(), n_methods=len(methods),
                   better="unknown" if higher is None else ("higher" if higher else "lower"))
        for name in CONTROLS:
            c = ctrl[ctrl["method"] == name]
            if c.empty:
                continue
            c = c.iloc[0]
            rec[f"{name}_mean"] = c["mean"]
            if higher is None:
                continue
            sign = 1.0 if higher else -1.0
            rec[f"{name}_rank"] = 1 + int(np.sum(sign * methods["mean"].to_numpy() > sign * c["mean"]))
            if name in ("edge", "random"):
                lo, hi = methods["ci_low"].to_numpy(), methods["ci_high"].to_numpy()
                beats = (c["ci_low"] > hi) if higher else (c["ci_high"] < lo)
                loses = (lo > c["ci_high"]) if higher else (hi < c["ci_low"])
                rec.update({f"{name}_ci_low": c["ci_low"], f"{name}_ci_high": c["ci_high"], f"{name}_n": int(c["n"]),
                            f"{name}_beats": int(beats.sum()), f"{name}_loses": int(loses.sum()),
                            f"{name}_ties": int(len(methods) - beats.sum() - loses.sum())})
        if higher is not None and "edge_beats" in rec:
            rec["edge_above_methods"] = bool(2 * rec["edge_beats"] > rec["n_methods"])
        if higher is not None and "random_loses" in rec:
            rec["random_beaten"] = bool(2 * rec["random_loses"] > rec["n_methods"])
        out.append(rec)
    return pd.DataFrame(out, columns=COLUMNS)


def controls_summary(controls: pd.DataFrame) -> dict[str, int]:
    """Headline counts: metrics (rows) compared, those where the edge control beats most real methods, those where
    most real methods beat random."""
    return {"metrics": int(len(controls)),
            "edge_above_methods": int(controls["edge_above_methods"].fillna(False).astype(bool).sum()),
            "random_beaten": int(controls["random_beaten"].fillna(False).astype(bool).sum())}


def records(controls: pd.DataFrame) -> list[dict]:
    """JSON-able rows (NaN -> None)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v))
             for k, v in r.items()} for r in controls.to_dict(orient="records")]
