"""The whole `dvc repro` on tiny params in a temporary copy: every stage runs, outputs are complete,
and a second `dvc repro` has nothing to do."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from helpers import TINY_PIPELINE as TINY, run

@pytest.mark.slow
def test_dvc_repro_whole_pipeline_on_tiny_params(pipeline_copy) -> None:
    repo = pipeline_copy(TINY)
    dvc = [sys.executable, "-m", "dvc"]
    run(dvc + ["repro"], repo, timeout=1800)
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    declared = run(dvc + ["stage", "list", "--name-only"], repo).stdout.split()
    assert sorted(stages) == sorted(declared)
    assert "Running stage" not in run(dvc + ["repro"], repo).stdout  # nothing left to do

    report = (repo / "data/report/index.html").read_text()
    assert "<img" in report and "data:image/png;base64," in report
    metrics = json.loads(run(dvc + ["metrics", "show", "--json"], repo).stdout)
    assert metrics, "dvc metrics show found no metrics"
    for model in TINY["train"]["models"]:
        ev = json.loads((repo / f"data/metrics/evaluate/unique-query/{model}.json").read_text())
        assert "gradient" in json.dumps(ev)
    assert (repo / "data/metrics/depict.json").exists()
