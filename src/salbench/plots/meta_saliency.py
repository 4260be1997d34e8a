"""Meta-saliency (Rebuffi et al. 2020): each metric with and without one SGD step before the map."""
from __future__ import annotations

from typing import Any

from .base import Inputs, bars, ci, figure, pyplot


@figure("meta_saliency", "Meta-saliency effect",
        "Each meta-saliency method's metrics on the same test images, plain (solid) vs after one SGD step on the "
        "explained class's cross-entropy (hatched); mean and 95% CI. Class sensitivity: lower is better.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    metrics = list(dict.fromkeys(k for run in inputs.runs for v in run.metrics.get("meta_saliency", {}).values()
                                 for k in v.get("plain", {})))
    fig, axes = plt.subplots(max(len(metrics), 1), len(inputs.runs), figsize=(3.4 * len(inputs.runs), 2.6 * len(metrics) + 0.6),
                             squeeze=False)
    for row, metric in enumerate(metrics):
        for ax, run in zip(axes[row], inputs.runs):
            meta = run.metrics.get("meta_saliency", {})
            methods = list(meta)
            series = {kind: tuple(map(list, zip(*[ci(meta[m][kind].get(metric)) for m in methods])))
                      for kind in ("plain", "meta")} if methods else {}
            bars(ax, methods, series, colors={"plain": "#9ecae1", "meta": "#3182bd"}, hatches={"meta": "//"})
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{metric.replace('_', ' ')}\n{run.label}", fontsize=8)
        axes[row, 0].set_ylabel(metric.replace("_", " "))
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
