"""The attribute/evaluate matrix split over machines through DVC and a real S3 remote (SeaweedFS): an upstream
job reproduces render/train/DEPICT and pushes; two clones each reproduce half of the matrix and push their
outputs and run cache; a third clone merges their dvc.lock entries (salbench.lockmerge: the attribute stage's
persistent output keeps it out of DVC's run cache), pulls, and `dvc repro` runs only findings and plot."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_PIPELINE, run
from test_s3_roundtrip import BUCKET, KEY, SECRET, s3_server  # noqa: F401  (the fixture)

DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.name=salbench", "-c", "user.email=salbench@localhost"]
CELLS = {"job1": "unique-query-resnet-small", "job2": "unique-query-vit-tiny"}


def _ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def _digests(root: Path, *dirs: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted((root / d).rglob("*")) if p.is_file()}


def _clone(origin: Path, dst: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(dst)], check=True, capture_output=True)
    run(DVC + ["remote", "modify", "--local", "s3", "access_key_id", KEY], dst)
    run(DVC + ["remote", "modify", "--local", "s3", "secret_access_key", SECRET], dst)
    return dst


@pytest.mark.slow  # the tiny pipeline once, split over three clones: ~3-6 min on a shared 2-core machine
def test_two_clones_split_the_matrix_a_third_runs_only_the_rest(pipeline_copy, s3_server, tmp_path) -> None:  # noqa: F811
    origin = pipeline_copy(TINY_PIPELINE)
    run(DVC + ["remote", "add", "-d", "s3", f"s3://{BUCKET}/cache"], origin)
    run(DVC + ["remote", "modify", "s3", "endpointurl", s3_server], origin)
    run(DVC + ["remote", "modify", "--local", "s3", "access_key_id", KEY], origin)
    run(DVC + ["remote", "modify", "--local", "s3", "secret_access_key", SECRET], origin)
    upstream = _ran(run(DVC + ["repro", "train", "permutation"], origin, timeout=1800).stdout)
    assert not any(s.startswith(("attribute", "evaluate")) for s in upstream), upstream
    run(DVC + ["push", "--run-cache"], origin)
    run(["git", "add", "-A"], origin)
    run(GIT + ["commit", "-qm", "upstream: render, train, DEPICT"], origin)

    jobs = {}
    for job, cell in CELLS.items():
        clone = _clone(origin, tmp_path / job)
        # upstream outputs are pulled when a stage needs them, never rerun
        ran = _ran(run(DVC + ["repro", "--pull", "--allow-missing", f"attribute@{cell}", f"evaluate@{cell}"], clone,
                       timeout=1800).stdout)
        assert ran == {f"attribute@{cell}", f"evaluate@{cell}"}, ran  # upstream pulled, not rerun
        run(DVC + ["push", "--run-cache"], clone)
        jobs[job] = clone

    final = _clone(origin, tmp_path / "final")
    run([sys.executable, "-m", "salbench.lockmerge", "dvc.lock", *(str(c / "dvc.lock") for c in jobs.values())],
        final)
    # every output but findings' and plot's has a lock entry now (`repro --pull --allow-missing` would rerun
    # permutation: its dependency data/models/presence is a folder of several stages' outputs)
    run(DVC + ["pull", "--allow-missing"], final)
    ran = _ran(run(DVC + ["repro"], final, timeout=1800).stdout)
    assert ran == {"findings", "plot"}, ran
    for job, cell in CELLS.items():
        task, model = "unique-query", cell.removeprefix("unique-query-")
        outs = (f"data/maps/{task}/{model}", f"data/results/{task}/{model}.csv")
        assert _digests(final, *outs) == _digests(jobs[job], *outs)
    assert (final / "data" / "report").is_dir()
