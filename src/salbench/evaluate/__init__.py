"""Evaluation of cached and fresh saliency maps for one model: every metric of the `evaluate` params section.

``evaluate(models, test_set, entries, config) -> Report``; the `evaluate` stage loads the artifacts and
writes the report as JSON (metrics) and CSV (curves for `dvc plots`).
"""
from .agreement import ranking_agreement
from .config import EvalConfig, MetricSpec, parse_config
from .suite import Entry, EvalData, Models, Report, evaluate, perturbation_scores, randomization_rows, run_metric

__all__ = [
           "Entry",
           "EvalConfig",
           "EvalData",
           "MetricSpec",
           "Models",
           "Report",
           "evaluate",
           "parse_config",
           "perturbation_scores",
           "randomization_rows",
           "ranking_agreement",
           "run_metric",
]
