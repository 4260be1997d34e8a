"""Verdicts: does each seed paper's headline claim reproduce on this run's results table?

``FINDINGS`` registers one small function per claim (modules clevr_xai, clevr_xai_vqa, sanity_checks, cose, normgrad,
depict) with its paper, source, claim, rows and CI-aware rule (``salbench.findings.rules``); :func:`evaluate_findings`
tests them all. ``controls_table`` is the negative-controls table (Binder et al. 2023) and :func:`findings_html` the
report's HTML fragment. :func:`write_outputs` writes what the DVC stage `findings` produces.
"""
from __future__ import annotations

from . import clevr_xai, clevr_xai_vqa, cose, depict, normgrad, sanity_checks  # noqa: F401  (register the findings)
from .base import (FINDINGS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Cell, Finding, FindingSpec, Inputs,
                   Stat, evaluate_findings, verdict_counts)
from .controls import controls_summary, controls_table
from .html import findings_html
from .output import write_outputs
from .table import Results, Unit, load_results

__all__ = ["FINDINGS", "INCONCLUSIVE", "NOT_REPRODUCED", "REPRODUCED", "VERDICTS", "Cell", "Finding", "FindingSpec",
           "Inputs", "Results", "Stat", "Unit", "controls_summary", "controls_table", "evaluate_findings",
           "findings_html", "load_results", "verdict_counts", "write_outputs"]
