"""Saliency maps on disk: safetensors shards plus a JSON manifest keyed by everything they depend on.

Layout of a map directory (one per model × method, written atomically)::

    manifest.json            key, model_hash, method, params, layer, targets_sha256, inputs, seed, shape,
                             shards, checksums (shard -> sha256), provenance
    maps-00000.safetensors   maps float32 n×C'×H×W, targets int64 n (sha256 in its header, salbench.io)

The key hashes (model checkpoint hash, method, its params, layer, targets, the SHA-256 of the per-sample
inputs the method reads besides the images (``inputs``, e.g. the GT masks of the control maps), seed,
and the attribution code): a stage compares it with :func:`cache_key` of its current inputs and recomputes
only the methods whose key changed. Readers verify every shard against the manifest's checksum.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import SalbenchError
from ..io import (
    CorruptArtifactError, MissingArtifactError, StaleArtifactError, atomic_dir, check_shard, corrupt, load_shard,
    params_hash, provenance, read_json, save_shard, write_json,
)

STAGE = "attribute"
MANIFEST = "manifest.json"


def _targets_sha256(targets: Tensor | np.ndarray) -> str:
    array = np.ascontiguousarray(torch.as_tensor(targets).cpu().numpy().astype(np.int64))
    return hashlib.sha256(array.tobytes()).hexdigest()


def tensor_sha256(t: Tensor | np.ndarray) -> str:
    """SHA-256 of a tensor's dtype, shape and values (any device)."""
    array = np.ascontiguousarray(torch.as_tensor(t).detach().cpu().numpy())
    h = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def code_hash() -> str:
    """Hash of the attribution package's source, so that maps kept across runs follow code changes."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.relative_to(Path(__file__).parent).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def cache_key(model_hash: str, method: str, params: Mapping[str, Any], layer: str | None,
              targets: Tensor | np.ndarray, seed: int | None, inputs: Mapping[str, str] | None = None) -> str:
    """Stable hash of everything a map directory depends on (the attribution code included).

    ``inputs``: name -> :func:`tensor_sha256` of the per-sample inputs the method reads (:func:`method_inputs`).
    """
    return params_hash({"model": model_hash, "method": method, "params": dict(params), "layer": layer,
                        "targets": _targets_sha256(targets), "inputs": dict(sorted((inputs or {}).items())),
                        "seed": seed, "code": code_hash()})


def method_inputs(needs: Sequence[str], inputs: Mapping[str, Tensor]) -> dict[str, str]:
    """:func:`tensor_sha256` of the per-sample inputs a method ``needs`` (a missing one names the stage)."""
    missing = [key for key in needs if key not in inputs]
    if missing:
        raise SalbenchError(f"a method reads {missing}, which these inputs lack (have: {sorted(inputs)}); the "
                            f"render stage writes gt_mask: run `dvc repro render` or drop the control entries")
    return {key: tensor_sha256(inputs[key]) for key in needs}


def save_maps(out_dir: str | Path, maps: Tensor, targets: Tensor, *, model_hash: str, method: str,
              params: Mapping[str, Any], layer: str | None, seed: int | None, inputs: Mapping[str, str] | None = None,
              shard_size: int = 256) -> dict[str, Any]:
    """Write maps N×C'×H×W and targets N as shards + manifest, atomically; returns the manifest.
    ``inputs``: as in :func:`cache_key`."""
    if len(maps) != len(targets):
        raise ValueError(f"{len(maps)} maps but {len(targets)} targets")
    maps_np = maps.detach().float().cpu().numpy()
    targets_np = torch.as_tensor(targets).cpu().numpy().astype(np.int64)
    checksums = {}
    with atomic_dir(out_dir) as tmp:
        for i, start in enumerate(range(0, max(len(maps_np), 1), shard_size)):
            name = f"maps-{i:05d}.safetensors"
            checksums[name] = save_shard(tmp / name, {"maps": maps_np[start:start + shard_size],
                                                      "targets": targets_np[start:start + shard_size]})
        manifest = {
            "key": cache_key(model_hash, method, params, layer, targets_np, seed, inputs),
            "model_hash": model_hash, "method": method, "params": dict(params), "layer": layer,
            "targets_sha256": _targets_sha256(targets_np), "inputs": dict(sorted((inputs or {}).items())),
            "seed": seed, "code_hash": code_hash(),
            "shape": list(maps_np.shape), "shards": list(checksums), "checksums": checksums,
            "provenance": provenance({"method": method, **dict(params)}, seed),
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def attribute_stage(map_dir: str | Path) -> str:
    """The DVC stage that writes ``map_dir``: ``attribute@<task>-<model>`` for ``.../maps/<task>/<model>/<method>``."""
    model = Path(map_dir).parent
    return f"{STAGE}@{model.parent.name}-{model.name}" if model.parent.parent.name == "maps" else STAGE


def read_manifest(map_dir: str | Path, stage: str | None = None) -> dict[str, Any]:
    """The manifest of a map directory; a missing one names the stage to run (default :func:`attribute_stage`)."""
    return read_json(Path(map_dir) / MANIFEST, stage or attribute_stage(map_dir))


def _shards(map_dir: Path, manifest: Mapping[str, Any], stage: str) -> list[tuple[Path, str]]:
    """(path, recorded sha256) of each shard the manifest lists."""
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict) or list(checksums) != manifest.get("shards"):
        raise corrupt(map_dir / MANIFEST, "it records no checksum for each shard", stage)
    return [(map_dir / name, checksum) for name, checksum in checksums.items()]


def check_maps(map_dir: str | Path, *, model_hash: str, method: str, params: Mapping[str, Any],
               layer: str | None, targets: Tensor | np.ndarray, seed: int | None, stage: str | None = None,
               inputs: Mapping[str, str] | None = None) -> str:
    """Up-front check of a map directory: manifest present, made for these inputs (``inputs``: as for
    :func:`cache_key`; else the error says which input changed), every shard present, whole and as the
    manifest recorded (one streaming hash pass, no maps kept in memory). Returns the cache key."""
    map_dir, stage = Path(map_dir), stage or attribute_stage(map_dir)
    manifest = read_manifest(map_dir, stage)
    key = cache_key(model_hash, method, params, layer, targets, seed, inputs)
    if manifest.get("key") != key:
        now = {"method": method, "params": dict(params), "layer": layer, "seed": seed,
               "inputs": dict(sorted((inputs or {}).items()))}
        changed = [f"{k} {manifest.get(k)!r} -> {v!r}" for k, v in now.items() if manifest.get(k) != v]
        hashed = {"model_hash": (model_hash, "the checkpoint"), "code_hash": (code_hash(), "the attribution code"),
                  "targets_sha256": (_targets_sha256(targets), "the explained targets")}
        changed += [f"{what} changed" for k, (v, what) in hashed.items() if manifest.get(k) != v]
        raise StaleArtifactError(f"maps in {map_dir} are stale, computed for other inputs "
                                 f"({'; '.join(changed) or 'key ' + str(manifest.get('key'))}); run `dvc repro "
                                 f"{stage}` to recompute them")
    for path, checksum in _shards(map_dir, manifest, stage):
        check_shard(path, stage, checksum)
    return key


def is_fresh(map_dir: str | Path, key: str) -> bool:
    """Whether ``map_dir`` holds intact maps for ``key`` (so they need not be recomputed); reads every shard,
    so damaged maps are recomputed."""
    map_dir = Path(map_dir)
    if not (map_dir / MANIFEST).exists():
        return False
    try:
        manifest = read_json(map_dir / MANIFEST)
        if manifest.get("key") != key:
            return False
        for path, checksum in _shards(map_dir, manifest, STAGE):
            check_shard(path, STAGE, checksum)
    except (CorruptArtifactError, MissingArtifactError):
        return False
    return True


def load_maps(map_dir: str | Path, key: str | None = None, stage: str | None = None
              ) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Maps N×C'×H×W, targets N and the manifest, each shard verified; with ``key``, stale maps raise.
    Errors name ``stage`` (default :func:`attribute_stage`)."""
    map_dir, stage = Path(map_dir), stage or attribute_stage(map_dir)
    manifest = read_manifest(map_dir, stage)
    if key is not None and manifest.get("key") != key:
        raise StaleArtifactError(f"maps in {map_dir} were computed for other inputs (key {manifest.get('key')} != "
                                 f"{key}); run `dvc repro {stage}` to recompute them")
    shards = [load_shard(path, stage, checksum) for path, checksum in _shards(map_dir, manifest, stage)]
    maps = torch.from_numpy(np.concatenate([s["maps"] for s in shards]))
    targets = torch.from_numpy(np.concatenate([s["targets"] for s in shards]))
    return maps, targets, manifest
