"""CLEVR-XAI as visual question answering (SPEC.md §6): the method ordering per question task and ground truth, and
whether the maps follow the question (question sensitivity against the random control)."""
from __future__ import annotations

from ..results import parse_variant
from ..vqa.program import GT_KINDS
from .base import INCONCLUSIVE, Cell, Inputs, finding
from .clevr_xai import GT_METRICS, ORDER, ORDER_RULE, PAPER, ordering_votes
from .rules import all_of, beyond, most_of, stat

REFERENCE = "random"  # the control map the question sensitivity of every method is compared with


def task_name(kind: str) -> str:
    """The rendered task of a question kind (salbench.render.tasks: ``vqa-<kind>``)."""
    return f"vqa-{kind}"


def gt_ordering(inputs: Inputs, task: str, gt: str) -> Cell:
    """LRP > IG > G×I on both GT metrics for one task and ground truth, every pooling and model (ORDER_RULE)."""
    r = inputs.results
    per_metric = []
    for metric in GT_METRICS:
        variants = [v for v in r.variants(metric, ("gt", "pooling")) if parse_variant(v)["gt"] == gt]
        units = [u for u in r.units_with(metric, variants, kind="vqa") if u.task == task]
        if not units:
            why = f"missing rows: no {task} model with {metric} gt={gt},pooling=<p> rows (stage evaluate_vqa)"
            per_metric.append(Cell(metric, INCONCLUSIVE, why))
            continue
        per_metric.append(ordering_votes(r, units, metric, variants, metric))
    return all_of(f"{task} gt={gt}: {' > '.join(ORDER)}", per_metric)


for _kind, _gts in GT_KINDS.items():
    _task = task_name(_kind)
    for _gt in _gts:
        finding(f"clevr_xai_vqa_{_kind}_{_gt}", paper=PAPER,
                source=f"Published ordering on CLEVR-XAI-{_kind}, ground truth {_gt}, both GT metrics (SPEC.md §6)",
                claim=f"On the question-answering models, {_kind} questions, ground truth {_gt.replace('_', ' ')}: "
                      "LRP > Integrated Gradients > Gradient×Input on relevance mass accuracy and relevance rank "
                      "accuracy (correctly answered questions).",
                reads=GT_METRICS,
                rows=f"mass_accuracy and rank_accuracy, every variant gt={_gt},pooling=<p>, methods "
                     f"{', '.join(ORDER)}, every model evaluated on {_task}",
                rule=ORDER_RULE)(lambda inputs, _t=_task, _g=_gt: gt_ordering(inputs, _t, _g))


@finding("vqa_question_sensitivity", paper=PAPER,
         source="Question sensitivity, the VQA analogue of class sensitivity (SPEC.md §6; issue 15)",
         claim="Maps follow the question: for most methods, the maps of one image for two questions about disjoint "
               "objects are closer to the random control (maps unrelated across questions) than to a map that "
               "ignores the question (rank correlation 1).",
         reads=("question_sensitivity",),
         rows=f"question_sensitivity (variant \"\"), every real method and the {REFERENCE} control, every model "
              f"evaluated on a VQA task",
         rule=f"Per (task, model): the bar is the midpoint between the {REFERENCE} control's mean (evaluate draws it "
              "independently per question: chance-level correlation, about 0) and 1 (a question-independent map, "
              "e.g. the edge control, correlates 1 with itself). Per real method: holds when its CI lies below the "
              "bar, fails when above, else undecided; per (task, model) the methods vote (most_of); every "
              f"(task, model) must hold (all_of). A missing {REFERENCE} row leaves the model undecided.")
def question_sensitivity(inputs: Inputs) -> Cell:
    r = inputs.results
    cells = []
    for u in r.units_with("question_sensitivity", [""], kind="vqa"):
        label = f"{u.task} {u.model}"
        reference = stat(r, u, REFERENCE, "question_sensitivity")
        if isinstance(reference, str):
            cells.append(Cell(label, INCONCLUSIVE, reference))
            continue
        bar = (reference.mean + 1.0) / 2
        cells.append(most_of(label, [
            beyond(stat(r, u, m, "question_sensitivity"), bar, above=False,
                   label=f"{m} below {bar:.3f} (midway from {REFERENCE} {reference.mean:.3f} to 1)")
            for m in r.methods(u, "question_sensitivity")]))
    return all_of("maps follow the question", cells)
