"""Sanity Checks for Saliency Maps (Adebayo et al. 2018; SPEC.md §2): cascading and data randomisation."""
from __future__ import annotations

from .base import Cell, Inputs, finding
from .rules import all_of, beyond, stat

PAPER = "Adebayo et al. 2018: Sanity Checks for Saliency Maps (NeurIPS)"
FALL = ("gradient", "gradcam")                  # methods whose maps should change: similarity falls towards 0
STAY = ("guided_backprop", "guided_gradcam")    # methods the paper finds insensitive: similarity stays high
SIMILARITY = "spearman_abs"                     # the paper's headline similarity: Spearman rank correlation of |map|
# "Falls towards 0": the whole CI below 0.3, the usual bound of a weak correlation. "Stays much higher": the whole
# CI above 0.5, a moderate-to-strong correlation; between the two a map is neither clearly reset nor clearly kept.
FALLS_BELOW = 0.3
STAYS_ABOVE = 0.5
RULE = (f"Per model, on the Spearman correlation of |map| ({SIMILARITY}) with the trained model's map: each of "
        f"{', '.join(FALL)} holds when its CI lies below {FALLS_BELOW} and fails when it lies above; each of "
        f"{', '.join(STAY)} holds when its CI lies above {STAYS_ABOVE} and fails when it lies below; otherwise "
        "undecided. Every method on every model must hold (all_of).")


def pattern(inputs: Inputs, metric: str, final_step: bool) -> Cell:
    r = inputs.results
    cells = []
    for u in r.units_with(metric):
        parts = []
        for methods, threshold, above in ((FALL, FALLS_BELOW, False), (STAY, STAYS_ABOVE, True)):
            for m in methods:
                steps = r.steps(u, m, metric, "", SIMILARITY) if final_step else [None]
                s = stat(r, u, m, metric, "", SIMILARITY, steps[-1] if steps else None)
                parts.append(beyond(s, threshold, above, label=f"{m} {'above' if above else 'below'} {threshold:g}"))
        cells.append(all_of(u.model, parts))
    return all_of(metric, cells)


@finding("sanity_cascading", paper=PAPER, source="Cascading model-parameter randomisation (SPEC.md §2)",
         claim="After cascading randomisation of the model's blocks from the output down, Gradient and GradCAM maps "
               "lose their similarity to the trained model's maps (towards 0), while Guided Backprop and Guided "
               "GradCAM stay highly similar (they fail the check).",
         reads=("cascading_randomization",),
         rows=f"cascading_randomization statistic {SIMILARITY} at the last step (every block randomised), methods "
              f"{', '.join(FALL + STAY)}, every model",
         rule=RULE + " Checked at the fully randomised model, where the paper's fall is complete (the per-step "
                     "curve is in the report's figure).")
def cascading(inputs: Inputs) -> Cell:
    return pattern(inputs, "cascading_randomization", final_step=True)


@finding("sanity_data", paper=PAPER, source="Data randomisation test (SPEC.md §2)",
         claim="Maps of a model trained on permuted labels differ from the true-label model's maps for Gradient and "
               "GradCAM (similarity towards 0), while Guided Backprop and Guided GradCAM stay highly similar.",
         reads=("data_randomization",),
         rows=f"data_randomization statistic {SIMILARITY}, methods {', '.join(FALL + STAY)}, every model",
         rule=RULE)
def data(inputs: Inputs) -> Cell:
    return pattern(inputs, "data_randomization", final_step=False)
