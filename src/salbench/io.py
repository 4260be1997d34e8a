"""Artifact I/O: atomic writes, checksummed safetensors shards, JSON manifests with provenance."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import SalbenchError

CHECKSUM_KEY = "salbench.sha256"  # in each shard's header metadata: sha256 of its tensor table and data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_pattern(name: str) -> re.Pattern[str]:
    # tempfile's 8-character names; siblings written before pids were recorded have none
    return re.compile(rf"\.{re.escape(name)}\.(tmp|old)-(?:(\d+)-)?[a-z0-9_]{{8}}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_stale(path: Path) -> None:
    """Remove the ``.<name>.tmp-<pid>-*`` and ``.<name>.old-<pid>-*`` siblings of ``path`` that killed
    writers left (a live writer's are kept); an ``.old`` one from a swap cut short is moved back to ``path``."""
    pattern = _stale_pattern(path.name)
    for sibling in sorted(path.parent.iterdir()):
        m = pattern.fullmatch(sibling.name)
        if m is None or (m.group(2) is not None and _alive(int(m.group(2)))):
            continue
        if m.group(1) == "old" and not os.path.lexists(path):
            os.replace(sibling, path)
        else:
            _remove(sibling)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if os.name == "posix" else None
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, path: Path) -> None:
    """Move the directory ``tmp`` to ``path`` so that ``path`` holds the old or the new output at every
    moment (an exchanged old output is left at ``tmp`` for the caller to remove)."""
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    if path.is_dir() and not path.is_symlink() and _exchange(tmp, path):
        return
    # No atomic exchange here: old -> .old sibling, new -> path; a crash in between is undone by _clean_stale.
    old = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds.

    The swap never leaves ``path`` missing, and leftovers of earlier writers of ``path`` that were killed
    (``.<name>.tmp-<pid>-*``) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs should have normal permissions
    try:
        yield tmp
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling file that replaces ``path`` only if the block succeeds (stale
    ``.<name>.tmp-<pid>-*`` siblings of killed writers are removed first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
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
    """Read JSON; a missing file names the DVC stage that produces it, an unreadable one the stage to rerun."""
    path = require(path, stage)
    try:
        return json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise corrupt(path, f"not valid JSON ({e})", stage) from None


class MissingArtifactError(SalbenchError, FileNotFoundError):
    """An input artifact is missing; the message names the stage that makes it."""


class StaleArtifactError(SalbenchError, ValueError):
    """An input artifact was made from other inputs than the current ones; the message names the stage to run."""


class CorruptArtifactError(SalbenchError, ValueError):
    """An input artifact is truncated or its bytes changed; the message names the file and how to rewrite it."""


def corrupt(path: str | Path, reason: str, stage: str | None = None) -> CorruptArtifactError:
    """The error for a damaged ``path``, naming ``stage`` (the DVC stage that writes it) to rerun."""
    fix = f"run `dvc repro -f {stage}` to rewrite it" if stage else "rewrite it with the stage that made it"
    return CorruptArtifactError(f"corrupt artifact {path}: {reason}; {fix} (or `dvc checkout -f {path}` if the "
                                "DVC cache holds a good copy)")


def require(path: str | Path, stage: str | None = None) -> Path:
    """Return ``path`` if it exists, else raise naming the stage to run."""
    path = Path(path)
    if not path.exists():
        fix = f" Run `dvc repro {stage}` (or `dvc pull`) first." if stage else ""
        raise MissingArtifactError(f"missing artifact {path}.{fix}")
    return path


def _table_hash(table: Mapping[str, Any]) -> Any:
    """A sha256 object fed with a shard's tensor table (names, dtypes, shapes, offsets); its data follows."""
    info = {k: v for k, v in table.items() if k != "__metadata__"}
    return hashlib.sha256(json.dumps(info, sort_keys=True, separators=(",", ":")).encode())


def _table_digest(table: Mapping[str, Any], data: bytes | memoryview) -> str:
    """sha256 of a shard's tensor table and its data bytes."""
    h = _table_hash(table)
    h.update(data)
    return h.hexdigest()


def write_safetensors(path: str | Path, blob: bytes) -> str:
    """Write a serialised safetensors file atomically, with its checksum added to the header metadata;
    returns the checksum."""
    n = int.from_bytes(blob[:8], "little")
    table = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    table["__metadata__"] = {**table.get("__metadata__", {}), CHECKSUM_KEY: _table_digest(table, data)}
    header = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors keeps the data 8-byte aligned
    with atomic_file(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        f.write(data)
    return table["__metadata__"][CHECKSUM_KEY]


def _checked_header(path: Path, head: bytes, size: int, stage: str | None) -> tuple[int, dict[str, Any], str]:
    """(header length, tensor table, recorded checksum) of a safetensors file of ``size`` bytes starting
    with ``head``; a header that does not parse, a size that does not match it or a missing checksum raise."""
    try:
        if len(head) < 8:
            raise ValueError(f"only {size} bytes, shorter than a safetensors header")
        n = int.from_bytes(head[:8], "little")
        if 8 + n > size:
            raise ValueError(f"truncated: the header claims {n} bytes but the file has {size}")
        table = json.loads(head[8:8 + n])
        end = max((int(v["data_offsets"][1]) for k, v in table.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise corrupt(path, f"unreadable safetensors header ({e})", stage) from None
    if 8 + n + end != size:
        raise corrupt(path, f"{size} bytes but its header describes {8 + n + end} (truncated?)", stage)
    stored = (table.get("__metadata__") or {}).get(CHECKSUM_KEY)
    if not isinstance(stored, str):
        raise corrupt(path, f"no {CHECKSUM_KEY} checksum in its header (written by an older salbench or "
                      "another tool)", stage)
    return n, table, stored


def _read_header(path: Path, f: Any, size: int, stage: str | None) -> tuple[int, dict[str, Any], str]:
    """:func:`_checked_header` of the open file ``f`` (its first bytes: the length and the JSON header)."""
    head = f.read(8)
    if len(head) == 8:
        head += f.read(min(int.from_bytes(head, "little"), size))
    return _checked_header(path, head, size, stage)


def shard_shapes(path: str | Path, stage: str | None = None) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a shard, from its checked header only (no data read); a missing or damaged
    header raises naming ``stage``."""
    path = require(path, stage)
    with open(path, "rb") as f:
        _, table, _ = _read_header(path, f, path.stat().st_size, stage)
    return {k: tuple(int(d) for d in v["shape"]) for k, v in table.items() if k != "__metadata__"}


def check_shard(path: str | Path, stage: str | None = None, checksum: str | None = None) -> str:
    """Verify a shard without keeping it in memory: it exists, its header parses and matches the file size,
    its bytes match the checksum in its header (one streaming hash pass) and that one equals ``checksum``
    if given (a manifest's record). Returns the checksum; a damaged shard raises naming ``stage``."""
    path = require(path, stage)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n, table, stored = _read_header(path, f, size, stage)
        if checksum is not None and stored != checksum:
            raise corrupt(path, "its checksum differs from the one the manifest recorded", stage)
        h = _table_hash(table)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != stored:
        raise corrupt(path, "its bytes do not match the sha256 in its header", stage)
    return stored


def read_safetensors(path: str | Path, stage: str | None = None, checksum: str | None = None) -> bytes:
    """The bytes of a safetensors file, verified against the checksum in its header (one read, one hash
    pass) and, if given, against ``checksum`` (a manifest's record); a missing, truncated or altered file
    raises naming ``stage``."""
    path = require(path, stage)
    blob = path.read_bytes()
    n, table, stored = _checked_header(path, blob, len(blob), stage)
    if checksum is not None and stored != checksum:
        raise corrupt(path, "its checksum differs from the one the manifest recorded", stage)
    if _table_digest(table, memoryview(blob)[8 + n:]) != stored:
        raise corrupt(path, "its bytes do not match the sha256 in its header", stage)
    return blob


def save_shard(path: str | Path, tensors: Mapping[str, np.ndarray]) -> str:
    """Save a dict of arrays as one checksummed safetensors shard, atomically; returns the checksum."""
    from safetensors.numpy import save

    return write_safetensors(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))


def load_shard(path: str | Path, stage: str | None = None, checksum: str | None = None) -> dict[str, np.ndarray]:
    """Load a shard written by :func:`save_shard` as numpy arrays, verified as :func:`read_safetensors`
    does; a missing or corrupt shard raises naming ``stage``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    blob = read_safetensors(path, stage, checksum)
    try:
        return load(blob)
    except SafetensorError as e:
        raise corrupt(path, str(e), stage) from None


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
