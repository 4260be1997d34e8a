"""salbench.lockmerge: the jobs' dvc.lock entries are added; one stage held differently by two jobs stops."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from salbench.errors import SalbenchError
from salbench.lockmerge import merge_locks

UP = {"cmd": "python stages/train.py", "outs": [{"path": "data/models", "md5": "a.dir"}]}
CELL = {"cmd": "python stages/attribute.py", "outs": [{"path": "data/maps/t/m", "md5": "b.dir"}]}


def test_merge_adds_each_jobs_cells_and_keeps_the_base_order() -> None:
    base = {"schema": "2.0", "stages": {"train@t-m": UP}}
    job1 = {"schema": "2.0", "stages": {"train@t-m": UP, "attribute@t-m": CELL}}
    job2 = {"schema": "2.0", "stages": {"train@t-m": UP, "attribute@t-n": {**CELL, "cmd": "other"}}}
    merged = merge_locks(base, [("job1", job1), ("job2", job2)])
    assert list(merged["stages"]) == ["train@t-m", "attribute@t-m", "attribute@t-n"]
    assert merged["stages"]["attribute@t-n"]["cmd"] == "other" and merged["schema"] == "2.0"


def test_conflicting_entry_or_schema_stops_naming_it() -> None:
    base = {"schema": "2.0", "stages": {"train@t-m": UP}}
    changed = {"schema": "2.0", "stages": {"train@t-m": {**UP, "cmd": "changed"}}}
    with pytest.raises(SalbenchError, match="stage train@t-m: job1 and the base dvc.lock hold different"):
        merge_locks(base, [("job1", changed)])
    with pytest.raises(SalbenchError, match="job1: dvc.lock schema '3.0'"):
        merge_locks(base, [("job1", {"schema": "3.0", "stages": {}})])


def test_cli_updates_the_base_in_place(tmp_path) -> None:
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"train@t-m": UP}}))
    (tmp_path / "j.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"attribute@t-m": CELL}}))
    subprocess.run([sys.executable, "-m", "salbench.lockmerge", "dvc.lock", "j.lock"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert set(yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]) == {"train@t-m", "attribute@t-m"}
    bad = subprocess.run([sys.executable, "-m", "salbench.lockmerge", "dvc.lock", "missing.lock"], cwd=tmp_path,
                         check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: missing.lock")
