"""NormGrad (Rebuffi et al. 2020): localisation by layer for NormGrad vs GradCAM."""
from __future__ import annotations

from typing import Any

from .base import Inputs, figure, pyplot


@figure("normgrad", "NormGrad vs GradCAM by layer",
        "Localisation of maps taken at each layer (input → output) for each method of the layer study: "
        "mean with 95% CI over correctly classified images, one panel per metric and task / model.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    metrics = list(dict.fromkeys(r["metric"] for run in inputs.runs for r in run.layers))
    fig, axes = plt.subplots(max(len(metrics), 1), len(inputs.runs), figsize=(3.6 * len(inputs.runs), 3 * len(metrics) + 0.5),
                             squeeze=False)
    for row, metric in enumerate(metrics):
        for ax, run in zip(axes[row], inputs.runs):
            for group in dict.fromkeys(r["group"] for r in run.layers):
                rows = [r for r in run.layers if r["group"] == group and r["metric"] == metric]
                x = range(len(rows))
                ax.errorbar(x, [r["mean"] for r in rows], yerr=[[r["mean"] - r["ci_low"] for r in rows],
                            [r["ci_high"] - r["mean"] for r in rows]], marker="o", capsize=3, label=group,
                            color=inputs.colors.get(group))
                ax.set_xticks(list(x), [r["layer"] for r in rows], rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{metric.replace('_', ' ')}\n{run.label}", fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_xlabel("layer (input → output)", fontsize=8)
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel(metric.replace("_", " "))
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
