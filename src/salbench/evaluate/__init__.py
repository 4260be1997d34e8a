"""Evaluation of cached and fresh saliency maps for one model: every metric of the `evaluate` params section.

``evaluate(models, source, entries, config) -> Report`` (rows of the results table and example arrays);
the `evaluate` stage writes the table (data/results), headline metrics and the examples.
"""
from .config import EvalConfig, MetricSpec, parse_config
from .data import EvalData, Source, SplitData
from .headlines import HEADLINES, headlines
from .suite import Entry, Models, Report, evaluate, run_metric, summarise

__all__ = [
    "HEADLINES",
    "Entry",
    "EvalConfig",
    "EvalData",
    "MetricSpec",
    "Models",
    "Report",
    "Source",
    "SplitData",
    "evaluate",
    "headlines",
    "parse_config",
    "run_metric",
    "summarise",
]
