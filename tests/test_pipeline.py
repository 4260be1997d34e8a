"""The whole `dvc repro` on tiny params in a temporary copy: every stage runs, outputs are complete,
and a second `dvc repro` has nothing to do."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from helpers import TINY_PIPELINE as TINY, run
from salbench.results import read_results

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
        # headlines only (a method-family headline is left out when, as here after one epoch, nothing was scored)
        assert {"accuracy", "n_test"} <= set(ev) and len(json.dumps(ev)) < 1000
        table = read_results(repo / f"data/results/unique-query/{model}.csv")
        assert {"accuracy", "mass_accuracy", "aopc", "perturbation_curve", "cose"} <= set(table["metric"])
        assert set(table.loc[table["method"] == "random", "role"]) == {"control"}
    assert not (repo / "data/plots/evaluate").exists()  # the per-figure CSVs are gone
    plots = run(dvc + ["plots", "show", "--json"], repo).stdout
    assert "data/results/unique-query/" in plots
    assert (repo / "data/metrics/depict.json").exists()
