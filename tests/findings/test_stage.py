"""The `findings` stage end to end on a synthetic data/ tree in a temporary directory."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import ROOT
from findings_synthetic import EXPECTED, synthetic_depict, synthetic_table, write_data

STAGE = str(ROOT / "stages/findings.py")


def run(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, STAGE], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_stage_writes_findings_controls_and_metrics(tmp_path: Path) -> None:
    write_data(tmp_path, synthetic_table(), synthetic_depict())
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "data/findings"
    report = json.loads((out / "findings.json").read_text())
    assert {f["id"]: f["verdict"] for f in report["findings"]} == EXPECTED
    assert all(f["claim"] and f["source"] and f["rule"] and f["explanation"] for f in report["findings"])
    counts = {v: list(EXPECTED.values()).count(v) for v in ("reproduced", "not_reproduced", "inconclusive")}
    assert report["counts"] == counts

    with open(out / "findings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["id"]: r["verdict"] for r in rows} == EXPECTED
    ordering = next(r for r in rows if r["id"] == "clevr_xai_ordering_cnn")
    assert int(ordering["not_reproduced"]) + int(ordering["reproduced"]) + int(ordering["inconclusive"]) == 24

    with open(out / "controls.csv", newline="") as fh:
        controls = list(csv.DictReader(fh))
    assert len(controls) == len(report["controls"]) > 0
    assert {"edge_beats", "edge_ci_low", "random_loses", "edge_above_methods"} <= set(controls[0])

    metrics = json.loads((tmp_path / "data/metrics/findings.json").read_text())
    assert {k: metrics[k] for k in counts} == counts and metrics["verdict"] == EXPECTED
    assert metrics["controls"]["metrics"] == len(controls)
    assert "clevr_xai_ordering_cnn: not_reproduced" in done.stdout


def test_missing_inputs_name_the_stage_to_run(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 2 and "dvc repro evaluate" in done.stderr and "Traceback" not in done.stderr
    write_data(tmp_path, synthetic_table().head(50), synthetic_depict())
    (tmp_path / "data/metrics/depict.json").unlink()
    done = run(tmp_path)
    assert done.returncode == 2 and "dvc repro permutation" in done.stderr
    bad = tmp_path / "data/results/unique-query/resnet-small.csv"
    bad.write_text("task,model\nunique-query,resnet-small\n")
    done = run(tmp_path)
    assert done.returncode == 2 and "the results columns must be" in done.stderr


def test_dvc_stage_declares_the_inputs_and_outputs() -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["findings"]
    assert stage["cmd"] == "python stages/findings.py"
    assert {"data/results", "data/metrics/depict.json", "stages/findings.py", "src/salbench/findings"} <= set(
        stage["deps"])
    assert stage["outs"] == ["data/findings"] and stage["metrics"] == ["data/metrics/findings.json"]
