"""Meta-saliency (Rebuffi et al. 2020): each metric with and without one SGD step before the map."""
from __future__ import annotations

from typing import Any

from ..results import parse_variant, variant
from .base import Inputs, bars, ci_series, figure, pyplot

KINDS = {"plain": "#9ecae1", "meta": "#3182bd"}


@figure("meta_saliency", "Meta-saliency effect",
        "Each meta-saliency method's metrics on the same test images, plain (solid) vs after one SGD step on the "
        "explained class's cross-entropy (hatched); mean and 95% CI. Class sensitivity: lower is better.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    t = inputs.table[inputs.table["variant"].map(lambda v: "saliency" in parse_variant(v))]
    # one panel row per (metric, settings other than saliency)
    panels = list(dict.fromkeys(
        (m, variant({k: v for k, v in parse_variant(s).items() if k != "saliency"}))
        for m, s in zip(t["metric"], t["variant"])))
    fig, axes = plt.subplots(max(len(panels), 1), len(inputs.runs),
                             figsize=(3.4 * len(inputs.runs), 2.6 * len(panels) + 0.6), squeeze=False)
    for row, (metric, rest) in enumerate(panels):
        for ax, run in zip(axes[row], inputs.runs):
            kinds = {kind: variant({**parse_variant(rest), "saliency": kind}) for kind in KINDS}
            methods = [m for m in inputs.methods if m in set(run.rows(metric, kinds["meta"])["method"])]
            series = {kind: ci_series(run, methods, metric, v) for kind, v in kinds.items()}
            bars(ax, methods, series, colors=KINDS, hatches={"meta": "//"})
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{metric.replace('_', ' ')} {rest}\n{run.label}", fontsize=8)
        axes[row, 0].set_ylabel(metric.replace("_", " "))
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
