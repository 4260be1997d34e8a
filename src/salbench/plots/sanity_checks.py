"""Sanity checks (Adebayo et al. 2018): similarity to the trained model's maps vs randomisation step."""
from __future__ import annotations

from typing import Any

from .base import Inputs, figure, pyplot, short_block

SIMILARITY = "spearman_abs"
MODES = {"cascading_randomization": "-", "independent_randomization": "--"}


@figure("sanity_checks", "Sanity checks: model parameter randomisation",
        "Spearman rank correlation of |map| with the trained model's map after randomising blocks from the output "
        "(left) to the input: cascading (solid, one more block each step) and independent (dashed, one block at a "
        "time); mean with 95% bootstrap CI band. A method that passes falls towards 0 once the top layers are random.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(inputs.runs), figsize=(4.2 * len(inputs.runs), 3.6), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], inputs.runs):
        labels: dict[float, str] = {}
        for metric, style in MODES.items():
            rows = run.rows(metric, None, SIMILARITY)
            labels.update(zip(rows["step"], rows["step_label"]))
            for method in (m for m in inputs.methods if m in set(rows["method"])):
                r = rows[rows["method"] == method]
                ax.plot(r["step"], r["mean"], style, marker=".", color=inputs.colors.get(method),
                        label=method if style == "-" else None)
                ax.fill_between(r["step"], r["ci_low"], r["ci_high"], alpha=0.1, color=inputs.colors.get(method))
        ax.set_xticks(sorted(labels), [short_block(labels[s]) for s in sorted(labels)], rotation=40, ha="right",
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
