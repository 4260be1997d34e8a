"""DVC stage `findings`: does each seed paper's headline claim reproduce on this run?

Reads every results table data/results/<task>/<model>.csv (stage evaluate) and data/metrics/depict.json (stage
permutation), tests every registered finding (salbench.findings.FINDINGS) and the negative controls, and writes
data/findings/{findings.json, findings.csv, controls.csv} and data/metrics/findings.json (verdict counts, each
finding's verdict, the controls' headline counts).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from salbench.errors import cli
from salbench.findings import Inputs, Results, controls_table, evaluate_findings, load_results, write_outputs
from salbench.io import read_json


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="data/results", help="root of the results tables (stage evaluate)")
    ap.add_argument("--depict", default="data/metrics/depict.json", help="DEPICT summary (stage permutation)")
    ap.add_argument("--out", default="data/findings")
    ap.add_argument("--metrics", default="data/metrics/findings.json")
    args = ap.parse_args()

    results = Results(load_results(args.results))
    inputs = Inputs(results, read_json(args.depict, "permutation"))
    findings = evaluate_findings(inputs)
    controls = controls_table(results)
    write_outputs(findings, controls, Path(args.out), Path(args.metrics))
    for f in findings:
        print(f"[findings] {f.id}: {f.verdict}: {f.explanation}")


if __name__ == "__main__":
    main()
