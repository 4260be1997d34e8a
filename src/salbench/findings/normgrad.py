"""NormGrad (Rebuffi, Fong, Ji, Vedaldi 2020; SPEC.md §5): localisation by layer, class sensitivity, meta-saliency."""
from __future__ import annotations

from .base import Cell, Inputs, finding
from .rules import all_of, better, paired_votes, stat

PAPER = "Rebuffi, Fong, Ji, Vedaldi 2020: There and Back Again: Revisiting Backpropagation Saliency Methods"
LAYER_METRICS = (("mass_accuracy", ("layer_study", "pooling")), ("pointing_game", ("layer_study",)))
GRADIENT_STYLE = ("gradient", "guided_backprop")


@finding("normgrad_layers", paper=PAPER, source="Localisation by layer (SPEC.md §5, layer study)",
         claim="On CNNs, GradCAM localises worse away from the last convolutional layer, while NormGrad does not "
               "degrade: at the earliest studied layer NormGrad localises better than GradCAM.",
         reads=("mass_accuracy", "pointing_game"),
         rows="layer-study rows (variant layer_study=1[,pooling=<p>]) of mass_accuracy and pointing_game, groups "
              "gradcam and normgrad, the first layer (step 1) and the default layer (the last step), CNN models",
         rule="Per CNN model and metric, two parts (all_of): GradCAM at the last layer CI-above GradCAM at the "
              "first; NormGrad at the first layer CI-above GradCAM at the first (the observable consequence of "
              "'NormGrad does not degrade': an absence of a drop cannot be shown by a CI). All models and both "
              "metrics must hold (all_of).")
def layers(inputs: Inputs) -> Cell:
    r = inputs.results
    cells = []
    for metric, keys in LAYER_METRICS:
        for v in r.variants(metric, keys):
            for u in r.units_with(metric, [v], "cnn"):
                steps = r.steps(u, "gradcam", metric, v)
                first, last = (steps[0], steps[-1]) if steps else (None, None)
                g1, gl = stat(r, u, "gradcam", metric, v, step=first), stat(r, u, "gradcam", metric, v, step=last)
                n1 = stat(r, u, "normgrad", metric, v, step=first)
                cells.append(all_of(f"{u.model} {metric} {v}", [
                    better(gl, g1, label="gradcam: last layer > first layer"),
                    better(n1, g1, label="first layer: normgrad > gradcam")]))
    return all_of("layer study (cnn)", cells)


@finding("normgrad_class_sensitivity_selective", paper=PAPER,
         source="Class sensitivity; selective NormGrad as the answer to class insensitivity (SPEC.md §5)",
         claim="Selective NormGrad is more class-sensitive than NormGrad: its maps for the highest- and the "
               "lowest-scoring class correlate less (lower class_sensitivity).",
         reads=("class_sensitivity",),
         rows="class_sensitivity (variant \"\"), methods normgrad_selective and normgrad, every model",
         rule="Per model: holds when normgrad_selective's CI lies below normgrad's, fails when above, else "
              "undecided; every model must hold (all_of). A missing normgrad_selective row (not in "
              "evaluate's class_sensitivity methods) leaves it undecided.")
def class_sensitivity_selective(inputs: Inputs) -> Cell:
    r = inputs.results
    return all_of("normgrad_selective < normgrad", [
        better(stat(r, u, "normgrad_selective", "class_sensitivity"), stat(r, u, "normgrad", "class_sensitivity"),
               higher=False, label=u.model) for u in r.units_with("class_sensitivity", [""])])


@finding("normgrad_class_sensitivity_gradcam", paper=PAPER, source="Class sensitivity of the methods (SPEC.md §5)",
         claim="GradCAM is more class-sensitive than the gradient-style methods (Gradient, Guided Backprop): lower "
               "correlation between its maps for the highest- and the lowest-scoring class.",
         reads=("class_sensitivity",),
         rows=f"class_sensitivity (variant \"\"), gradcam vs {', '.join(GRADIENT_STYLE)}, every model",
         rule="Per model and gradient-style method: holds when GradCAM's CI lies below the method's, fails when "
              "above, else undecided; every pair on every model must hold (all_of).")
def class_sensitivity_gradcam(inputs: Inputs) -> Cell:
    r = inputs.results
    return all_of("gradcam < gradient-style", [
        better(stat(r, u, "gradcam", "class_sensitivity"), stat(r, u, g, "class_sensitivity"), higher=False,
               label=f"{u.model} gradcam < {g}")
        for u in r.units_with("class_sensitivity", [""]) for g in GRADIENT_STYLE])


@finding("normgrad_meta_saliency", paper=PAPER, source="Meta-saliency (SPEC.md §5)",
         claim="Meta-saliency (one SGD step on the explained class before the map) makes maps more class-sensitive "
               "for most methods: lower class_sensitivity with saliency=meta than with saliency=plain.",
         reads=("class_sensitivity",),
         rows="class_sensitivity, variants saliency=meta and saliency=plain, every method with both, every model",
         rule="Per model and method: holds when the meta CI lies below the plain CI, fails when above, else "
              "undecided; the claim needs a majority of the (model, method) pairs (most_of).")
def meta_saliency(inputs: Inputs) -> Cell:
    return paired_votes("meta < plain", inputs.results, "class_sensitivity", "saliency=meta", "saliency=plain",
                        higher=False)
