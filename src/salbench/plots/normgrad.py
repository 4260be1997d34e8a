"""NormGrad (Rebuffi et al. 2020): localisation by layer for NormGrad vs GradCAM."""
from __future__ import annotations

from typing import Any

from ..results import parse_variant
from .base import Inputs, figure, pyplot


def layer_study(table: Any) -> Any:
    """The layer study's rows (variant ``layer_study=1``)."""
    return table[table["variant"].map(lambda v: "layer_study" in parse_variant(v))]


@figure("normgrad", "NormGrad vs GradCAM by layer",
        "Localisation of maps taken at each layer (input → output) for each method of the layer study: "
        "mean with 95% CI over correctly classified images, one panel per metric and task / model.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    study = layer_study(inputs.table)
    panels = list(dict.fromkeys(zip(study["metric"], study["variant"])))
    fig, axes = plt.subplots(max(len(panels), 1), len(inputs.runs),
                             figsize=(3.6 * len(inputs.runs), 3 * len(panels) + 0.5), squeeze=False)
    for row, (metric, v) in enumerate(panels):
        for ax, run in zip(axes[row], inputs.runs):
            rows = run.rows(metric, v, None)
            for group in dict.fromkeys(rows["method"]):
                g = rows[rows["method"] == group]
                ax.errorbar(g["step"], g["mean"], yerr=[(g["mean"] - g["ci_low"]).clip(lower=0),
                            (g["ci_high"] - g["mean"]).clip(lower=0)], marker="o", capsize=3, label=group,
                            color=inputs.colors.get(group))
                ax.set_xticks(list(g["step"]), list(g["step_label"]), rotation=30, ha="right", fontsize=7)
            pooling = parse_variant(v).get("pooling")
            ax.set_title(f"{metric.replace('_', ' ')}{f' ({pooling})' if pooling else ''}\n{run.label}", fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_xlabel("layer (input → output)", fontsize=8)
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel(metric.replace("_", " "))
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
