"""The `findings` stage's outputs: findings.json, findings.csv, controls.csv and the small metrics file."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..io import atomic_dir, write_json
from .base import Finding, verdict_counts
from .controls import controls_summary, records

CSV_COLUMNS = ["id", "verdict", "paper", "source", "claim", "explanation", "rule", "reproduced", "not_reproduced",
               "inconclusive"]


def metrics(findings: Sequence[Finding], controls: pd.DataFrame) -> dict:
    """For `dvc metrics show`: the verdict counts, each finding's verdict, and the controls' headline counts."""
    return {**verdict_counts(list(findings)), "verdict": {f.id: f.verdict for f in findings},
            "controls": controls_summary(controls)}


def write_outputs(findings: Sequence[Finding], controls: pd.DataFrame, out: str | Path,
                  metrics_path: str | Path) -> None:
    """``out``/findings.json (every finding with claim, source, rule, verdict, explanation and the cell tree with its
    numbers; the controls' rows), ``out``/findings.csv (one row per finding, with its leaf-verdict counts),
    ``out``/controls.csv, and the metrics file; all written atomically."""
    with atomic_dir(out) as tmp:
        write_json(tmp / "findings.json", {"counts": verdict_counts(list(findings)),
                                           "findings": [f.to_json() for f in findings],
                                           "controls": records(controls)})
        with open(tmp / "findings.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, CSV_COLUMNS)
            w.writeheader()
            for f in findings:
                d = f.to_json()
                w.writerow({**{k: d[k] for k in CSV_COLUMNS[:7]}, **f.counts()})
        controls.to_csv(tmp / "controls.csv", index=False)
    write_json(metrics_path, metrics(findings, controls))
