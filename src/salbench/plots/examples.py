"""Example grid: test images, GT masks and every compared method's map, per task × model."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Inputs, figure, pyplot, show_map

PER_RUN = 2  # example images per task × model


@figure("examples", "Example maps",
        "Rows: test images per task / model (true → predicted class index); columns: the image, its GT mask and "
        "each method's map (channels pooled by Σ|·|, scaled to the 99th percentile), explaining the class the "
        "attribute stage explains (attribute.explain).")
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    methods = [m for m in inputs.methods if any(f"map/{m}" in run.examples for run in inputs.runs)]
    rows = [(run, i) for run in inputs.runs for i in range(min(PER_RUN, len(run.examples["labels"])))]
    fig, axes = plt.subplots(len(rows), len(methods) + 2, figsize=(1.1 * (len(methods) + 2), 1.2 * len(rows) + 0.4),
                             squeeze=False)
    for r, (run, i) in enumerate(rows):
        ex = run.examples
        show_map(axes[r, 0], np.transpose(ex["images"][i], (1, 2, 0)),
                 title="image" if r == 0 else None)
        axes[r, 0].set_ylabel(f"{run.task}\n{run.model}\n{int(ex['labels'][i])}→{int(ex['predictions'][i])}",
                              fontsize=7)
        show_map(axes[r, 1], ex["masks"][i], title="GT mask" if r == 0 else None)
        for c, m in enumerate(methods, start=2):
            if f"map/{m}" in ex:
                show_map(axes[r, c], ex[f"map/{m}"][i], title=m if r == 0 else None)
            else:
                axes[r, c].axis("off")
    fig.tight_layout(pad=0.2)
    return fig
