"""Saliency-map metrics of the five papers in SPEC.md, as batched pure torch functions.

Every function takes tensors (maps N×C×H×W, masks N×H×W bool, images N×C×H×W) on any device and
returns per-sample values N; :func:`summary` turns them into a mean with a bootstrap CI and the
count of scored samples. ``METRICS`` maps the names used in params.yaml to registered
:class:`Metric` wrappers with one signature, ``metric(inputs: MetricInputs, **params) -> [Values |
Combined]``, that declare what they need and which samples they score (see :func:`metric`); the
evaluate runner turns their per-sample values into rows of the results table.
"""

from .base import (
    METRICS,
    SIMILARITIES,
    Combined,
    Explain,
    Metric,
    MetricInputs,
    Summary,
    Values,
    explain_batched,
    logits,
    metric,
    predict,
)
from .bootstrap import summary
from .class_sensitivity import class_sensitivity
from .cose import SPLITS, CosePairs, cose, cose_values
from .hog import hog, hog_cell_size, hog_similarity
from .mass_accuracy import relevance_mass_accuracy
from .mprt import discrete_entropy, efficient_mprt, fully_randomized, smooth_mprt
from .normalise import abs_normalise, percentile, signed_normalise
from .perturbation import PerturbationCurves, pixel_perturbation
from .pointing_game import pointing_game
from .pooling import POOLINGS, pool_channels
from .randomization import (
    RandomizationResult,
    cascading_randomization,
    data_randomization,
    independent_randomization,
    model_blocks,
    randomized_copy,
)
from .rank import rank_correlation
from .rank_accuracy import relevance_rank_accuracy
from .spearman import spearman
from .ssim import ssim, ssim_index
from .transforms import TRANSFORMS

__all__ = [
    "METRICS",
    "POOLINGS",
    "SIMILARITIES",
    "SPLITS",
    "TRANSFORMS",
    "Combined",
    "CosePairs",
    "Explain",
    "Metric",
    "MetricInputs",
    "PerturbationCurves",
    "RandomizationResult",
    "Summary",
    "Values",
    "abs_normalise",
    "cascading_randomization",
    "class_sensitivity",
    "cose",
    "cose_values",
    "data_randomization",
    "discrete_entropy",
    "efficient_mprt",
    "explain_batched",
    "fully_randomized",
    "hog",
    "hog_cell_size",
    "hog_similarity",
    "independent_randomization",
    "logits",
    "metric",
    "model_blocks",
    "percentile",
    "pixel_perturbation",
    "pointing_game",
    "pool_channels",
    "predict",
    "randomized_copy",
    "rank_correlation",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "signed_normalise",
    "smooth_mprt",
    "spearman",
    "ssim",
    "ssim_index",
    "summary",
]
