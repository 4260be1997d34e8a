"""Sanity checks: data randomisation (maps of a model trained on permuted labels vs the true-label model)."""
from __future__ import annotations

from typing import Any

from .base import Inputs, bars, ci, figure, pyplot

SIMILARITIES = ("spearman_abs", "ssim")


@figure("data_randomization", "Sanity checks: data randomisation",
        "Similarity of each method's maps for the model trained on permuted labels with those of the true-label "
        "model (same test images, each explaining its own prediction); mean and 95% bootstrap CI. High similarity "
        "means the map ignores what the model learned.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(len(SIMILARITIES), 1, figsize=(max(6, 0.9 * len(inputs.methods) + 3), 3.2 * len(SIMILARITIES)),
                             squeeze=False)
    for ax, sim in zip(axes[:, 0], SIMILARITIES):
        methods = [m for m in inputs.methods if any(run.summary(m, f"data_randomization/{sim}") for run in inputs.runs)]
        series = {run.label: tuple(map(list, zip(*[ci(run.summary(m, f"data_randomization/{sim}")) for m in methods])))
                  for run in inputs.runs} if methods else {}
        bars(ax, methods, series)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(sim)
    axes[0, 0].legend(fontsize=7, ncol=2)
    axes[0, 0].set_title("random-label model vs true-label model", fontsize=9)
    fig.tight_layout()
    return fig
