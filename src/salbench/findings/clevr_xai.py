"""CLEVR-XAI (Osman, Arras, Samek 2020; SPEC.md §1): the method ordering on the GT metrics, and GT vs pixel
perturbation rankings."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

from .base import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Cell, Inputs, Stat, finding
from .rules import ALPHA, all_of, better, most_of, rank_agreement, stat
from .table import Results, Unit

PAPER = "Osman, Arras, Samek 2020: Towards Ground Truth Evaluation of Visual Explanations (CLEVR-XAI)"
ORDER = ("lrp", "integrated_gradients", "gradient_x_input")
GT_METRICS = ("mass_accuracy", "rank_accuracy")
AGREEMENT_POOLING = "sum_abs"  # the pooling evaluate.perturbation ranks pixels by, so both metrics see the same map
ORDER_RULE = (
    "Per model, GT metric and channel pooling: the ordering holds when each adjacent pair is CI-separated in the "
    "claimed direction (LRP's CI above IG's, IG's above G×I's), fails when a pair is CI-separated the other way, "
    "else undecided (a missing method, e.g. LRP on a ViT, leaves it undecided). Per GT metric the poolings and "
    "models of the family vote (most_of: robust to the choice of pooling, not one cherry-picked); the claim needs "
    "both GT metrics (all_of).")


def ordering_votes(r: Results, units: Sequence[Unit], metric: str, variants: Sequence[str], label: str) -> Cell:
    """Per model and variant (channel pooling) of ``metric``: every adjacent pair of :data:`ORDER` CI-separated in
    the claimed direction (all_of); the (model, variant) cells vote (most_of)."""
    pairs = list(itertools.pairwise(ORDER))
    cells = [all_of(f"{u.model} {metric} {v}", [
        better(stat(r, u, a, metric, v), stat(r, u, b, metric, v), label=f"{a} > {b}") for a, b in pairs])
        for u in units for v in variants]
    return most_of(f"{label} ({len(variants)} poolings x {len(units)} models)", cells)


def ordering(inputs: Inputs, family: str) -> Cell:
    r = inputs.results
    label = f"{family}: {' > '.join(ORDER)}"
    if not r.units_of(family):
        return Cell(label, INCONCLUSIVE, f"no {family} model in the results table")
    per_metric = []
    for metric in GT_METRICS:
        poolings = r.variants(metric, ("pooling",))
        if not poolings:
            per_metric.append(Cell(metric, INCONCLUSIVE, f"missing rows: no {metric} pooling=<p> rows"))
            continue
        # the models with classifier-style rows: VQA models have gt=<kind>,pooling=<p> rows instead
        per_metric.append(ordering_votes(r, r.units_with(metric, poolings, family), metric, poolings, metric))
    return all_of(label, per_metric)


FAMILIES = {
    "cnn": ("CNN", "the paper's setting (a CNN-based Relation Network)"),
    "vit": ("ViT", "an extension to transformers; LRP needs a transformer rule (SPEC.md §8) and may be missing, "
                   "which leaves the ordering undecided"),
}
for _family, (_name, _note) in FAMILIES.items():
    finding(f"clevr_xai_ordering_{_family}", paper=PAPER,
            source="Published ordering on CLEVR-XAI-simple, both GT metrics (SPEC.md §1, §6)",
            claim=f"On {_name} models ({_note}): LRP > Integrated Gradients > Gradient×Input on both GT "
                  "metrics, relevance mass accuracy and relevance rank accuracy.",
            reads=GT_METRICS,
            rows=f"mass_accuracy and rank_accuracy, every variant pooling=<p>, methods {', '.join(ORDER)}, "
                 f"every model of family {_family}",
            rule=ORDER_RULE)(lambda inputs, _f=_family: ordering(inputs, _f))


@finding("clevr_xai_gt_vs_perturbation", paper=PAPER,
         source="Comparison of the GT metrics with pixel perturbation (SPEC.md §1)",
         claim="Pixel perturbation ranks the methods as the GT metric does: the Spearman correlation across methods "
               "between relevance mass accuracy and MoRF AOPC is positive.",
         reads=("mass_accuracy", "aopc"),
         rows=f"mass_accuracy pooling={AGREEMENT_POOLING} and aopc order=morf of every real method (role method) "
              "with both rows, per model",
         rule=(f"Per model: Spearman ρ across methods with a 95% CI (parametric bootstrap: each mean redrawn from its "
               f"CI's normal) and a one-sided permutation p. Holds when the CI lies above 0 and p < {ALPHA}; fails "
               "when the CI lies below 0; else undecided (fewer than 3 methods: undecided). All models must hold "
               "(all_of)."))
def gt_vs_perturbation(inputs: Inputs) -> Cell:
    r = inputs.results
    cells = []
    mass_v = f"pooling={AGREEMENT_POOLING}"
    for u in r.units_with("mass_accuracy", [mass_v]):
        morf = set(r.methods(u, "aopc", "order=morf"))
        methods = [m for m in r.methods(u, "mass_accuracy", mass_v) if m in morf]
        label = f"{u.model}: ρ(mass_accuracy {mass_v}, aopc order=morf)"
        pairs = [(stat(r, u, m, "mass_accuracy", mass_v), stat(r, u, m, "aopc", "order=morf")) for m in methods]
        pairs = [(a, b) for a, b in pairs if isinstance(a, Stat) and isinstance(b, Stat)]
        if len(pairs) < 3:
            cells.append(Cell(label, INCONCLUSIVE, f"missing rows: {len(pairs)} methods with both mass_accuracy "
                                                   f"{mass_v} and aopc order=morf (need 3)"))
            continue
        rho, p = rank_agreement(f"{u.model} Spearman ρ", *zip(*pairs))
        numbers = f"{rho.text(2)} methods, permutation p={p:.3g}"
        if rho.ci_low > 0 and p < ALPHA:
            cells.append(Cell(label, REPRODUCED, f"rankings agree: {numbers}", (rho,)))
        elif rho.ci_high < 0:
            cells.append(Cell(label, NOT_REPRODUCED, f"rankings disagree: {numbers}", (rho,)))
        else:
            cells.append(Cell(label, INCONCLUSIVE, f"agreement not established: {numbers}", (rho,)))
    return all_of("GT vs pixel perturbation", cells)
