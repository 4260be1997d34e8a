"""NormGrad vs GradCAM: the maps of one test image at each layer of the layer study."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Inputs, figure, pyplot, show_map


@figure("normgrad_maps", "NormGrad vs GradCAM maps by layer",
        "For the first test image of each task / model: the image, then each layer-study method's map at each "
        "layer (input → output), upsampled to the input.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    rows = []
    for run in inputs.runs:
        for group in dict.fromkeys(r["group"] for r in run.layers):
            entries = list(dict.fromkeys((r["entry"], r["layer"]) for r in run.layers if r["group"] == group))
            rows.append((run, group, entries))
    cols = 1 + max((len(e) for _, _, e in rows), default=0)
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(1.2 * cols + 0.6, 1.25 * len(rows) + 0.3), squeeze=False)
    for r, (run, group, entries) in enumerate(rows):
        show_map(axes[r, 0], np.transpose(run.examples["images"][0], (1, 2, 0)))
        axes[r, 0].set_ylabel(f"{run.model}\n{run.task}\n{group}", fontsize=6, color=inputs.colors.get(group))
        for c in range(1, cols):
            if c - 1 < len(entries) and f"map/{entries[c - 1][0]}" in run.examples:
                show_map(axes[r, c], run.examples[f"map/{entries[c - 1][0]}"][0], title=entries[c - 1][1])
            else:
                axes[r, c].axis("off")
    fig.tight_layout(pad=0.2)
    return fig
