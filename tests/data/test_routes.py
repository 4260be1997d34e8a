"""The same numbers through an image folder as through the render format: train, attribute and evaluate on a
task and on its export imported back give the same arrays, maps and results table (one trained model: the
import gives the training data back byte for byte, tests/data/test_folder.py); without masks the GT metrics
are skipped with a note and the other rows are unchanged."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from data_helpers import write_task

from salbench.results import read_results

ROOT = Path(__file__).resolve().parents[2]
MODEL = {"model": {"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 16, 16]}},
         "epochs": 1, "batch_size": 8, "checkpoint_epochs": [1], "random_labels": {"n_train": 8, "epochs": 1}}
PARAMS = {
    "train": {"seed": 0, "device": "cpu", "tasks": ["t"], "min_test_accuracy": 0.0, "models": {"m": MODEL}},
    "attribute": {"tasks": ["t"], "batch_size": 16, "methods": {"gradient": {}, "gradcam": {}}},
    "evaluate": {"n_boot": 20, "batch_size": 16, "examples": 2, "metrics": {
        "mass_accuracy": {}, "pointing_game": {}, "class_sensitivity": {"samples": 4},
        "aopc": {"samples": 4, "steps": 2, "patch": 8},
        "cascading_randomization": {"samples": 3, "methods": ["gradcam"], "similarities": ["spearman_abs"]}}},
}


def _stage(name: str, root: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "stages" / f"{name}.py"), "--task", "t", "--params", str(root / "params.yaml"),
           "--data" if name != "import" else "--out", str(data), *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _files(d: Path) -> dict[str, bytes]:
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


@pytest.mark.slow  # seven stage subprocesses: ~60-150 s on a shared 2-core machine
def test_folder_route_reproduces_the_render_route(tmp_path: Path) -> None:
    from salbench.data import export_task

    rendered = write_task(tmp_path / "render" / "t")
    export_task(rendered, tmp_path / "folder")
    params = {**PARAMS, "folders": {"t": {"root": str(tmp_path / "folder"), "masks": "masks"},
                                    "bare": {"root": str(tmp_path / "folder")}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _stage("import", tmp_path, tmp_path / "imported" / "t")
    models = tmp_path / "models"
    _stage("train", tmp_path, tmp_path / "imported" / "t", "--model", "m", "--out", str(models / "t" / "m"))
    out = {}
    for route, data in (("render", rendered), ("folder", tmp_path / "imported" / "t")):
        maps = tmp_path / route / "maps"
        _stage("attribute", tmp_path, data, "--model", "m", "--models", str(models), "--out", str(maps))
        _stage("evaluate", tmp_path, data, "--model", "m", "--models", str(models), "--maps", str(maps),
               "--results", str(tmp_path / route / "results.csv"), "--metrics", str(tmp_path / route / "m.json"),
               "--out", str(tmp_path / route / "out"))
        out[route] = (maps, tmp_path / route / "results.csv")
    (maps1, r1), (maps2, r2) = out["render"], out["folder"]
    assert _files(maps1) == _files(maps2)  # the same maps, byte for byte
    assert r1.read_bytes() == r2.read_bytes()
    table = read_results(r1)
    assert {"mass_accuracy", "pointing_game", "aopc", "class_sensitivity"} <= set(table["metric"])

    # the same folder without masks: the GT metrics are skipped with a note, the others give the same rows
    params["folders"]["t"] = params["folders"]["bare"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bare = tmp_path / "bare" / "t"
    _stage("import", tmp_path, bare)
    proc = _stage("evaluate", tmp_path, bare, "--model", "m", "--models", str(models), "--maps", str(maps1),
                  "--results", str(tmp_path / "bare.csv"), "--metrics", str(tmp_path / "bare.json"),
                  "--out", str(tmp_path / "bare_out"))
    assert "no GT masks" in proc.stderr and "mass_accuracy, pointing_game" in proc.stderr
    no_gt = read_results(tmp_path / "bare.csv")
    assert not {"mass_accuracy", "pointing_game"} & set(no_gt["metric"])
    kept = table[~table["metric"].isin(["mass_accuracy", "pointing_game"])]
    assert len(no_gt) > 10 and kept.reset_index(drop=True).equals(no_gt.reset_index(drop=True))
