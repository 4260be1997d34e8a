"""COSE (Daroya et al. 2023): consistency vs sensitivity per method and model, and COSE bars."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import FAMILY_MARKERS, Inputs, bars, ci_series, figure, pyplot

ALL = "split=all"


@figure("cose", "COSE: consistency and sensitivity",
        "Left: consistency C (mean SSIM of maps under transforms that keep the prediction) vs sensitivity S "
        "(1 − mean SSIM where the prediction or the model changed), all transforms; colour = method, marker = "
        "model family (● CNN, ▲ ViT), one panel per task. Right: COSE = √(C·S) per method and model with 95% CI. "
        "Nothing is clipped: SSIM lies in [−1, 1], so S exceeds 1 (and COSE can too, up to √2) when the maps "
        "of the sensitivity pool are on average anti-correlated with the original's.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    tasks = list(dict.fromkeys(run.task for run in inputs.runs))
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4 * len(tasks) + 6, 4), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(tasks) + [1.6]})
    methods = inputs.methods_with("cose", ALL, "cose")
    for ax, task in zip(axes[0], tasks):
        for run in (r for r in inputs.runs if r.task == task):
            for m in methods:
                c, s = run.mean(m, "cose", ALL, "C"), run.mean(m, "cose", ALL, "S")
                ax.scatter(s, c, color=inputs.colors.get(m), marker=FAMILY_MARKERS.get(run.family, "o"), s=45,
                           edgecolor="k", linewidth=0.4)
        ax.set_xlabel("sensitivity S")
        ax.set_ylabel("consistency C")
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=inputs.colors.get(m), marker="s", ls="", label=m) for m in methods]
    handles += [plt.Line2D([], [], color="gray", marker=mk, ls="", label=f) for f, mk in FAMILY_MARKERS.items()]
    axes[0, 0].legend(handles=handles, fontsize=7)
    series = {run.label: ci_series(run, methods, "cose", ALL, "cose") for run in inputs.runs}
    bars(axes[0, -1], methods, series, hatches={r.label: "//" if r.family == "vit" else None for r in inputs.runs})
    axes[0, -1].set_ylabel("COSE")
    axes[0, -1].legend(fontsize=7)
    if np.isfinite([v for s in series.values() for v in s[0]]).any():
        axes[0, -1].set_ylim(bottom=0)
    fig.tight_layout()
    return fig
