"""The whole `dvc repro` on tiny params in a temporary copy: every stage runs, outputs are complete,
and a second `dvc repro` has nothing to do."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from helpers import ROOT, TINY_RENDER, run

TINY_MODEL = {"epochs": 1, "batch_size": 8, "checkpoint_epochs": [1], "random_labels": {"n_train": 8, "epochs": 2}}
TINY = {
    "render": TINY_RENDER,
    "train": {"min_test_accuracy": 0.0,
              "models": {m: TINY_MODEL for m in yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["models"]}},
    "attribute": {"batch_size": 16},
    "concepts": {
        "n_images": 8, "permutations": 2, "batch_size": 16, "preview": 4,
        "diffusion": {"resolution": 16, "steps": 2, "batch_size": 4, "channels": [8, 16], "text_dim": 16,
                      "inference_steps": 2, "sample_batch_size": 16, "sample_every": 1},
        "h": {"epochs": 1, "batch_size": 8},
    },
}


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
