"""NormGrad vs GradCAM: the maps of one test image at each layer of the layer study."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Inputs, figure, pyplot, show_map
from .normgrad import layer_study


@figure("normgrad_maps", "NormGrad vs GradCAM maps by layer",
        "For the first test image of each task / model: the image, then each layer-study method's map at each "
        "layer (input → output), upsampled to the input.")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    rows = []
    for run in inputs.runs:
        study = layer_study(run.table).drop_duplicates(["method", "step"]).sort_values(["method", "step"])
        for group in dict.fromkeys(study["method"]):
            g = study[study["method"] == group]
            rows.append((run, group, [(int(s), label) for s, label in zip(g["step"], g["step_label"])]))
    cols = 1 + max((len(steps) for *_, steps in rows), default=0)
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(1.2 * cols + 0.6, 1.25 * len(rows) + 0.3),
                             squeeze=False)
    for r, (run, group, steps) in enumerate(rows):
        show_map(axes[r, 0], np.transpose(run.examples["images"][0], (1, 2, 0)))
        axes[r, 0].set_ylabel(f"{run.model}\n{run.task}\n{group}", fontsize=6, color=inputs.colors.get(group))
        for c in range(1, cols):
            key = f"layer/{group}/{steps[c - 1][0]}" if c - 1 < len(steps) else None
            if key in run.examples:
                show_map(axes[r, c], run.examples[key][0], title=steps[c - 1][1])
            else:
                axes[r, c].axis("off")
    fig.tight_layout(pad=0.2)
    return fig
