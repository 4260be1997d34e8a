"""Shared fixtures: one torch thread for in-process tests, and a temporary copy of the DVC pipeline."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
import torch
import yaml

from helpers import ROOT, deep_merge, run


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny in-process models run fastest and reproducibly on one thread (subprocess stages are unaffected)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pipeline_copy(tmp_path: Path) -> Callable[[Mapping[str, Any]], Path]:
    """Copy dvc.yaml, params.yaml, stages/ and src/ into a fresh git+DVC repo with params overrides."""

    def make(overrides: Mapping[str, Any]) -> Path:
        repo = tmp_path / "repo"
        repo.mkdir()
        for name in ("dvc.yaml", "stages", "src"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
        params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["git", "init", "-q"], repo)
        run([sys.executable, "-m", "dvc", "init", "-q"], repo)
        # A clone has commits (dvclive and `dvc exp` need a HEAD).
        run(["git", "add", "-A"], repo)
        run(["git", "-c", "user.name=salbench", "-c", "user.email=salbench@localhost", "commit", "-qm", "init"], repo)
        return repo

    return make
