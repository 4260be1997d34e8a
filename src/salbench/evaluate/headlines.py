"""A few headline numbers per model for `dvc metrics show` / `dvc metrics diff`: the test accuracy and,
per family of metrics, the best saliency method (control maps left out) with its value."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class Headline(NamedTuple):
    key: str  # key in the metrics JSON
    metric: str
    variant: str
    statistic: str
    better: str  # "higher" or "lower"
    final_step: bool = False  # the last step of a curve (per method)


HEADLINES = (
    Headline("mass_accuracy", "mass_accuracy", "pooling=l2_sq", "value", "higher"),
    Headline("aopc_morf", "aopc", "order=morf", "value", "higher"),
    Headline("cose", "cose", "split=all", "cose", "higher"),
    Headline("class_sensitivity", "class_sensitivity", "", "value", "lower"),
    Headline("cascading_final", "cascading_randomization", "", "spearman_abs", "lower", final_step=True),
)
"""Results rows (metric, variant, statistic) whose best method is a headline; ``cascading_final``: the
Spearman |map| similarity once every block is randomised (lower passes the sanity check)."""


def _best(rows: Sequence[Mapping[str, Any]], h: Headline) -> dict[str, Any] | None:
    candidates: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if (r["role"], r["metric"], r["variant"], r["statistic"]) != ("method", h.metric, h.variant, h.statistic):
            continue
        if not h.final_step and not math.isnan(r["step"]):
            continue
        kept = candidates.get(r["method"])
        if kept is None or (h.final_step and r["step"] > kept["step"]):
            candidates[r["method"]] = r
    scored = sorted((m, r["mean"]) for m, r in candidates.items() if not math.isnan(r["mean"]))
    if not scored:
        return None
    method, value = (max if h.better == "higher" else min)(scored, key=lambda mv: mv[1])
    return {"best" if h.better == "higher" else "lowest": method, "value": round(value, 6)}


def headlines(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{accuracy, n_test, <headline key>: {best|lowest: method, value}} from one model's results rows
    (headlines whose rows are absent are left out)."""
    out: dict[str, Any] = {}
    for r in rows:
        if r["metric"] == "accuracy" and not r["variant"]:  # VQA tables add per-family rows (family=<name>)
            out.update(accuracy=round(r["mean"], 6), n_test=int(r["n"]))
    for h in HEADLINES:
        best = _best(rows, h)
        if best is not None:
            out[h.key] = best
    return out
