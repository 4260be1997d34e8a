"""Sanity checks: data randomisation (maps of a model trained on permuted labels vs the true-label model)."""
from __future__ import annotations

from typing import Any

from .base import Inputs, bars, ci_series, figure, pyplot


@figure("data_randomization", "Sanity checks: data randomisation",
        "Similarity of each method's maps for the model trained on permuted labels with those of the true-label "
        "model (same test images, each explaining its own prediction), one panel per similarity; mean and 95% "
        "bootstrap CI. High similarity means the map ignores what the model learned.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    t = inputs.table[inputs.table["metric"] == "data_randomization"]
    similarities = list(dict.fromkeys(t["statistic"])) or ["spearman_abs"]
    fig, axes = plt.subplots(len(similarities), 1,
                             figsize=(max(6, 0.9 * len(inputs.methods) + 3), 3.2 * len(similarities)), squeeze=False)
    for ax, sim in zip(axes[:, 0], similarities):
        methods = inputs.methods_with("data_randomization", "", sim)
        bars(ax, methods, {run.label: ci_series(run, methods, "data_randomization", "", sim) for run in inputs.runs})
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(sim)
    axes[0, 0].legend(fontsize=7, ncol=2)
    axes[0, 0].set_title("random-label model vs true-label model", fontsize=9)
    fig.tight_layout()
    return fig
