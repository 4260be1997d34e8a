"""CLEVR-XAI (Osman et al. 2020): relevance mass and rank accuracy per method and channel pooling."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..results import parse_variant
from .base import Inputs, figure, pyplot

METRICS = ("mass_accuracy", "rank_accuracy")


@figure("clevr_xai", "CLEVR-XAI: ground-truth mass and rank accuracy",
        "Relevance mass accuracy (share of pooled relevance inside the GT mask) and rank accuracy (share of the "
        "|GT| most relevant pixels inside it) per method (rows) and channel pooling (columns), correctly "
        "classified test images only; cell = mean (the tables below give CIs and counts).")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    metrics = [m for m in METRICS if inputs.variants(m, ["pooling"])] or list(METRICS[:1])
    methods = [m for m in inputs.methods if any(m in inputs.methods_with(k, None) for k in metrics)]
    fig, axes = plt.subplots(len(metrics), len(inputs.runs),
                             figsize=(3.3 * len(inputs.runs) + 1.5, 0.32 * len(methods) * len(metrics) + 2.8),
                             squeeze=False, layout="constrained")
    image = None
    for row, metric in enumerate(metrics):
        variants = inputs.variants(metric, ["pooling"])
        poolings = [parse_variant(v)["pooling"] for v in variants]
        for ax, run in zip(axes[row], inputs.runs):
            grid = np.array([[run.mean(m, metric, v) for v in variants] for m in methods]).reshape(len(methods), -1)
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
            bottom = row == len(metrics) - 1
            ax.set_xticks(range(len(poolings)), poolings if bottom else [""] * len(poolings), rotation=45,
                          ha="right", fontsize=7)
            ax.set_yticks(range(len(methods)), methods if ax is axes[row, 0] else [""] * len(methods), fontsize=7)
            ax.set_title(f"{metric.replace('_', ' ')}\n{run.label}", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="accuracy")
    return fig
