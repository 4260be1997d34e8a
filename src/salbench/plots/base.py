"""Inputs of the figures (the evaluate and permutation outputs), the figure registry and shared drawing helpers."""
from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import load_shard, read_json, require
from ..registry import Registry

FAMILY_MARKERS = {"cnn": "o", "vit": "^"}


@dataclass
class Run:
    """The evaluate outputs of one task × model: ``metrics`` (the JSON), CSV rows, example arrays, blocks."""

    task: str
    model: str
    metrics: dict[str, Any]
    perturbation: list[dict[str, Any]]
    randomization: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    examples: dict[str, np.ndarray]
    blocks: list[str]

    @property
    def label(self) -> str:
        return f"{self.task} / {self.model}"

    @property
    def family(self) -> str:
        return "vit" if "vit" in self.model.lower() or "deit" in self.model.lower() else "cnn"

    def summary(self, method: str, key: str) -> dict[str, Any] | None:
        return self.metrics.get("methods", {}).get(method, {}).get(key)

    def mean(self, method: str, key: str) -> float:
        s = self.summary(method, key)
        return np.nan if s is None or s.get("mean") is None else float(s["mean"])


@dataclass
class Inputs:
    """Everything the figures read; ``colors`` gives each method one colour in every figure."""

    runs: list[Run]
    depict: dict[str, Any] | None = None
    colors: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """Compared methods in the order of the first run that has them."""
        seen: dict[str, None] = {}
        for run in self.runs:
            seen.update(dict.fromkeys(run.metrics.get("method_order") or run.metrics.get("methods", {})))
        return list(seen)


def method_colors(methods: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per method (tab20, then tab20b), stable for a given method list."""
    import matplotlib

    palette = list(matplotlib.colormaps["tab20"].colors) + list(matplotlib.colormaps["tab20b"].colors)
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _csv(path: Path) -> list[dict[str, Any]]:
    def value(v: str) -> Any:
        try:
            return float(v) if v != "" else np.nan
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_run(root: Path, task: str, model: str) -> Run:
    """The evaluate outputs of ``task``/``model`` under ``root`` (data/); missing ones name the stage."""
    stage = f"evaluate@{task}-{model}"
    plots = root / "plots" / "evaluate" / task / model
    out = root / "evaluate" / task / model
    return Run(task, model, read_json(root / "metrics" / "evaluate" / task / f"{model}.json", stage),
               *(_csv(require(plots / f"{name}.csv", stage)) for name in ("perturbation", "randomization", "layers")),
               load_shard(out / "examples.safetensors", stage), read_json(out / "blocks.json", stage)["cascading"])


def load_inputs(root: Path, tasks: Sequence[str], models: Sequence[str], depict: bool = True) -> Inputs:
    """Runs for every task × model and the DEPICT results (data/concepts/permutation/results.json)."""
    runs = [load_run(root, t, m) for t in tasks for m in models]
    results = read_json(root / "concepts" / "permutation" / "results.json", "permutation") if depict else None
    inputs = Inputs(runs, results)
    inputs.colors = method_colors(inputs.methods)
    return inputs


@dataclass(frozen=True)
class Figure:
    """A registered figure: ``draw(inputs) -> matplotlib Figure`` and the caption the report shows under it."""

    draw: Callable[[Inputs], Any]
    title: str
    caption: str


FIGURES: Registry[Figure] = Registry("figure")


def figure(name: str, title: str, caption: str) -> Callable[[Callable[[Inputs], Any]], Callable[[Inputs], Any]]:
    """Register ``draw`` as figure ``name``."""

    def decorator(draw: Callable[[Inputs], Any]) -> Callable[[Inputs], Any]:
        FIGURES.register(name)(Figure(draw, title, caption))
        return draw

    return decorator


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def show_map(ax: Any, image: np.ndarray, cmap: str = "inferno", title: str | None = None) -> None:
    """An H×W map scaled to its 99th percentile (or an H×W×3 image in [0, 1]) without axes."""
    if image.ndim == 2 and image.dtype != bool:
        top = np.nanpercentile(np.abs(image), 99) or 1.0
        ax.imshow(np.clip(np.abs(image) / top, 0, 1), cmap=cmap, vmin=0, vmax=1)
    else:
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def short_block(block: str) -> str:
    return block.removeprefix("net.")


def bars(ax: Any, groups: Sequence[str], series: dict[str, tuple[list[float], list[float], list[float]]],
         colors: dict[str, Any] | None = None, hatches: dict[str, str] | None = None) -> None:
    """Grouped bars: ``series`` name -> (means, ci_lows, ci_highs) over ``groups``, with CI error bars."""
    width = 0.8 / max(len(series), 1)
    for k, (name, (mean, low, high)) in enumerate(series.items()):
        x = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
        err = np.nan_to_num(np.stack([mean - low, high - mean]), nan=0.0).clip(min=0)
        ax.bar(x, mean, width, yerr=err, capsize=2, label=name, color=(colors or {}).get(name),
               hatch=(hatches or {}).get(name), edgecolor="k", linewidth=0.3)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=40, ha="right", fontsize=8)


def ci(summary: dict[str, Any] | None) -> tuple[float, float, float]:
    if summary is None:
        return np.nan, np.nan, np.nan
    return tuple(np.nan if summary.get(k) is None else float(summary[k]) for k in ("mean", "ci_low", "ci_high"))
