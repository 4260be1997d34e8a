"""CLEVR-XAI as visual question answering (SPEC.md §6): one image asked several questions with each method's map
(the paper's qualitative figure), and relevance mass / rank accuracy by method × ground truth per question task."""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from ..results import parse_variant, variant
from ..vqa.program import GT_KINDS
from .base import Inputs, VqaRun, bars, ci_series, figure, methods_of, pyplot, show_map

METRICS = ("mass_accuracy", "rank_accuracy")
POOLINGS = {"mass_accuracy": "l2_sq", "rank_accuracy": "max_norm"}  # as the report's key columns; else the first
QUESTIONS = 4  # questions of the first example image per VQA task × model in vqa_questions
GT_ORDER = list(dict.fromkeys(g for kinds in GT_KINDS.values() for g in kinds))


def no_vqa(inputs: Inputs) -> str | None:
    """Why the VQA figures cannot be drawn (None: they can)."""
    if inputs.vqa:
        return None
    return ("no VQA results: no data/results/<task>/<model>.csv for train.vqa_tasks x train.vqa_models (the vqa "
            "profile renders the tasks and trains the models; stage evaluate writes their rows)")


def with_examples(inputs: Inputs) -> list[VqaRun]:
    """The VQA runs (:func:`ordered_runs`) with at least one example image and question."""
    return [r for r in ordered_runs(inputs) if r.examples.get("vqa/question_index", np.zeros((0, 0))).size]


def no_vqa_examples(inputs: Inputs) -> str | None:
    """Why vqa_questions cannot be drawn (None: it can)."""
    if no_vqa(inputs) or with_examples(inputs):
        return no_vqa(inputs)
    return "no VQA example arrays: evaluate's examples.safetensors of the VQA tasks have no vqa/question_index"


def ordered_runs(inputs: Inputs) -> list[VqaRun]:
    """VQA runs with simple questions before complex ones (GT_KINDS order), then by task and model."""
    kinds = list(GT_KINDS)
    rank = {f"vqa-{k}": i for i, k in enumerate(kinds)}
    return sorted(inputs.vqa, key=lambda r: (rank.get(r.task, len(kinds)), r.task, r.model))


def gt_kinds(found: set[str], task: str) -> list[str]:
    """``found`` GT kinds in the order GT_KINDS gives them for ``task`` (vqa-<kind>; unknown ones last, sorted)."""
    order = [*GT_KINDS.get(task.removeprefix("vqa-"), ()), *GT_ORDER]
    return [g for g in dict.fromkeys(order) if g in found] + sorted(found - set(order))


def gt_settings(run: VqaRun, metric: str) -> tuple[list[str], str | None]:
    """The GT kinds of ``metric``'s gt=<kind>,pooling=<p> rows in ``run`` and the pooling drawn (POOLINGS, else the
    first in the table; None without rows)."""
    settings = [parse_variant(v) for v in dict.fromkeys(run.rows(metric, None)["variant"])]
    settings = [s for s in settings if set(s) == {"gt", "pooling"}]
    poolings = sorted({s["pooling"] for s in settings})
    pooling = POOLINGS[metric] if POOLINGS[metric] in poolings else (poolings or [None])[0]
    return gt_kinds({s["gt"] for s in settings}, run.task), pooling


@figure("vqa_gt", "CLEVR-XAI VQA: mass and rank accuracy by ground truth",
        "Relevance mass accuracy (pooling l2², top) and rank accuracy (pooling max-norm, bottom) per method and "
        "ground truth (bars; simple questions: Single Object, All Objects; complex: Unique, Unique First-non-empty, "
        "Union, All Objects), one column per VQA task / model, simple and complex side by side; correctly answered "
        "test questions only; mean with 95% bootstrap CI. The paper's ordering is LRP > Integrated Gradients > "
        "Gradient×Input on both metrics (verdicts in the findings table).", skip=no_vqa)
def draw_gt(inputs: Inputs) -> Any:
    plt = pyplot()
    runs = ordered_runs(inputs)
    colors = dict(zip(GT_ORDER, plt.colormaps["Set2"].colors))
    width = max(len(methods_of(r.table)) for r in runs)
    fig, axes = plt.subplots(len(METRICS), len(runs), figsize=(0.45 * width * len(runs) + 1.5, 7.0), squeeze=False,
                             layout="constrained")
    for row, metric in enumerate(METRICS):
        for ax, run in zip(axes[row], runs):
            gts, pooling = gt_settings(run, metric)
            have = set(run.rows(metric, None)["method"])
            methods = [m for m in methods_of(run.table) if m in have]
            series = {gt: ci_series(run, methods, metric, variant({"gt": gt, "pooling": pooling})) for gt in gts}
            bars(ax, methods, series, colors=colors)
            ax.set_ylim(0, 1.3)  # room for the legend above the bars
            ax.set_yticks(np.linspace(0, 1, 6))
            ax.set_title(f"{run.label}\n{metric.replace('_', ' ')} ({pooling})", fontsize=8)
            if series:
                ax.legend(fontsize=6, loc="upper center", ncol=2, title="ground truth", title_fontsize=6)
    return fig


def outline_gt(run: VqaRun, e: int, k: int) -> tuple[str, np.ndarray | None]:
    """The ground truth outlined for example image ``e``, question ``k``: the first non-empty of the task's GT
    kinds (GT_KINDS order: the most specific first)."""
    for gt in gt_kinds({key.removeprefix("vqa/gt/") for key in run.examples if key.startswith("vqa/gt/")}, run.task):
        mask = run.examples[f"vqa/gt/{gt}"][e, k]
        if mask.any():
            return gt, mask
    return "none", None


def outline(ax: Any, mask: np.ndarray | None) -> None:
    if mask is not None:
        ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=0.6)


@figure("vqa_questions", "CLEVR-XAI VQA: one image, several questions",
        "Per VQA task / model, the first test example image asked up to 4 questions (left: the question, the true "
        "answer and the model's prediction); columns: the image and each method's map explaining the predicted "
        "answer for that question (channels pooled by l1, scaled to the 99th percentile). Cyan: the outline of "
        "the question's ground truth (the first non-empty of Single Object, Unique, Unique First-non-empty, Union, "
        "All Objects, named under the image). Maps that follow the question move with it.", skip=no_vqa_examples)
def draw_questions(inputs: Inputs) -> Any:
    plt = pyplot()
    runs = with_examples(inputs)
    rows = [(run, k) for run in runs for k in range(min(QUESTIONS, run.examples["vqa/question_index"].shape[1]))]
    every = list(dict.fromkeys(m for run in runs for m in methods_of(run.table)))
    methods = [m for m in every if any(f"vqa/map/{m}" in run.examples for run in runs)]
    cols = len(methods) + 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1.0, 1.15 * len(rows) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2] + [1] * (cols - 1)})
    for r, (run, k) in enumerate(rows):
        ex = run.examples
        q, answer, predicted = (int(ex[key][0, k]) for key in ("vqa/question_index", "vqa/answers",
                                                                "vqa/predictions"))
        head = f"{run.task} / {run.model}\n" if k == 0 else ""
        text = (head + textwrap.fill(run.question(q), 34) + f"\nanswer: {run.answer(answer)}"
                + f"\npredicted: {run.answer(predicted)}" + (" ✓" if answer == predicted else " ✗"))
        axes[r, 0].axis("off")
        axes[r, 0].text(0.0, 0.5, text, fontsize=6, va="center", ha="left", transform=axes[r, 0].transAxes,
                        fontweight="normal")
        gt, mask = outline_gt(run, 0, k)
        show_map(axes[r, 1], np.transpose(ex["vqa/images"][0], (1, 2, 0)), title="image" if r == 0 else None)
        outline(axes[r, 1], mask)
        axes[r, 1].set_xlabel(f"GT: {gt}", fontsize=6)
        for c, m in enumerate(methods, start=2):
            key = f"vqa/map/{m}"
            if key in ex:
                show_map(axes[r, c], ex[key][0, k], title=m if r == 0 else None)
                outline(axes[r, c], mask)
            else:
                axes[r, c].axis("off")
    fig.tight_layout(pad=0.2)
    return fig
