"""COSE (Daroya, Sun, Maji 2023; SPEC.md §3): GradCAM best, transformers above CNNs, photometric harder."""
from __future__ import annotations

from .base import INCONCLUSIVE, Cell, Inputs, finding
from .rules import all_of, average, better, most_of, paired_votes, stat
from .table import Results, Unit

PAPER = "Daroya, Sun, Maji 2023: COSE: A Consistency-Sensitivity Metric for Saliency on Image Classification"
SOURCE = "Published shape of the COSE results (SPEC.md §3)"
ALL = "split=all"


def _methods(r: Results, units: list[Unit], variant: str) -> list[str]:
    """Real methods with a COSE row in any of ``units``, in table order."""
    return list(dict.fromkeys(m for u in units for m in r.methods(u, "cose", variant, "cose")))


@finding("cose_gradcam_best", paper=PAPER, source=SOURCE,
         claim="GradCAM has the best COSE averaged over models.",
         reads=("cose",),
         rows="cose split=all statistic cose, every real method, averaged over every model",
         rule="GradCAM's model-averaged COSE (normal-approximation CI from the rows' CIs) must be CI-separated "
              "above every other method's (all_of); a method below it with overlapping CIs leaves it undecided.")
def gradcam_best(inputs: Inputs) -> Cell:
    r = inputs.results
    units = r.units_with("cose", [ALL])
    avg = {m: average(f"{m} cose (mean of {len(units)} models)", [stat(r, u, m, "cose", ALL, "cose") for u in units])
           for m in _methods(r, units, ALL) + ["gradcam"]}
    return all_of("gradcam best", [better(avg["gradcam"], avg[m], label=f"gradcam > {m}") for m in avg
                                   if m != "gradcam"])


@finding("cose_vit_above_cnn", paper=PAPER, source=SOURCE,
         claim="Transformers get higher COSE than CNNs for most methods.",
         reads=("cose",),
         rows="cose split=all statistic cose, per real method: the ViT models' average vs the CNN models' average",
         rule="Per method: holds when the ViT average's CI lies above the CNN average's, fails when below, else "
              "undecided; the claim needs a majority of the methods (most_of).")
def vit_above_cnn(inputs: Inputs) -> Cell:
    r = inputs.results
    vit, cnn = r.units_with("cose", [ALL], "vit"), r.units_with("cose", [ALL], "cnn")
    if not vit or not cnn:
        return Cell("vit > cnn", INCONCLUSIVE, "missing rows: needs cose split=all rows of at least one vit and "
                                                   "one cnn model")
    methods = [m for m in _methods(r, vit, ALL) if m in _methods(r, cnn, ALL)]
    return most_of("vit > cnn", [
        better(average(f"vit {m} cose", [stat(r, u, m, "cose", ALL, "cose") for u in vit]),
               average(f"cnn {m} cose", [stat(r, u, m, "cose", ALL, "cose") for u in cnn]), label=m)
        for m in methods])


@finding("cose_photometric_harder", paper=PAPER, source=SOURCE,
         claim="Photometric transforms are harder than geometric ones: lower COSE on the photometric split.",
         reads=("cose",),
         rows="cose statistic cose, variants split=geometric and split=photometric, every real method and model",
         rule="Per model and method: holds when the geometric COSE's CI lies above the photometric one's, fails when "
              "below, else undecided; the claim needs a majority of the (model, method) pairs (most_of).")
def photometric_harder(inputs: Inputs) -> Cell:
    return paired_votes("geometric > photometric", inputs.results, "cose", "split=geometric", "split=photometric",
                        "cose")
