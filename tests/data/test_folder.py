"""Image-folder tasks: export a task, import it back byte for byte; bad folders stop naming the file."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_helpers import CLASSES, SIZE, SIZES, write_task
from PIL import Image

from salbench.data import FolderError, FolderSpec, export_task, import_folder
from salbench.render import SPLITS, load_manifest, load_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the task in render format, its export as an image folder)."""
    tmp = tmp_path_factory.mktemp("folder")
    task = write_task(tmp / "render" / "t")
    n = export_task(task, tmp / "folder")
    assert n == sum(SIZES.values())
    return task, tmp / "folder"


@pytest.mark.parametrize("how", [{"csv": "labels.csv"}, {"masks": "masks"}])
def test_export_then_import_gives_the_same_arrays(exported, tmp_path, how) -> None:
    task, folder = exported
    manifest = import_folder("t", FolderSpec.from_params({"root": str(folder), **how}), tmp_path / "t", {})
    assert manifest["classes"] == CLASSES and manifest["resolution"] == SIZE and manifest["has_masks"]
    assert {s: c["n"] for s, c in manifest["splits"].items()} == SIZES
    for split in SPLITS:
        want, got = load_split(task, split), load_split(tmp_path / "t", split)
        assert set(got) == {"images", "label", "gt_mask"}
        for key in got:  # lossless PNG and the same order: byte for byte
            assert got[key].dtype == want[key].dtype and got[key].tobytes() == want[key].tobytes(), (split, key)


def test_without_masks_gt_is_empty_and_flagged(exported, tmp_path) -> None:
    _, folder = exported
    manifest = import_folder("t", FolderSpec(folder), tmp_path / "t", {})
    assert manifest["has_masks"] is False and load_manifest(tmp_path / "t")["has_masks"] is False
    assert not load_split(tmp_path / "t", "test")["gt_mask"].any()


def test_csv_concepts_classes_order_and_resize(tmp_path) -> None:
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"{i}.jpg")
        Image.fromarray(np.pad(np.full((20, 20), 255, np.uint8), 10)).save(tmp_path / f"m{i}.png")
    (tmp_path / "t.csv").write_text("path,label,mask,red\n0.jpg,dog,m0.png,1\n1.jpg,cat,m1.png,0\n")
    spec = FolderSpec.from_params({"root": str(tmp_path), "csv": "t.csv", "image_size": 20,
                                   "classes": ["dog", "cat"], "concepts": ["red"]})
    manifest = import_folder("t", spec, tmp_path / "out", {})
    test = load_split(tmp_path / "out", "test")  # no split column: every row is a test image
    assert manifest["classes"] == ["dog", "cat"] and manifest["resolution"] == 20
    assert test["label"].tolist() == [0, 1] and test["concepts"].tolist() == [[1.0], [0.0]]
    assert test["images"].shape == (2, 20, 20, 3) and test["images"][0, 10, 10, 0] > 200
    assert test["gt_mask"][:, 5:15, 5:15].all() and test["gt_mask"].sum() == 2 * 100  # nearest: 10 px border -> 5
    assert load_split(tmp_path / "out", "train")["images"].shape == (0, 20, 20, 3)


def _copy(folder: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(folder, dst)
    return dst


def _break(kind: str, root: Path) -> tuple[dict, str]:
    """Damage a copy of the export; returns (folder params, the file the error must name)."""
    with open(root / "labels.csv") as f:
        rows = list(csv.reader(f))
    victim = rows[5][0]
    if kind == "missing label":
        rows[5][1] = ""
        with open(root / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        return {"csv": "labels.csv"}, "labels.csv line 6"
    if kind == "unknown label":
        rows[5][1] = "zebra"
        with open(root / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        return {"csv": "labels.csv", "classes": CLASSES}, victim  # a label outside the declared classes
    if kind == "mask size":
        Image.new("L", (SIZE + 1, SIZE)).save(root / "masks" / victim)
        return {"masks": "masks"}, f"masks/{victim}"
    if kind == "unreadable":
        (root / victim).write_bytes(b"not a png")
        return {"masks": "masks"}, victim
    if kind == "missing mask":
        (root / "masks" / victim).unlink()
        return {"csv": "labels.csv", "masks": "masks"}, f"masks/{victim}"
    raise AssertionError(kind)


BAD = ["missing label", "unknown label", "mask size", "unreadable", "missing mask"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_folder_names_the_file_before_writing(exported, tmp_path, kind) -> None:
    root = _copy(exported[1], tmp_path / "f")
    how, culprit = _break(kind, root)
    if kind == "missing mask":
        how = {"masks": "masks"}  # the layout route: every image needs its mask
    with pytest.raises(FolderError, match=culprit.replace(".", r"\.")):
        import_folder("t", FolderSpec.from_params({"root": str(root), **how}), tmp_path / "out", {})
    assert not (tmp_path / "out").exists()


def test_import_stage_prints_error_and_exits_2(exported, tmp_path) -> None:
    root = _copy(exported[1], tmp_path / "f")
    how, culprit = _break("mask size", root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"folders": {"t": {"root": str(root), **how}}}))
    cmd = [sys.executable, str(ROOT / "stages" / "import.py"), "--task", "t", "--params",
           str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and culprit in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_params_check_folder_paths(tmp_path) -> None:
    from salbench.config.validate import validate_params
    from salbench.params import ParamsError

    with pytest.raises(ParamsError, match=r"folders\.t\.root: no folder"):
        validate_params({"folders": {"t": {"root": str(tmp_path / "nope")}}})
    with pytest.raises(ParamsError, match=r"folders\.t\.csv: no file"):
        validate_params({"folders": {"t": {"root": str(tmp_path), "csv": "x.csv"}}})
    with pytest.raises(ParamsError, match=r"folders\.t\.image_sise: unknown key"):
        validate_params({"folders": {"t": {"root": str(tmp_path), "image_sise": 3}}})
