"""Sanity checks: the maps of one test image after each cascading randomisation step, per method."""
from __future__ import annotations

from typing import Any

from .base import Inputs, figure, pyplot, short_block, show_map


@figure("sanity_maps", "Sanity checks: maps under cascading randomisation",
        "For the first test image of each task / model: the trained model's map (left), then the map after "
        "randomising each further block (output → input), each explaining that model's own prediction.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    rows = [(run, key.removeprefix("cascade/")) for run in inputs.runs for key in run.examples if key.startswith("cascade/")]
    steps = max((len(run.blocks) + 1 for run in inputs.runs), default=1)
    fig, axes = plt.subplots(len(rows), steps, figsize=(1.1 * steps + 0.8, 1.15 * len(rows) + 0.4), squeeze=False)
    for r, (run, method) in enumerate(rows):
        maps = run.examples[f"cascade/{method}"][0]
        for c in range(steps):
            if c < len(maps):
                title = ("trained" if c == 0 else short_block(run.blocks[c - 1])) if r == 0 or rows[r - 1][0] is not run else None
                show_map(axes[r, c], maps[c], title=title)
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(f"{run.model}\n{run.task}\n{method}", fontsize=6, color=inputs.colors.get(method))
    fig.tight_layout(pad=0.2)
    return fig
