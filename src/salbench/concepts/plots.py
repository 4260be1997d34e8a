"""Figures of the DEPICT stages: counterfactual grids and importance bar charts (PNG for `dvc plots`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..io import atomic_file
from ..render.preview import grid


def save_png(path: str | Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_file(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")


def counterfactual_grid(baseline: torch.Tensor, permuted: Sequence[torch.Tensor], n: int) -> np.ndarray:
    """Rows: the first ``n`` baseline images g(c), then g(c^j) of each permuted concept (uint8 N×R×R×3 each)."""
    return grid(torch.cat([baseline[:n], *(p[:n] for p in permuted)]).numpy(), min(n, len(baseline)))


def save_importance_figure(path: str | Path, reports: Mapping[str, Mapping[str, Any]]) -> None:
    """One panel per classifier: true importance and each generator's mean ± std per concept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.6), squeeze=False)
    for ax, (model, rep) in zip(axes[0], reports.items()):
        names = list(rep["true"]["importance"])
        series = {"true (rule)": ([rep["true"]["importance"][c] for c in names], None)}
        for g, r in rep["generators"].items():
            series[g] = ([r["importance"][c]["mean"] for c in names], [r["importance"][c]["std"] for c in names])
        width = 0.8 / len(series)
        for k, (label, (mean, std)) in enumerate(series.items()):
            x = np.arange(len(names)) + (k - (len(series) - 1) / 2) * width
            ax.bar(x, [np.nan if m is None else m for m in mean], width, yerr=None if std is None else
                   [0 if s is None else s for s in std], label=label, capsize=2)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(np.arange(len(names)), names, rotation=20)
        ax.set_title(model)
        ax.set_ylabel("AUROC drop")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
