"""Sanity checks (Adebayo et al. 2018): similarity to the trained model's maps vs randomisation step."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Inputs, figure, pyplot, short_block

SIMILARITY = "spearman_abs"


@figure("sanity_checks", "Sanity checks: model parameter randomisation",
        "Spearman rank correlation of |map| with the trained model's map after randomising blocks from the output "
        "(left) to the input: cascading (solid, one more block each step) and independent (dashed, one block at a "
        "time); mean with 95% bootstrap CI band. A method that passes falls towards 0 once the top layers are random.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(inputs.runs), figsize=(4.2 * len(inputs.runs), 3.6), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], inputs.runs):
        for (method, mode), style in ((k, s) for k in sorted({(r["method"], r["mode"]) for r in run.randomization})
                                      for s in [{"cascading": "-", "independent": "--"}.get(k[1])] if s):
            rows = sorted((r for r in run.randomization if r["method"] == method and r["mode"] == mode
                           and r["similarity"] == SIMILARITY), key=lambda r: r["step"])
            x = np.array([r["step"] for r in rows])
            ax.plot(x, [r["value"] for r in rows], style, marker=".", color=inputs.colors.get(method),
                    label=method if mode == "cascading" else None)
            ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.1,
                            color=inputs.colors.get(method))
        ax.set_xticks(range(1, len(run.blocks) + 1), [short_block(b) for b in run.blocks], rotation=40, ha="right",
                      fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("randomised block (output → input)")
        ax.plot([], [], "k-", label="cascading")
        ax.plot([], [], "k--", label="independent")
        ax.legend(fontsize=6, loc="upper right", ncol=2)
    axes[0, 0].set_ylabel("Spearman |map| vs trained")
    fig.tight_layout()
    return fig
