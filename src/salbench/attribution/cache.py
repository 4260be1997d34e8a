"""Saliency maps on disk: safetensors shards plus a JSON manifest keyed by everything they depend on.

Layout of a map directory (one per model × method, written atomically)::

    manifest.json            key, model_hash, method, params, layer, targets_sha256, inputs, seed, shape,
                             dtype, shards, checksums (shard -> sha256), shard_keys (shard -> key), provenance
    maps-00000.safetensors   maps float32 (or float16) n×C'×H×W, targets int64 n (sha256 in its header)

The directory's key hashes (model checkpoint hash, method, its params, layer, targets, the SHA-256 of the
per-sample inputs the method reads besides the images (``inputs``, e.g. the GT masks of the control
maps), seed, and the attribution code); readers (evaluate) compare it with :func:`cache_key` of their
inputs and verify every shard against the manifest's checksum. The streamed attribute stage
(salbench.attribution.stream) writes through :class:`MapWriter` and keys each shard on its own
(:func:`shard_key`: the same parts plus the shard's first index, images, targets, inputs and storage
dtype), so a grown split or a damaged shard recomputes only the shards whose key has no intact match.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import SalbenchError
from ..io import (
    CorruptArtifactError, MissingArtifactError, StaleArtifactError, atomic_dir, check_shard, corrupt, load_shard,
    params_hash, provenance, read_json, save_shard, shard_shapes, write_json,
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


class MapReader:
    """One entry's cached maps, read by row range: :meth:`read` loads only the shards that hold the rows asked
    for, each verified against the manifest's checksum, into one preallocated float32 tensor (float16 storage is
    widened). With ``key``, stale maps raise; errors name ``stage`` (default :func:`attribute_stage`)."""

    def __init__(self, map_dir: str | Path, key: str | None = None, stage: str | None = None) -> None:
        self.dir, self.stage = Path(map_dir), stage or attribute_stage(map_dir)
        self.manifest = read_manifest(self.dir, self.stage)
        if key is not None and self.manifest.get("key") != key:
            raise StaleArtifactError(f"maps in {self.dir} were computed for other inputs (key "
                                     f"{self.manifest.get('key')} != {key}); run `dvc repro {self.stage}` to "
                                     "recompute them")
        self.shape = [int(d) for d in self.manifest["shape"]]
        self.shards, self.bounds = _shards(self.dir, self.manifest, self.stage), [0]
        for path, _ in self.shards:  # row counts from the checked headers; the data is verified when read
            self.bounds.append(self.bounds[-1] + shard_shapes(path, self.stage).get("targets", (0,))[0])
        if self.bounds[-1] != self.shape[0]:
            raise corrupt(self.dir / MANIFEST, f"its shards hold {self.bounds[-1]} maps, not {self.shape[0]}",
                          self.stage)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor]:
        """Maps ``start:stop`` (n×C'×H×W float32, on the CPU) and the targets they explain (n)."""
        stop = len(self) if stop is None else min(stop, len(self))
        n = max(stop - start, 0)
        maps, targets = torch.empty([n, *self.shape[1:]]), torch.empty(n, dtype=torch.int64)
        for (path, checksum), lo, hi in zip(self.shards, self.bounds, self.bounds[1:]):
            if lo < stop and hi > start:
                shard = load_shard(path, self.stage, checksum)
                if list(shard["maps"].shape[1:]) != self.shape[1:]:
                    raise corrupt(self.dir / MANIFEST, f"its shape {self.shape} does not match shard {path.name}",
                                  self.stage)
                a, b = max(start, lo), min(stop, hi)
                maps[a - start:b - start] = torch.from_numpy(shard["maps"][a - lo:b - lo])
                targets[a - start:b - start] = torch.from_numpy(shard["targets"][a - lo:b - lo])
        return maps, targets


def load_maps(map_dir: str | Path, key: str | None = None, stage: str | None = None, limit: int | None = None
              ) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Maps N×C'×H×W float32 (the first ``limit`` only, if given), targets N and the manifest
    (:class:`MapReader`)."""
    reader = MapReader(map_dir, key, stage)
    return (*reader.read(0, limit), reader.manifest)


def shard_key(whole_key_parts: Mapping[str, Any], start: int, images: Tensor, targets: Tensor,
              inputs: Mapping[str, Tensor], dtype: str) -> str:
    """Key of one shard of maps: the entry's key parts (model, method, params, layer, seed, code), the
    shard's first index, its images, targets, per-sample inputs and the storage dtype. A shard of a grown
    split (same first images, see salbench.render.dataset.split_labels) has the same key, so it is kept."""
    return params_hash({**whole_key_parts, "start": start, "images": tensor_sha256(images),
                        "targets": _targets_sha256(targets), "dtype": dtype,
                        "inputs": {k: tensor_sha256(v) for k, v in sorted(inputs.items())}})


class StreamHash:
    """:func:`tensor_sha256` of a tensor of known ``shape`` fed in consecutive row blocks."""

    def __init__(self, dtype: str, shape: Sequence[int]) -> None:
        self.h = hashlib.sha256(f"{np.dtype(dtype)}{tuple(int(d) for d in shape)}".encode())

    def update(self, block: Tensor | np.ndarray) -> None:
        self.h.update(np.ascontiguousarray(torch.as_tensor(block).detach().cpu().numpy()).tobytes())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


MAP_DTYPES = ("float32", "float16")


def shard_name(index: int) -> str:
    """File name of a map directory's shard number ``index`` (0, 1, ...)."""
    return f"maps-{index:05d}.safetensors"


def write_map_shard(path: Path, maps: Tensor, targets: Tensor | np.ndarray, dtype: str) -> str:
    """Write one shard (maps n×C'×H×W stored as ``dtype``, targets n) atomically; returns its checksum."""
    if len(maps) != len(targets):
        raise ValueError(f"{len(maps)} maps but {len(targets)} targets")
    return save_shard(path, {"maps": maps.detach().cpu().numpy().astype(dtype),
                             "targets": torch.as_tensor(targets).cpu().numpy().astype(np.int64)})


def intact_shard(out_dir: Path, old: Mapping[str, tuple[str, str]], key: str) -> tuple[str, str] | None:
    """(name, checksum) of the shard of ``out_dir`` keyed ``key`` (``old``: :attr:`MapWriter.old`) if it is
    intact, else None."""
    if key not in old:
        return None
    name, checksum = old[key]
    try:
        check_shard(out_dir / name, STAGE, checksum)
    except (CorruptArtifactError, MissingArtifactError):
        return None
    return name, checksum


class MapWriter:
    """Writes one entry's map directory shard by shard inside an atomic directory (the old directory stays
    until :meth:`close`): :meth:`reuse` copies an intact shard of the old directory whose key matches,
    :meth:`add` writes a computed one. Memory: one shard."""

    def __init__(self, out_dir: str | Path, *, model_hash: str, method: str, params: Mapping[str, Any],
                 layer: str | None, seed: int | None, dtype: str = "float32") -> None:
        if dtype not in MAP_DTYPES:
            raise SalbenchError(f"map dtype {dtype!r} is not one of {list(MAP_DTYPES)}; set attribute.map_dtype")
        self.out_dir, self.dtype = Path(out_dir), dtype
        self.meta = {"model_hash": model_hash, "method": method, "params": dict(params), "layer": layer,
                     "seed": seed}
        self.parts = {"model": model_hash, "method": method, "params": dict(params), "layer": layer, "seed": seed,
                      "code": code_hash()}
        self.old_manifest: dict[str, Any] = {}
        self.old, self.old_shape = self._old_shards()
        self.added = 0
        self.pending: list[tuple[str, str]] = []
        self._ctx = atomic_dir(self.out_dir)
        self.tmp = self._ctx.__enter__()
        self.checksums: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.shape: list[int] | None = None
        self.targets: list[np.ndarray] = []

    def _old_shards(self) -> tuple[dict[str, tuple[str, str]], list[int]]:
        """(key -> (shard name, checksum), map shape C'×H×W) of the old directory's shards."""
        try:
            manifest = read_json(self.out_dir / MANIFEST)
            self.old_manifest = manifest
            names = dict(manifest.get("shard_keys") or {})
            return ({k: (n, manifest["checksums"][n]) for n, k in names.items() if n in manifest["checksums"]},
                    [int(d) for d in manifest["shape"][1:]])
        except (MissingArtifactError, CorruptArtifactError, KeyError, TypeError, AttributeError, ValueError):
            return {}, []

    def _name(self) -> str:
        return shard_name(len(self.checksums))

    def reuse(self, key: str, targets: Tensor) -> bool:
        """Copy the old directory's shard for ``key`` if it is intact; False (nothing done) otherwise."""
        found = intact_shard(self.out_dir, self.old, key)
        if found is None:
            return False
        self.adopt(found[1], key, targets, [len(targets), *self.old_shape], reused=found[0])
        return True

    def add(self, key: str, maps: Tensor, targets: Tensor) -> None:
        """Write the next shard: maps n×C'×H×W, targets n."""
        checksum = write_map_shard(self.tmp / self._name(), maps, targets, self.dtype)
        self.adopt(checksum, key, targets, maps.shape)

    def adopt(self, checksum: str, key: str, targets: Tensor | np.ndarray, shape: Sequence[int],
              reused: str | None = None) -> None:
        """Record the next shard (:func:`shard_name` of its index), which another process wrote into
        :attr:`tmp` with :func:`write_map_shard`, or, with ``reused``, the old directory's intact shard of that
        name (:func:`intact_shard`), copied at :meth:`close`. ``shape``: of its maps, n×C'×H×W."""
        name = self._name()
        if reused is None:
            self.added += 1
        else:
            self.pending.append((reused, name))  # copied at close, unless the old directory is kept whole
        self._record(name, checksum, key, targets, shape)

    def _record(self, name: str, checksum: str, key: str, targets: Tensor, shape: Sequence[int]) -> None:
        self.checksums[name], self.keys[name] = checksum, key
        self.targets.append(torch.as_tensor(targets).cpu().numpy().astype(np.int64))
        n = int(shape[0]) + (self.shape[0] if self.shape else 0)
        self.shape = [n, *[int(d) for d in shape[1:]]]

    def close(self, inputs: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Write the manifest (``inputs``: as for :func:`cache_key`, hashes over the whole split) and swap the
        directory in; returns the manifest. An old directory with exactly these shards is left untouched."""
        targets = np.concatenate(self.targets) if self.targets else np.zeros(0, np.int64)
        inputs = dict(sorted((inputs or {}).items()))
        m = self.meta
        key = cache_key(m["model_hash"], m["method"], m["params"], m["layer"], targets, m["seed"], inputs)
        old = self.old_manifest
        if not self.added and old.get("key") == key and old.get("shard_keys") == self.keys:
            self.abort()
            return old
        for leftover in set(os.listdir(self.tmp)) - set(self.checksums):  # a killed writer's partial file
            (self.tmp / leftover).unlink()
        for name, new in self.pending:
            try:
                os.link(self.out_dir / name, self.tmp / new)
            except OSError:
                shutil.copyfile(self.out_dir / name, self.tmp / new)
        manifest = {
            "key": key,
            **m, "targets_sha256": _targets_sha256(targets), "inputs": inputs, "code_hash": code_hash(),
            "shape": self.shape or [0], "dtype": self.dtype, "shards": list(self.checksums),
            "checksums": self.checksums, "shard_keys": self.keys,
            "provenance": provenance({"method": m["method"], **m["params"]}, m["seed"]),
        }
        write_json(self.tmp / MANIFEST, manifest)
        self._ctx.__exit__(None, None, None)
        return manifest

    def abort(self) -> None:
        """Drop the new directory (the old one stays)."""
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
