"""Class sensitivity (Rebuffi et al. 2020): correlation of the maps for the most and least likely class."""
from __future__ import annotations

from typing import Any

from .base import Inputs, bars, ci_series, figure, pyplot


@figure("class_sensitivity", "Class sensitivity",
        "Spearman correlation between each method's maps for the highest- and the lowest-probability class "
        "(mean, 95% CI): lower is better — a map that does not change with the class explains nothing class-specific.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    methods = inputs.methods_with("class_sensitivity")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(methods) + 3), 3.6))
    series = {run.label: ci_series(run, methods, "class_sensitivity") for run in inputs.runs}
    bars(ax, methods, series, hatches={r.label: "//" if r.family == "vit" else None for r in inputs.runs})
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Spearman (highest vs lowest class)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
