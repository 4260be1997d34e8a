"""DEPICT (Jabbour et al. 2024; SPEC.md §4): concept permutation importance recovers the rule's ranking."""
from __future__ import annotations

import math
from typing import Any, Mapping

from .base import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Cell, Inputs, Stat, finding
from .rules import all_of

PAPER = "Jabbour et al. 2024: DEPICT: Diffusion-Enabled Permutation Importance for Image Classification Tasks"
# With the default 4 concepts, 2 of them outside the rule (true importance 0, tied), rho >= 0.8 needs both rule
# concepts ranked first and in the right order (rho = 0.95); swapping them gives 0.74, and a ranking that puts an
# irrelevant concept above a rule concept gives less.
MIN_RHO = 0.8


def generator_cell(model: str, generator: str, entry: Mapping[str, Any]) -> Cell:
    """One (model, generator) of depict.json: rho against the threshold; an untrusted generator is undecided, and so
    is a failure of a generator of unknown trust."""
    label = f"{model} {generator}"
    rho = entry.get("spearman_true")
    trusted = entry.get("trusted")
    reasons = "; ".join(entry.get("reasons") or []) or "no reason given"
    stats = () if rho is None else (Stat(f"{label} spearman_true", float(rho), math.nan, math.nan, None),)
    if trusted is False:
        return Cell(label, INCONCLUSIVE, f"generator not trusted (checks 1/2): {reasons}", stats)
    note = "" if trusted is True else " (trust unknown: depict.json has no `trusted` gate for it)"
    if rho is None or math.isnan(float(rho)):
        return Cell(label, INCONCLUSIVE, f"spearman_true undefined (constant importance){note}", stats)
    if rho >= MIN_RHO:
        return Cell(label, REPRODUCED, f"ρ = {rho:.3f} >= {MIN_RHO}{note}", stats)
    if trusted is None:  # the generator may be what failed: without its gate the failure cannot be blamed on DEPICT
        return Cell(label, INCONCLUSIVE, f"ρ = {rho:.3f} < {MIN_RHO}, but the generator's trust is unknown "
                                         "(depict.json has no `trusted` gate for it)", stats)
    return Cell(label, NOT_REPRODUCED, f"ρ = {rho:.3f} < {MIN_RHO} with a trusted generator", stats)


@finding("depict_recovers_ranking", paper=PAPER,
         source="Concept importance ranking vs the true importance (SPEC.md §4)",
         claim="DEPICT's concept-permutation importance ranks the concepts as the task's rule does (high Spearman "
               "correlation with the true importance), for every classifier, with any generator that passes "
               "checks 1 and 2.",
         reads=("depict.json",),
         rows="data/metrics/depict.json: per model and generator spearman_true, trusted, reasons",
         rule=(f"Per (model, generator): holds when spearman_true >= {MIN_RHO}, fails below (depict.json gives one ρ "
               "without a CI; over 4 concepts a CI would span most of [-1, 1], so the threshold is the rule). A "
               "generator marked trusted: false is undecided with its reasons and not counted (it tests the "
               "generator, not DEPICT); a missing `trusted` key counts as trust unknown and is said so: its success "
               "counts, its failure is undecided (it may be the generator's). The counted pairs must all hold "
               "(all_of)."))
def recovers_ranking(inputs: Inputs) -> Cell:
    if not inputs.depict:
        return Cell("DEPICT", INCONCLUSIVE, "missing depict.json: run `dvc repro permutation`")
    pairs = [(generator_cell(model, g, entry), entry.get("trusted") is not False)
             for model, gens in inputs.depict.items() if isinstance(gens, Mapping)  # skips h_test_auroc_mean
             for g, entry in gens.items() if isinstance(entry, Mapping) and "spearman_true" in entry]  # and agreement
    counted = [c for c, count in pairs if count]
    skipped = [c for c, count in pairs if not count]
    top = all_of("DEPICT", counted) if counted else Cell(
        "DEPICT", INCONCLUSIVE, "missing rows: no trusted generator result in depict.json"
        + (f"; {skipped[0].label}: {skipped[0].why}" if skipped else ""))
    why = top.why + (f" (not counted, untrusted: {', '.join(c.label for c in skipped)})" if skipped and counted else "")
    return Cell("DEPICT", top.verdict, why, parts=tuple(counted + skipped))

