"""Inputs of the figures (the results table, example arrays, DEPICT results), the figure registry and shared
drawing helpers. Figures read numbers only from the results table (salbench.results)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import load_shard, read_json
from ..registry import Registry
from ..results import Lookup, read_results, results_paths, variants_with

FAMILY_MARKERS = {"cnn": "o", "vit": "^"}


@dataclass
class Run:
    """One task × model: its rows of the results table and its example arrays (images, masks, labels,
    predictions, ``map/<method>``, ``cascade/<method>``, ``layer/<group>/<step>``)."""

    task: str
    model: str
    family: str
    table: Any  # pandas DataFrame
    examples: dict[str, np.ndarray]

    @property
    def label(self) -> str:
        return f"{self.task} / {self.model}"

    def __post_init__(self) -> None:
        self.lookup = Lookup(self.table)

    def rows(self, metric: str, variant: str | None = "", statistic: str | None = "value",
             method: str | None = None) -> Any:
        """Rows of ``metric`` (None matches any variant / statistic / method), sorted by method and step."""
        t = self.lookup.select(metric=metric, variant=variant, statistic=statistic, method=method)
        return t.sort_values(["method", "step"], kind="stable")

    def ci(self, method: str, metric: str, variant: str = "", statistic: str = "value") -> tuple[float, float, float]:
        """(mean, ci_low, ci_high) of a scalar row; NaNs when absent."""
        r = self.lookup.row(self.task, self.model, method, metric, variant, statistic)
        if r is None:
            return math.nan, math.nan, math.nan
        return float(r["mean"]), float(r["ci_low"]), float(r["ci_high"])

    def mean(self, method: str, metric: str, variant: str = "", statistic: str = "value") -> float:
        return self.ci(method, metric, variant, statistic)[0]


@dataclass
class VqaRun(Run):
    """A VQA task × model (SPEC.md §6): a :class:`Run` whose examples also hold ``vqa/images`` E×3×H×W,
    ``vqa/question_index``, ``vqa/answers``, ``vqa/predictions`` E×K, ``vqa/map/<entry>`` E×K×H×W and
    ``vqa/gt/<kind>`` E×K×H×W; ``questions`` maps a question index of the split to its text, ``answers`` is the
    answer vocabulary (both empty when the rendered task is not on this machine)."""

    questions: dict[int, str] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)

    def question(self, index: int) -> str:
        return self.questions.get(index, f"question #{index}")

    def answer(self, index: int) -> str:
        return self.answers[index] if 0 <= index < len(self.answers) else f"answer #{index}"


def methods_of(table: Any) -> list[str]:
    """Methods of a results table: saliency methods, then control maps, each in table (alphabetical) order."""
    t = table[table["method"] != ""]
    return [*dict.fromkeys(t.loc[t["role"] == "method", "method"]),
            *dict.fromkeys(t.loc[t["role"] == "control", "method"])]


@dataclass
class Inputs:
    """Everything the figures read; ``colors`` gives each method one colour in every figure. ``runs`` are the
    classifier tasks; ``vqa`` the VQA tasks whose results exist (their rows are not in ``table``)."""

    table: Any  # pandas DataFrame: every classifier run's results rows
    runs: list[Run]
    depict: dict[str, Any] | None = None
    colors: dict[str, Any] = field(default_factory=dict)
    vqa: list[VqaRun] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """Methods of the table: saliency methods, then control maps, each in table (alphabetical) order."""
        return methods_of(self.table)

    def methods_with(self, metric: str, variant: str | None = "", statistic: str | None = "value") -> list[str]:
        """:attr:`methods` that have a row of ``metric`` (and variant / statistic unless None) in some run."""
        have = {m for run in self.runs for m in run.rows(metric, variant, statistic)["method"]}
        return [m for m in self.methods if m in have]

    def variants(self, metric: str, keys: Sequence[str]) -> list[str]:
        """The variants of ``metric`` whose settings are exactly ``keys``, sorted (salbench.results.variants_with)."""
        return variants_with(self.table, metric, keys)


def method_colors(methods: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per method (tab20, then tab20b), stable for a given method list."""
    import matplotlib

    palette = list(matplotlib.colormaps["tab20"].colors) + list(matplotlib.colormaps["tab20b"].colors)
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def load_inputs(root: Path, tasks: Sequence[str], models: Sequence[str], depict: bool = True,
                vqa_tasks: Sequence[str] = (), vqa_models: Sequence[str] = (), split: str = "test") -> Inputs:
    """The results tables data/results/<task>/<model>.csv and examples data/evaluate/<task>/<model>/ for
    every task × model under ``root`` (data/), and the DEPICT results (data/concepts/permutation/results.json);
    a missing one names the stage that writes it. VQA tasks × models are loaded where their results table exists
    (:func:`load_vqa_run`); the VQA figures skip when there is none."""
    import pandas as pd

    tables = [read_results(p) for p in results_paths(root / "results", tasks, models)]
    runs = []
    for (task, model), t in zip(((t, m) for t in tasks for m in models), tables):
        examples = load_shard(root / "evaluate" / task / model / "examples.safetensors", f"evaluate@{task}-{model}")
        family = str(t["family"].iloc[0]) if len(t) else "cnn"
        runs.append(Run(task, model, family, t, examples))
    table = pd.concat(tables, ignore_index=True) if tables else read_results([])
    results = read_json(root / "concepts" / "permutation" / "results.json", "permutation") if depict else None
    vqa = [load_vqa_run(root, t, m, split) for t in vqa_tasks for m in vqa_models
           if (root / "results" / t / f"{m}.csv").is_file()]
    inputs = Inputs(table, runs, results, vqa=vqa)
    inputs.colors = method_colors(list(dict.fromkeys(inputs.methods + [m for r in vqa for m in methods_of(r.table)])))
    return inputs


def load_vqa_run(root: Path, task: str, model: str, split: str) -> VqaRun:
    """One VQA task × model: its results table and examples, the texts of the ``split``'s questions
    (data/render/<task>/<split>_questions.json) and the answer vocabulary (data/render/<task>/vqa.json)."""
    table = read_results(root / "results" / task / f"{model}.csv")
    examples = load_shard(root / "evaluate" / task / model / "examples.safetensors", f"evaluate_vqa@{task}-{model}")
    render = root / "render" / task
    texts = read_json(render / f"{split}_questions.json") if (render / f"{split}_questions.json").is_file() else []
    wanted = {int(i) for i in np.ravel(examples.get("vqa/question_index", []))}
    questions = {i: texts[i]["question"] for i in wanted if i < len(texts)}
    answers = read_json(render / "vqa.json")["answers"] if (render / "vqa.json").is_file() else []
    family = str(table["family"].iloc[0]) if len(table) else "cnn"
    return VqaRun(task, model, family, table, examples, questions, answers)


def no_runs(inputs: Inputs) -> str | None:
    """Why a figure of the classifier runs cannot be drawn (None: it can)."""
    return None if inputs.runs else "no classifier results: attribute.tasks x train.models is empty"


@dataclass(frozen=True)
class Figure:
    """A registered figure: ``draw(inputs) -> matplotlib Figure``, the caption the report shows under it, and
    ``skip(inputs)``: why it cannot be drawn from these inputs (None: it can; default: :func:`no_runs`)."""

    draw: Callable[[Inputs], Any]
    title: str
    caption: str
    skip: Callable[[Inputs], str | None] = no_runs


FIGURES: Registry[Figure] = Registry("figure")


def figure(name: str, title: str, caption: str, skip: Callable[[Inputs], str | None] | None = None,
           ) -> Callable[[Callable[[Inputs], Any]], Callable[[Inputs], Any]]:
    """Register ``draw`` as figure ``name`` (``skip``: see :class:`Figure`)."""

    def decorator(draw: Callable[[Inputs], Any]) -> Callable[[Inputs], Any]:
        FIGURES.register(name)(Figure(draw, title, caption, *([skip] if skip else [])))
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


def ci_series(run: Run, methods: Sequence[str], metric: str, variant: str = "",
              statistic: str = "value") -> tuple[list[float], list[float], list[float]]:
    """(means, ci_lows, ci_highs) of a scalar metric over ``methods`` in one run, for :func:`bars`."""
    values = [run.ci(m, metric, variant, statistic) for m in methods]
    return tuple(list(v) for v in zip(*values)) if values else ([], [], [])  # type: ignore[return-value]
