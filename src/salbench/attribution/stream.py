"""The attribute stage's loop, streamed: the split is read shard by shard and each entry's maps are written
shard by shard, so peak memory is set by ``shard_size`` and ``batch_size``, not by the split's size.

Per shard: the images (``shard_size`` of them), labels and GT masks are read, the explained targets chosen,
and every entry whose cached shard (same :func:`~salbench.attribution.cache.shard_key`) is intact keeps it;
the others are computed together by :func:`attribute_many` (shared passes across entries, as before).
Growing a split (image ``i`` is the same whatever the split size) therefore computes only the new shards.
Maps of an image do not depend on the other images of its call, so the result equals one unstreamed call.

Question-conditioned models: ``additional`` names arrays of the reader (e.g. ``("tokens",)`` from a
:class:`salbench.vqa.samples.QuestionReader`) passed to the model as ``additional_inputs`` (targets, maps and
explained classes alike); they join each shard's cache key, so a shard is recomputed when its questions change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..models import preprocess
from ..render.dataset import SplitReader
from .base import Method, attribute_many
from .cache import MapWriter, StreamHash, shard_key
from .model import model_device
from .spec import build
from .wrappers import call_targets, select_targets


@dataclass
class StreamStats:
    """Shards computed and kept per entry."""

    computed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


def attribute_split(model: nn.Module, manifest: Mapping[str, Any], reader: SplitReader,
                    entries: Mapping[str, Mapping[str, Any] | None], out: Path, *, model_hash: str, seed: int,
                    explain: str = "predicted", batch_size: int = 32, shard_size: int = 256,
                    dtype: str = "float32", additional: tuple[str, ...] = ()) -> StreamStats:
    """Write ``out/<entry>/`` for every entry of ``entries`` (attribute.methods) that applies to the model's
    family, shard by shard (``shard_size`` images; float32 or float16 storage); returns what was computed."""
    built: dict[str, tuple[Method, dict[str, Any], str | None]] = {}
    for name, entry in entries.items():
        b = build(name, entry, manifest["family"])
        if b is not None:
            built[name] = (b[0], b[1], ",".join(b[0].layers(model, **b[1])) or None)
    has_masks = "gt_mask" in reader.keys
    n, stats = len(reader), StreamStats({n: 0 for n in built}, {n: 0 for n in built})
    writers: dict[str, MapWriter] = {}
    mask_hash = None
    extra_hashes: dict[str, StreamHash] = {}
    pin = model_device(model).type == "cuda"
    try:
        for name, (method, _, layer) in built.items():
            writers[name] = MapWriter(out / name, model_hash=model_hash, method=name, params=entries[name] or {},
                                      layer=layer, seed=seed, dtype=dtype)
        for start, stop in reader.blocks(shard_size):
            raw = reader.read("images", start, stop)
            images = preprocess(raw, manifest)
            if pin:  # page-locked, so the engine's per-batch copies to the GPU run asynchronously
                images = images.pin_memory()
            labels = torch.from_numpy(reader.read("label", start, stop)).long()
            inputs = {"masks": torch.from_numpy(reader.read("gt_mask", start, stop))} if has_masks else {}
            if has_masks:
                mask_hash = mask_hash or StreamHash("bool", (n, *inputs["masks"].shape[1:]))
                mask_hash.update(inputs["masks"])
            extra = {k: torch.from_numpy(reader.read(k, start, stop)) for k in additional} or None
            for k, v in (extra or {}).items():
                extra_hashes.setdefault(k, StreamHash(str(v.numpy().dtype), (n, *v.shape[1:]))).update(v)
            targets = select_targets(model, images, labels, explain, batch_size, extra)
            todo: dict[bytes, list[tuple[str, torch.Tensor, str]]] = {}
            calls: dict[bytes, torch.Tensor] = {}
            for name, (method, _, _) in built.items():
                call, explained = call_targets(method, model, images, labels, targets, batch_size, extra)
                used = {**{k: inputs[k] for k in method.needs if k in inputs}, **(extra or {})}
                key = shard_key(writers[name].parts, start, torch.from_numpy(raw), explained, used, dtype)
                if writers[name].reuse(key, explained):
                    stats.kept[name] += 1
                else:
                    calls.setdefault(call.numpy().tobytes(), call)
                    todo.setdefault(call.numpy().tobytes(), []).append((name, explained, key))
            for call_key, group in todo.items():
                maps = attribute_many(model, images, calls[call_key], [built[name][:2] for name, _, _ in group],
                                      batch_size=batch_size, additional_inputs=extra, **inputs)
                for (name, explained, key), m in zip(group, maps):
                    writers[name].add(key, m, explained)
                    stats.computed[name] += 1
                del maps
        hashes = {"masks": mask_hash.hexdigest()} if mask_hash is not None else {}
        for name, (method, _, _) in built.items():
            writers.pop(name).close({**{k: hashes[k] for k in method.needs if k in hashes},
                                     **{k: h.hexdigest() for k, h in extra_hashes.items()}})
    finally:
        for writer in writers.values():
            writer.abort()
    return stats

