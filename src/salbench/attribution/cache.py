"""Saliency maps on disk: safetensors shards plus a JSON manifest keyed by everything they depend on.

Layout of a map directory (one per model × method, written atomically)::

    manifest.json            key, model_hash, method, params, layer, targets_sha256, inputs, seed,
                             shape, shards, provenance
    maps-00000.safetensors   maps float32 n×C'×H×W, targets int64 n

The key hashes (model checkpoint hash, method, its params, layer, targets, the SHA-256 of the per-sample
inputs the method reads besides the images (``inputs``, e.g. the GT masks of the control maps), seed,
and the attribution code): a stage compares it with :func:`cache_key` of its current inputs and recomputes
only the methods whose key changed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import SalbenchError
from ..io import atomic_dir, load_shard, params_hash, provenance, read_json, save_shard, write_json

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
    shards = []
    with atomic_dir(out_dir) as tmp:
        for i, start in enumerate(range(0, max(len(maps_np), 1), shard_size)):
            name = f"maps-{i:05d}.safetensors"
            save_shard(tmp / name, {"maps": maps_np[start:start + shard_size],
                                    "targets": targets_np[start:start + shard_size]})
            shards.append(name)
        manifest = {
            "key": cache_key(model_hash, method, params, layer, targets_np, seed, inputs),
            "model_hash": model_hash, "method": method, "params": dict(params), "layer": layer,
            "targets_sha256": _targets_sha256(targets_np), "inputs": dict(sorted((inputs or {}).items())),
            "seed": seed, "code_hash": code_hash(),
            "shape": list(maps_np.shape), "shards": shards,
            "provenance": provenance({"method": method, **dict(params)}, seed),
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def read_manifest(map_dir: str | Path) -> dict[str, Any]:
    """The manifest of a map directory; a missing one names the stage to run."""
    return read_json(Path(map_dir) / MANIFEST, STAGE)


def is_fresh(map_dir: str | Path, key: str) -> bool:
    """Whether ``map_dir`` holds maps for ``key`` (so they need not be recomputed)."""
    path = Path(map_dir) / MANIFEST
    return path.exists() and read_json(path).get("key") == key


def load_maps(map_dir: str | Path, key: str | None = None) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Maps N×C'×H×W, targets N and the manifest; with ``key``, stale maps raise naming the stage."""
    manifest = read_manifest(map_dir)
    if key is not None and manifest["key"] != key:
        raise ValueError(f"maps in {map_dir} were computed for other inputs (key {manifest['key']} != {key}); "
                         f"run `dvc repro {STAGE}` to recompute them")
    shards = [load_shard(Path(map_dir) / name, STAGE) for name in manifest["shards"]]
    maps = torch.from_numpy(np.concatenate([s["maps"] for s in shards]))
    targets = torch.from_numpy(np.concatenate([s["targets"] for s in shards]))
    return maps, targets, manifest
