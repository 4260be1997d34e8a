"""Artifact integrity: every shard reader refuses a corrupted, truncated or unverifiable shard with an error
naming the file and the stage to rerun; stale or damaged maps stop evaluate before any metric work; a
missing checkpoint names the one training stage; data/ stays git-ignored when it is wiped and pulled."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT

from salbench.attribution import build, select_targets
from salbench.attribution.cache import check_maps, is_fresh, load_maps, method_inputs, read_manifest, save_maps
from salbench.io import (
    CorruptArtifactError, MissingArtifactError, StaleArtifactError, file_hash, load_shard, save_shard,
)
from salbench.models import build_model, load_checkpoint, preprocess, save_checkpoint
from salbench.render import load_split

TASK, MODEL = "unique-query", "resnet-small"
SPEC = {"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 16, 16]}}
CLASSES = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]
ARGS = dict(model_hash="abc", method="integrated_gradients", params={"steps": 8}, layer=None, seed=0)


def checkpoint(path: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = build_model(SPEC, len(CLASSES), 32).eval()
    save_checkpoint(path, model, {"task": TASK, "classes": CLASSES, "accuracy": {}, "params_hash": "x", "seed": seed,
                                  "versions": {}})


def fake_split(n: int = 6, size: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
            "label": rng.integers(0, len(CLASSES), n).astype(np.int64),
            "gt_mask": rng.random((n, size, size)) < 0.2}


# Each reader: (write an artifact under root, return (read it, the shard file, the stage that writes it)).
def _maps(root: Path) -> tuple[Callable[[], Any], Path, str]:
    d = root / "maps" / TASK / MODEL / "integrated_gradients"
    save_maps(d, torch.rand(5, 1, 8, 8), torch.arange(5), shard_size=2, **ARGS)
    return lambda: load_maps(d), d / "maps-00001.safetensors", f"attribute@{TASK}-{MODEL}"


def _maps_up_front(root: Path) -> tuple[Callable[[], Any], Path, str]:  # evaluate's check before any work
    _, shard, stage = _maps(root)
    return lambda: check_maps(shard.parent, targets=torch.arange(5), **ARGS), shard, stage


def _split(root: Path) -> tuple[Callable[[], Any], Path, str]:
    d = root / "render" / TASK
    save_shard(d / "test.safetensors", fake_split())
    return lambda: load_split(d, "test"), d / "test.safetensors", f"render@{TASK}"


def _checkpoint(root: Path) -> tuple[Callable[[], Any], Path, str]:
    d = root / "models" / TASK / MODEL / "checkpoints" / "epoch_1"
    checkpoint(d)
    return lambda: load_checkpoint(d), d / "model.safetensors", f"train@{TASK}-{MODEL}"


def _examples(root: Path) -> tuple[Callable[[], Any], Path, str]:  # evaluate's output, read by plot
    path = root / "evaluate" / TASK / MODEL / "examples.safetensors"
    save_shard(path, {"maps": np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)})
    return lambda: load_shard(path, f"evaluate@{TASK}-{MODEL}"), path, f"evaluate@{TASK}-{MODEL}"


def _data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def _flip(path: Path, start: int, count: int = 64) -> None:
    """Flip ``count`` bytes from ``start`` keeping size and mtime (DVC does not notice such a change)."""
    st, blob = path.stat(), bytearray(path.read_bytes())
    end = min(start + count, len(blob))
    blob[start:end] = bytes(b ^ 0xFF for b in blob[start:end])
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "flipped data bytes": lambda p: _flip(p, (_data_start(p) + p.stat().st_size) // 2 - 32),
    "flipped header bytes": lambda p: _flip(p, 8 + (_data_start(p) - 8) // 2, 4),
    "flipped header length": lambda p: _flip(p, 0, 2),
    "truncated data": lambda p: p.write_bytes(p.read_bytes()[:-10]),
    "truncated header": lambda p: p.write_bytes(p.read_bytes()[:20]),
    "empty file": lambda p: p.write_bytes(b""),
    "extra bytes": lambda p: p.write_bytes(p.read_bytes() + b"\0" * 8),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("artifact", [_maps, _maps_up_front, _split, _checkpoint, _examples])
def test_damaged_shards_name_the_file_and_the_stage(tmp_path: Path, artifact, damage: str) -> None:
    read, shard, stage = artifact(tmp_path)
    read()  # intact: reads
    DAMAGE[damage](shard)
    with pytest.raises(CorruptArtifactError) as err:
        read()
    assert str(shard) in str(err.value) and f"`dvc repro -f {stage}`" in str(err.value)


def test_a_shard_without_a_checksum_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"images": np.zeros((2, 4, 4, 3), np.uint8)}, str(tmp_path / "test.safetensors"))
    with pytest.raises(CorruptArtifactError, match="no salbench.sha256 checksum"):
        load_split(tmp_path, "test")


def test_an_unknown_split_names_the_splits_there_are(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"unknown split 'tst'.*\['train', 'val', 'test'\]") as err:
        load_split(tmp_path / "render" / TASK, "tst")
    assert "dvc repro" not in str(err.value)


def test_map_manifests_record_each_shard_checksum_and_readers_compare(tmp_path: Path) -> None:
    read, shard, stage = _maps(tmp_path)
    d = shard.parent
    manifest = read_manifest(d)
    assert manifest["shards"] == list(manifest["checksums"]) and len(manifest["shards"]) == 3
    assert all(len(c) == 64 for c in manifest["checksums"].values())
    # A whole, valid shard of other maps in place of this one: its own checksum holds, the manifest's does not.
    other = tmp_path / "other"
    save_maps(other, torch.rand(5, 1, 8, 8), torch.arange(5), shard_size=2, **ARGS)
    shutil.copy(other / shard.name, shard)
    with pytest.raises(CorruptArtifactError, match=f"differs from the one the manifest recorded.*{stage}"):
        read()
    assert not is_fresh(d, manifest["key"])  # the attribute stage recomputes damaged maps
    with pytest.raises(CorruptArtifactError, match="differs from the one the manifest recorded"):
        check_maps(d, targets=torch.arange(5), **ARGS)


def test_check_maps_finds_staleness_and_damage_up_front(tmp_path: Path) -> None:
    read, shard, stage = _maps(tmp_path)
    d = shard.parent
    assert check_maps(d, targets=torch.arange(5), **ARGS) == read_manifest(d)["key"]
    with pytest.raises(StaleArtifactError, match=rf"params \{{'steps': 8\}} -> \{{'steps': 16\}}.*`dvc repro {stage}`"):
        check_maps(d, targets=torch.arange(5), **{**ARGS, "params": {"steps": 16}})
    with pytest.raises(StaleArtifactError, match="the checkpoint changed; the explained targets changed"):
        check_maps(d, targets=torch.arange(5).flip(0), **{**ARGS, "model_hash": "new"})
    DAMAGE["flipped data bytes"](shard)
    with pytest.raises(CorruptArtifactError, match=f"do not match the sha256.*dvc repro -f {stage}"):
        check_maps(d, targets=torch.arange(5), **ARGS)
    DAMAGE["truncated data"](shard)
    with pytest.raises(CorruptArtifactError, match=f"truncated.*dvc repro -f {stage}"):
        check_maps(d, targets=torch.arange(5), **ARGS)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="manifest.json: not valid JSON"):
        check_maps(d, targets=torch.arange(5), **ARGS)
    shutil.rmtree(d)
    with pytest.raises(MissingArtifactError, match=f"`dvc repro {stage}`"):
        check_maps(d, targets=torch.arange(5), **ARGS)


def test_verification_reads_and_hashes_each_byte_once(tmp_path: Path, monkeypatch) -> None:
    """Loading a shard hashes its bytes in one pass (the cost: about 2 ms per MB with sha256 on these
    machines) and reads the file once."""
    import hashlib

    save_shard(tmp_path / "s.safetensors", {"images": np.zeros((40, 64, 64, 3), np.uint8), "label": np.arange(40)})
    size = (tmp_path / "s.safetensors").stat().st_size
    hashed, real = [], hashlib.sha256

    class Counting:
        def __init__(self, data: bytes = b"") -> None:
            self.h, self.n = real(data), len(data)

        def update(self, data: Any) -> None:
            self.n += memoryview(data).nbytes
            self.h.update(data)

        def hexdigest(self) -> str:
            hashed.append(self.n)
            return self.h.hexdigest()

    opened = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(hashlib, "sha256", Counting)
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self) or real_read_bytes(self))
    load_shard(tmp_path / "s.safetensors")
    assert len(hashed) == 1 and size - 1024 < hashed[0] < size + 1024 and len(opened) == 1


def _stage(script: str, root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "stages" / script), "--task", TASK, "--model", MODEL, "--params",
           str(root / "params.yaml"), "--data", str(root / "render" / TASK), "--models", str(root / "models"), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=root, timeout=300)


def test_attribute_names_the_one_training_stage(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    _split(tmp_path)
    proc = _stage("attribute.py", tmp_path, "--out", str(tmp_path / "maps"))
    assert proc.returncode == 2 and f"`dvc repro train@{TASK}-{MODEL}`" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "maps").exists()


def write_evaluate_inputs(root: Path, params: dict[str, Any]) -> None:
    """A test split, the four model folders and maps of every `attribute.methods` entry (random values),
    keyed exactly as the attribute stage keys them for ``params``."""
    save_shard(root / "render" / TASK / "test.safetensors", fake_split())
    model_dir = root / "models" / TASK / MODEL
    for sub, seed in (("final", 0), ("random_labels", 1), ("random_init", 2), ("checkpoints/epoch_1", 3)):
        checkpoint(model_dir / sub, seed)
    model, manifest = load_checkpoint(model_dir / "final")
    split = load_split(root / "render" / TASK, "test")
    targets = select_targets(model, preprocess(split["images"], manifest), torch.from_numpy(split["label"]))
    attribute = params["attribute"]
    masks = {"masks": torch.from_numpy(split["gt_mask"]).bool()}
    for name, entry in attribute["methods"].items():
        built = build(name, entry, "cnn")
        if built is not None:
            layer = ",".join(built[0].layers(model, **built[1])) or None
            save_maps(root / "maps" / name, torch.rand(len(targets), 1, 32, 32), targets,
                      model_hash=file_hash(model_dir / "final" / "model.safetensors"), method=name,
                      params=entry or {}, layer=layer, seed=attribute["seed"],
                      inputs=method_inputs(built[0].needs, masks))


@pytest.mark.parametrize("case", ["stale", "flipped"])
def test_stale_or_damaged_maps_stop_evaluate_within_seconds(tmp_path: Path, case: str) -> None:
    """The issue's cases: `integrated_gradients.steps` changed without re-running attribute, and 64 flipped
    bytes in a gradcam shard (size and mtime kept)."""
    from salbench.evaluate import EvalData
    from salbench.evaluate.artifacts import load_entries, load_models, model_hash

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    write_evaluate_inputs(tmp_path, params)
    models = load_models(tmp_path / "models" / TASK / MODEL, torch.device("cpu"), "train@x")
    split = load_split(tmp_path / "render" / TASK, "test")
    images, labels = preprocess(split["images"], {"input_size": 32}), torch.from_numpy(split["label"])
    targets = select_targets(models.model, images, labels)
    data = EvalData(images, labels, torch.from_numpy(split["gt_mask"]).bool(), targets)
    entries = load_entries(params["attribute"]["methods"], "cnn", tmp_path / "maps", models.model,
                           model_hash(tmp_path / "models" / TASK / MODEL), data, targets, 0, "attribute@x")
    assert {"integrated_gradients", "gradcam"} <= set(entries)  # the fabricated maps are fresh and whole

    if case == "stale":
        params["attribute"]["methods"]["integrated_gradients"]["steps"] += 8
        expected = ["'steps': 8} -> {'steps': 16}", "integrated_gradients", f"`dvc repro attribute@{TASK}-{MODEL}`"]
    else:
        DAMAGE["flipped data bytes"](tmp_path / "maps" / "gradcam" / "maps-00000.safetensors")
        expected = ["gradcam/maps-00000.safetensors", f"`dvc repro -f attribute@{TASK}-{MODEL}`"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    outputs = [tmp_path / name for name in ("metrics.json", "results.csv", "out")]
    t0 = time.perf_counter()
    proc = _stage("evaluate.py", tmp_path, "--maps", str(tmp_path / "maps"), "--metrics", str(outputs[0]),
                  "--results", str(outputs[1]), "--out", str(outputs[2]))
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2 and all(e in proc.stderr for e in expected), proc.stderr
    assert "Traceback" not in proc.stderr and not any(p.exists() for p in outputs)
    assert elapsed < 60, elapsed  # python + torch start-up and one forward pass; no metric work


def test_wiped_and_pulled_data_stays_out_of_git(tmp_path: Path) -> None:
    """The root .gitignore keeps data/ ignored without the tracked data/.gitignore (deleted with data/)."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    (tmp_path / "data" / "render" / TASK).mkdir(parents=True)
    (tmp_path / "data" / "render" / TASK / "train.safetensors").write_bytes(b"x")
    (tmp_path / "data" / "metrics.json").write_text("{}")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout
    assert status.splitlines() == ["?? .gitignore"]
    (tmp_path / "data" / ".gitignore").write_text("*\n!.gitignore\n")  # still trackable
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout
    assert sorted(status.splitlines()) == ["?? .gitignore", "?? data/.gitignore"]
    assert subprocess.run(["git", "ls-files", "--error-unmatch", "data/.gitignore"], cwd=ROOT,
                          capture_output=True).returncode == 0
