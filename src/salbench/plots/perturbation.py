"""Pixel perturbation: MoRF and LeRF curves of the class probability per method."""
from __future__ import annotations

from typing import Any

from .base import Inputs, figure, pyplot

STYLES = {"order=morf": "-", "order=lerf": "--"}


@figure("perturbation", "Pixel perturbation (MoRF / LeRF)",
        "Mean probability of the explained class as patches are replaced by the baseline (evaluate.metrics.aopc."
        "baseline; default: each image's mean colour), most relevant first (MoRF, "
        "solid: a good map drops fast) or least relevant first (LeRF, dashed: a good map stays high); correctly "
        "classified images. AOPC values and their ranking agreement with the GT metrics are in the tables.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(inputs.runs), figsize=(4 * len(inputs.runs), 3.6), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], inputs.runs):
        curves = run.rows("perturbation_curve", None, "score")
        for method in (m for m in inputs.methods if m in set(curves["method"])):
            for v in dict.fromkeys(curves["variant"]):
                c = curves[(curves["method"] == method) & (curves["variant"] == v)]
                first = v == curves["variant"].iloc[0]
                ax.plot(c["step"], c["mean"], STYLES.get(v, ":"), color=inputs.colors.get(method),
                        label=method if first else None, lw=1.2)
        ax.set_xlabel("fraction of patches replaced")
        ax.set_title(f"{run.label}   (solid: MoRF, dashed: LeRF)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("class probability")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
