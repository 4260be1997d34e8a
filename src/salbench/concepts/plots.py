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


def save_concept_grid(path: str | Path, real: torch.Tensor, captions: Sequence[str], baseline: torch.Tensor,
                      permuted: Mapping[str, torch.Tensor], changed: Mapping[str, Sequence[str | None]],
                      title: str = "") -> None:
    """DEPICT's sanity grid, one row per image: the real image with its caption, its generation g(c), and for each
    permuted concept the generation g(c^j) of its first permutation, titled with the caption phrase the permutation
    changed ("= same" when the permuted column kept the image's value). ``real`` uint8 N×H×W×3, ``baseline`` and
    each ``permuted[j]`` uint8 N×R×R×3 (one permutation), ``changed[j]`` N phrases or None."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = len(baseline), 2 + len(permuted)
    fig, axes = plt.subplots(n, cols, figsize=(1.5 * cols + 1.6, 1.75 * n), squeeze=False)
    for i in range(n):
        row = [(real[i], "real"), (baseline[i], "g(c)")] + \
            [(v[i], f"{j}: " + (changed[j][i] or "= same")) for j, v in permuted.items()]
        for ax, (img, label) in zip(axes[i], row):
            ax.imshow(img.numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=6)
        axes[i, 0].set_ylabel(textwrap.fill(captions[i], 26), fontsize=5.5, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def save_importance_figure(path: str | Path, reports: Mapping[str, Mapping[str, Any]]) -> None:
    """:func:`importance_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = importance_figure(reports)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def importance_figure(reports: Mapping[str, Mapping[str, Any]]) -> Any:
    """One panel per classifier: true importance and each generator's mean ± std per concept; an untrusted
    generator (failed DEPICT's check 1 or 2) is light grey and hatched, labelled untrusted with its largest gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.9), squeeze=False)
    for ax, (model, rep) in zip(axes[0], reports.items()):
        names = list(rep["true"]["importance"])
        series = {"true (rule)": ([rep["true"]["importance"][c] for c in names], None)}
        for g, r in rep["generators"].items():
            series[g] = ([r["importance"][c]["mean"] for c in names], [r["importance"][c]["std"] for c in names])
        width = 0.8 / len(series)
        bad = {g for g, r in rep["generators"].items() if r.get("trusted") is False}
        for k, (label, (mean, std)) in enumerate(series.items()):
            x = np.arange(len(names)) + (k - (len(series) - 1) / 2) * width
            style = {"color": "#d9d9d9", "hatch": "///", "edgecolor": "k", "linewidth": 0.3} if label in bad else {}
            gaps = rep["generators"][label].get("gaps", {}) if label in bad else {}
            ax.bar(x, [np.nan if m is None else m for m in mean], width, yerr=None if std is None else
                   [0 if s is None else s for s in std], capsize=2, **style,
                   label=label if label not in bad else f"{label} (untrusted: " + ", ".join(
                       f"{k} {v:.2f}" for k, v in gaps.items() if v is not None) + ")")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(np.arange(len(names)), names, rotation=20)
        ax.set_title(model)
        ax.set_ylabel("AUROC drop")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)  # below the panels, over no bars
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
