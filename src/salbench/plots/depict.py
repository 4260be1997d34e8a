"""DEPICT (Jabbour et al. 2024): concept importance through each generator beside the true importance."""
from __future__ import annotations

from typing import Any

from .base import Inputs, bars, figure, pyplot

GENERATOR_COLORS = {"true (rule)": "#444444", "renderer": "#1b9e77", "diffusion": "#d95f02"}


@figure("depict", "DEPICT: concept permutation importance",
        "Drop in AUROC when one concept is permuted across the images' captions and the images regenerated, per "
        "classifier: the task rule's true importance (grey), the exact re-rendering generator and the diffusion "
        "generator (mean ± std over permutations).")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    models = (inputs.depict or {}).get("models", {})
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(4.6 * max(len(models), 1), 3.6), squeeze=False)
    for ax, (model, rep) in zip(axes[0], models.items()):
        names = list(rep["true"]["importance"])
        series = {"true (rule)": ([rep["true"]["importance"][c] for c in names],) * 3}
        for g, r in rep["generators"].items():
            mean = [r["importance"][c]["mean"] for c in names]
            std = [r["importance"][c]["std"] or 0 for c in names]
            series[g] = (mean, [m - s if m is not None else None for m, s in zip(mean, std)],
                         [m + s if m is not None else None for m, s in zip(mean, std)])
        series = {k: tuple([float("nan") if v is None else v for v in vals] for vals in s) for k, s in series.items()}
        bars(ax, names, series, colors=GENERATOR_COLORS)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(model, fontsize=9)
        ax.set_ylabel("AUROC drop")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
