"""The attribute stage's loop, streamed: the split is read shard by shard and each entry's maps are written
shard by shard, so peak memory is set by ``shard_size`` and ``batch_size``, not by the split's size.

Per shard: the images (``shard_size`` of them), labels and GT masks are read, the explained targets chosen,
and every entry whose cached shard (same :func:`~salbench.attribution.cache.shard_key`) is intact keeps it;
the others are computed together by :func:`attribute_many` (shared passes across entries, as before).
Growing a split (image ``i`` is the same whatever the split size) therefore computes only the new shards.
Maps of an image do not depend on the other images of its call, so the result equals one unstreamed call.

The work is a list of jobs run by an executor (salbench.parallel): in-process, one job per shard with every
entry; on Ray, one job per shard × pass group (:func:`pass_groups`: entries that share engine passes stay
together, so no pass is computed twice). A job writes its entries' shards into their temporary map
directories and returns what it wrote; the driver records them in shard order and swaps the directories in.
Each job computes exactly what the in-process run computes for those entries, so the files are identical.

Question-conditioned models: ``additional`` names arrays of the reader (e.g. ``("tokens",)`` from a
:class:`salbench.vqa.samples.QuestionReader`) passed to the model as ``additional_inputs`` (targets, maps and
explained classes alike); they join each shard's cache key, so a shard is recomputed when its questions change.
"""
from __future__ import annotations

import hashlib
import io
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..device import resolve_device, set_threads
from ..errors import SalbenchError
from ..models import preprocess
from ..parallel import Executor, InProcess
from ..render.dataset import SplitReader
from .base import Method, attribute_many
from .cache import MapWriter, StreamHash, intact_shard, shard_key, shard_name, write_map_shard
from .model import model_device
from .spec import build
from .wrappers import call_targets, select_targets


@dataclass
class StreamStats:
    """Shards computed and kept per entry."""

    computed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


class ModelHandle:
    """The model for the jobs: itself in this process; pickled as ``torch.save`` bytes (TorchScript:
    ``torch.jit.save``) and loaded on ``device`` (``auto``: this worker's GPU) in another one, once per process."""

    _loaded: dict[tuple[str, str], nn.Module] = {}  # (sha256 of the bytes, device) -> the last model loaded

    def __init__(self, model: nn.Module, device: str) -> None:
        self.model, self.device = model, device

    def __getstate__(self) -> dict[str, Any]:
        buf = io.BytesIO()
        script = isinstance(self.model, torch.jit.ScriptModule)
        (torch.jit.save if script else torch.save)(self.model, buf)
        return {"blob": buf.getvalue(), "script": script, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.device = state["device"]
        key = (hashlib.sha256(state["blob"]).hexdigest(), self.device)
        if key not in self._loaded:
            device, buf = resolve_device(self.device), io.BytesIO(state["blob"])
            model = (torch.jit.load(buf, map_location=device) if state["script"]
                     else torch.load(buf, map_location=device, weights_only=False))
            self._loaded.clear()
            self._loaded[key] = model.eval()
        self.model = self._loaded[key]


@dataclass(frozen=True)
class _EntryDir:
    """Where a job writes an entry's shards (a :class:`MapWriter`'s temporary directory) and what it may keep."""

    out_dir: Path
    tmp: Path
    parts: dict[str, Any]  # MapWriter.parts: the key parts
    old: dict[str, tuple[str, str]]  # MapWriter.old: the old directory's shards by key
    old_shape: list[int]  # C'×H×W of the old directory's maps

    @classmethod
    def of(cls, w: MapWriter) -> _EntryDir:
        return cls(w.out_dir, w.tmp, w.parts, w.old, w.old_shape)


@dataclass(frozen=True)
class _Context:
    """What every job shares."""

    model: ModelHandle
    manifest: Mapping[str, Any]
    reader: SplitReader
    entries: Mapping[str, Mapping[str, Any] | None]
    dirs: Mapping[str, _EntryDir]
    explain: str
    batch_size: int
    dtype: str
    threads: int
    additional: tuple[str, ...]


@dataclass(frozen=True)
class _Job:
    """Shard ``block`` (images ``start:stop``) of the entries in ``groups`` (every entry in one group in-process,
    one pass group on Ray)."""

    block: int
    start: int
    stop: int
    groups: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class _Shard:
    """One entry's shard as a job wrote (or kept) it."""

    entry: str
    block: int
    checksum: str
    key: str
    targets: np.ndarray
    shape: tuple[int, ...]
    reused: str | None  # the old directory's shard name, when kept


def pass_groups(model: nn.Module, built: Mapping[str, tuple[Method, dict[str, Any]]]) -> list[tuple[str, ...]]:
    """Entries partitioned so that entries sharing an engine pass (a sampler and a backward rule) are in one
    group; an entry with its own passes is a group of its own. Groups and members keep ``built``'s order."""
    groups: list[tuple[set[Any], list[str]]] = []  # (the passes, the entries)
    for name, (method, params) in built.items():
        plan = None if method.needs else method.plan(model, **params)
        keys = {(r.sampler, r.rule) for r in plan.requests} if plan is not None else set()
        shared = [g for g in groups if g[0] & keys]
        groups = [g for g in groups if not g[0] & keys]
        groups.append((keys.union(*(g[0] for g in shared)), [n for g in shared for n in g[1]] + [name]))
    order = list(built)
    members = [sorted(entries, key=order.index) for _, entries in groups]
    return [tuple(m) for m in sorted(members, key=lambda m: order.index(m[0]))]


def _run_job(ctx: _Context, job: _Job) -> list[_Shard]:
    """Compute (or keep) the shard ``job.block`` of the job's entries; returns what it wrote."""
    set_threads(ctx.threads)
    model = ctx.model.model
    for name in (n for group in job.groups for n in group):
        if not ctx.dirs[name].tmp.is_dir():
            raise SalbenchError(f"{ctx.dirs[name].tmp} is not visible on {socket.gethostname()}: Ray workers on "
                                "several machines need the repository on a shared filesystem (or run in-process)")
    built = {name: build(name, ctx.entries[name], ctx.manifest["family"]) for group in job.groups for name in group}
    reader = ctx.reader
    raw = reader.read("images", job.start, job.stop)
    images = preprocess(raw, ctx.manifest)
    if model_device(model).type == "cuda":  # page-locked, so the engine's per-batch copies run asynchronously
        images = images.pin_memory()
    labels = torch.from_numpy(reader.read("label", job.start, job.stop)).long()
    has_masks = "gt_mask" in reader.keys
    inputs = {"masks": torch.from_numpy(reader.read("gt_mask", job.start, job.stop))} if has_masks else {}
    extra = {k: torch.from_numpy(reader.read(k, job.start, job.stop)) for k in ctx.additional} or None
    targets = select_targets(model, images, labels, ctx.explain, ctx.batch_size, extra)
    shards: list[_Shard] = []
    for group in job.groups:
        todo: dict[bytes, list[tuple[str, torch.Tensor, str]]] = {}
        calls: dict[bytes, torch.Tensor] = {}
        for name in group:
            method, _ = built[name]
            d = ctx.dirs[name]
            call, explained = call_targets(method, model, images, labels, targets, ctx.batch_size, extra)
            used = {**{k: inputs[k] for k in method.needs if k in inputs}, **(extra or {})}
            key = shard_key(d.parts, job.start, torch.from_numpy(raw), explained, used, ctx.dtype)
            found = intact_shard(d.out_dir, d.old, key)
            if found is not None:
                shape = (len(explained), *d.old_shape)
                shards.append(_Shard(name, job.block, found[1], key, explained.cpu().numpy(), shape, found[0]))
            else:
                calls.setdefault(call.numpy().tobytes(), call)
                todo.setdefault(call.numpy().tobytes(), []).append((name, explained, key))
        for call_key, members in todo.items():
            maps = attribute_many(model, images, calls[call_key], [built[name] for name, _, _ in members],
                                  batch_size=ctx.batch_size, additional_inputs=extra, **inputs)
            for (name, explained, key), m in zip(members, maps):
                checksum = write_map_shard(ctx.dirs[name].tmp / shard_name(job.block), m, explained, ctx.dtype)
                shards.append(_Shard(name, job.block, checksum, key, explained.cpu().numpy(), tuple(m.shape), None))
            del maps
    return shards


def attribute_split(model: nn.Module, manifest: Mapping[str, Any], reader: SplitReader,
                    entries: Mapping[str, Mapping[str, Any] | None], out: Path, *, model_hash: str, seed: int,
                    explain: str = "predicted", batch_size: int = 32, shard_size: int = 256,
                    dtype: str = "float32", additional: tuple[str, ...] = (), executor: Executor | None = None,
                    device: str | None = None, threads: int = 0) -> StreamStats:
    """Write ``out/<entry>/`` for every entry of ``entries`` (attribute.methods) that applies to the model's
    family, shard by shard (``shard_size`` images; float32 or float16 storage); returns what was computed.

    ``executor`` (default in-process) runs the jobs; workers in other processes load the model on ``device``
    (default: the model's) with ``threads`` torch threads (0: leave as is)."""
    executor = executor or InProcess()
    built: dict[str, tuple[Method, dict[str, Any]]] = {}
    writers: dict[str, MapWriter] = {}
    for name, entry in entries.items():
        b = build(name, entry, manifest["family"])
        if b is not None:
            built[name] = b
    try:
        for name, (method, params) in built.items():
            writers[name] = MapWriter(out / name, model_hash=model_hash, method=name, params=entries[name] or {},
                                      layer=",".join(method.layers(model, **params)) or None, seed=seed, dtype=dtype)
        groups = pass_groups(model, built) if executor.parallel else [tuple(built)]
        jobs = [_Job(i, start, stop, (group,) if executor.parallel else tuple(groups))
                for i, (start, stop) in enumerate(reader.blocks(shard_size)) for group in groups]
        handle = ModelHandle(model, device or str(model_device(model)))
        ctx = _Context(handle, dict(manifest), reader, dict(entries),
                       {n: _EntryDir.of(w) for n, w in writers.items()},
                       explain, batch_size, dtype, threads, tuple(additional))
        shards = sorted((s for done in executor.map(_run_job, ctx, jobs) for s in done), key=lambda s: s.block)
        stats = StreamStats({n: 0 for n in built}, {n: 0 for n in built})
        for s in shards:
            writers[s.entry].adopt(s.checksum, s.key, np.array(s.targets), s.shape, reused=s.reused)  # writable
            (stats.kept if s.reused else stats.computed)[s.entry] += 1
        needs_masks = any(m.needs for m, _ in built.values())
        hashes = _input_hashes(reader, shard_size, {**({"gt_mask": "masks"} if needs_masks else {}),
                                                    **{k: k for k in additional}})
        extra = {k: hashes[k] for k in additional if k in hashes}
        for name, (method, _) in built.items():
            writers.pop(name).close({**{k: hashes[k] for k in method.needs if k in hashes}, **extra})
    finally:
        for writer in writers.values():
            writer.abort()
    return stats


def _input_hashes(reader: SplitReader, shard_size: int, keys: Mapping[str, str]) -> dict[str, str]:
    """:func:`~salbench.attribution.cache.tensor_sha256` of the split's per-sample arrays (reader key -> input
    name, e.g. ``gt_mask`` -> ``masks``, ``tokens`` -> ``tokens``), read block by block; absent keys are skipped."""
    hashes: dict[str, StreamHash] = {}
    for start, stop in reader.blocks(shard_size):
        for key, name in keys.items():
            if key in reader.keys:
                block = reader.read(key, start, stop)
                hashes.setdefault(name, StreamHash(str(block.dtype), (len(reader), *block.shape[1:]))).update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}
