"""Artifact I/O: atomic writes, safetensors shards, JSON manifests with provenance."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import SalbenchError

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs should have normal permissions
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling file that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically (byte-identical for equal input)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
        f.write("\n")


def read_json(path: str | Path, stage: str | None = None) -> Any:
    """Read JSON; a missing file names the DVC stage that produces it."""
    return json.loads(require(path, stage).read_text())


class MissingArtifactError(SalbenchError, FileNotFoundError):
    """An input artifact is missing; the message names the stage that makes it."""


def require(path: str | Path, stage: str | None = None) -> Path:
    """Return ``path`` if it exists, else raise naming the stage to run."""
    path = Path(path)
    if not path.exists():
        fix = f" Run `dvc repro {stage}` (or `dvc pull`) first." if stage else ""
        raise MissingArtifactError(f"missing artifact {path}.{fix}")
    return path


def save_shard(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Save a dict of arrays as one safetensors shard, atomically."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    with atomic_file(path, "wb") as f:
        f.write(data)


def load_shard(path: str | Path, stage: str | None = None) -> dict[str, np.ndarray]:
    """Load a safetensors shard as numpy arrays."""
    from safetensors.numpy import load_file

    return load_file(str(require(path, stage)))


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable short hash of a params mapping."""
    blob = json.dumps(params, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(params: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """Provenance block for a manifest: params, their hash, seed and library versions.

    Deliberately free of timestamps and host names so reruns give identical manifests.
    """
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for pkg in ("salbench", "numpy", "torch", "torchvision", "timm", "captum", "pyrender", "trimesh"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {"params": dict(params), "params_hash": params_hash(params), "seed": seed, "versions": versions}
