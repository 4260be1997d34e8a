"""DVC stage `attribute@<task>-<model>`: saliency maps of every method in params.yaml `attribute.methods`.

Reads the checkpoint data/models/<task>/<model>/<attribute.checkpoint> and the split
data/render/<task>/<attribute.split>; writes data/maps/<task>/<model>/<method>/ (safetensors shards +
manifest, see salbench.attribution.cache). A method whose cache key (checkpoint hash, method, params,
layers, targets, the per-sample inputs it reads, seed, attribution code) is unchanged keeps its
maps; all others are computed together by salbench.attribution.attribute_many, which serves every
single-pass method from shared passes. Methods that declare ``needs=("masks",)`` (the GT controls) get
the split's ``gt_mask``.
Entries: salbench.attribution.spec (method, params, layers/combine, meta_lr, explain, families).
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("attribute")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import shutil
import time
from pathlib import Path

import torch

from salbench.attribution import attribute_many, build, call_targets, select_targets
from salbench.attribution.cache import cache_key, is_fresh, method_inputs, save_maps
from salbench.device import resolve_device
from salbench.errors import cli
from salbench.io import file_hash
from salbench.models import load_checkpoint, preprocess
from salbench.models.external import check_hooks
from salbench.params import check_keys, load_params, section
from salbench.render import load_split

STAGE_KEYS = ("tasks", "seed", "device", "batch_size", "split", "checkpoint", "explain", "methods")


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True, help="task name (data/render/<task>)")
    ap.add_argument("--model", required=True, help="model name (data/models/<task>/<model>)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=None, help="default: data/render/<task>")
    ap.add_argument("--models", default="data/models", help="root of the trained models")
    ap.add_argument("--out", default=None, help="default: data/maps/<task>/<model>")
    args = ap.parse_args()

    p = section(load_params(args.params), "attribute")
    check_keys(p, STAGE_KEYS, "attribute")
    seed, batch_size = int(p.get("seed", 0)), int(p.get("batch_size", 32))
    device = resolve_device(str(p.get("device", "cpu")))
    torch.manual_seed(seed)

    checkpoint = Path(args.models) / args.task / args.model / str(p.get("checkpoint", "final"))
    model, manifest = load_checkpoint(checkpoint, device, stage=f"train@{args.task}-{args.model}")
    model_hash = file_hash(checkpoint / "model.safetensors")
    split = load_split(Path(args.data or f"data/render/{args.task}"), str(p.get("split", "test")))
    images = preprocess(split["images"], manifest)
    labels = torch.from_numpy(split["label"]).long()
    targets = select_targets(model, images, labels, str(p.get("explain", "predicted")), batch_size)
    inputs = {"masks": torch.from_numpy(split["gt_mask"]).bool()} if "gt_mask" in split else {}

    out = Path(args.out or f"data/maps/{args.task}/{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    todo, kept = {}, []
    for name, entry in (p.get("methods") or {}).items():
        built = build(name, entry, manifest["family"])
        if built is None:
            continue
        method, params = built
        layer = ",".join(method.layers(model, **params)) or None
        call, explained = call_targets(method, model, images, labels, targets, batch_size)  # per-entry `explain`
        used = method_inputs(method.needs, inputs)
        key = cache_key(model_hash, name, entry or {}, layer, explained, seed, used)
        if is_fresh(out / name, key):
            kept.append(name)
        else:
            todo[name] = (method, params, layer, call, explained, used)

    check_hooks(model, {name: (p.get("methods") or {})[name] for name in todo})  # TorchScript: no module hooks
    t0 = time.perf_counter()
    # one shared-pass batch per distinct call targets (entries with their own `explain` get the true labels)
    groups: dict[bytes, list[str]] = {}
    for name, (_, _, _, call, _, _) in todo.items():
        groups.setdefault(call.numpy().tobytes(), []).append(name)
    for names in groups.values():
        call = todo[names[0]][3]
        maps = attribute_many(model, images, call, [todo[n][:2] for n in names], batch_size=batch_size, **inputs)
        for name, m in zip(names, maps):
            _, _, layer, _, explained, used = todo[name]
            save_maps(out / name, m, explained, model_hash=model_hash, method=name,
                      params=(p.get("methods") or {})[name] or {}, layer=layer, seed=seed, inputs=used)
    for stale in (d for d in out.iterdir() if d.is_dir() and d.name not in todo and d.name not in kept):
        shutil.rmtree(stale)
    print(f"[attribute {args.task}/{args.model}] computed {sorted(todo)} in {time.perf_counter() - t0:.1f} s; "
          f"kept {sorted(kept)}")


if __name__ == "__main__":
    main()
