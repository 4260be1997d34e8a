"""Figures of the papers' results (one module per figure, registered in ``FIGURES``) and the HTML report.

Every figure is ``draw(inputs: Inputs) -> matplotlib Figure`` over the results tables (salbench.results), the
example arrays of the evaluate stage and the DEPICT results; methods keep one colour in every figure
(``Inputs.colors``). The VQA figures (module vqa) read the VQA tasks' tables and examples (``Inputs.vqa``) and are
skipped, with the reason, when there are none.
"""
from . import (  # noqa: F401
               class_sensitivity,
               clevr_xai,
               cose,
               data_randomization,
               depict,
               examples,
               meta_saliency,
               normgrad,
               normgrad_maps,
               perturbation,
               sanity_checks,
               sanity_maps,
               vqa,
)
from .agreement import ranking_agreement
from .base import FIGURES, Figure, Inputs, Run, VqaRun, load_inputs, method_colors
from .report import png_bytes, render_report

__all__ = ["FIGURES", "Figure", "Inputs", "Run", "VqaRun", "load_inputs", "method_colors", "png_bytes",
           "ranking_agreement", "render_report"]
