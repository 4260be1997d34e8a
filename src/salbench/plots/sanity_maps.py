"""Sanity checks: the maps of one test image after each cascading randomisation step, per method."""
from __future__ import annotations

from typing import Any

from .base import Inputs, figure, pyplot, short_block, show_map


@figure("sanity_maps", "Sanity checks: maps under cascading randomisation",
        "For the first test image of each task / model: the trained model's map (left), then the map after "
        "randomising each further block (output → input), each explaining that model's own prediction.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    rows, blocks = [], {}
    for run in inputs.runs:
        steps = run.rows("cascading_randomization", None, None).drop_duplicates("step").sort_values("step")
        blocks[run.label] = list(steps["step_label"])
        rows += [(run, m) for m in inputs.methods if f"cascade/{m}" in run.examples]
    cols = max((len(b) + 1 for b in blocks.values()), default=1)
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(1.1 * cols + 0.8, 1.15 * len(rows) + 0.4),
                             squeeze=False)
    for r, (run, method) in enumerate(rows):
        maps, names = run.examples[f"cascade/{method}"][0], blocks[run.label]
        for c in range(cols):
            if c < len(maps):
                title = "trained" if c == 0 else short_block(names[c - 1]) if c - 1 < len(names) else ""
                show_map(axes[r, c], maps[c], title=title if r == 0 or rows[r - 1][0] is not run else None)
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(f"{run.model}\n{run.task}\n{method}", fontsize=6, color=inputs.colors.get(method))
    fig.tight_layout(pad=0.2)
    return fig
