"""Tasks without GT masks (an image folder imported without masks): the metrics that read masks are skipped."""
from __future__ import annotations

import dataclasses

from ..metrics import METRICS
from .config import EvalConfig


def without_gt_metrics(config: EvalConfig) -> tuple[EvalConfig, list[str]]:
    """(``config`` without the metric specs that need GT masks, their names): mass/rank accuracy and the
    pointing game; COSE, the randomisation checks, class sensitivity, perturbation and MPRT stay."""
    dropped = [s.name for s in config.specs if "masks" in METRICS.get(s.name).needs]
    kept = [s for s in config.specs if "masks" not in METRICS.get(s.name).needs]
    return dataclasses.replace(config, specs=kept), list(dict.fromkeys(dropped))
