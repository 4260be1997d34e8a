"""DVC stage `attribute@<task>-<model>`: saliency maps of every method in params.yaml `attribute.methods`.

Reads the checkpoint data/models/<task>/<model>/<attribute.checkpoint> and the split
data/render/<task>/<attribute.split>; writes data/maps/<task>/<model>/<method>/ (safetensors shards +
manifest, see salbench.attribution.cache). The split is read and the maps written shard by shard
(`attribute.shard_size` images; salbench.attribution.stream), so memory does not grow with the split. A
shard whose key (checkpoint hash, method, params, layers, its images, targets and the per-sample inputs the
method reads, seed, storage dtype, attribution code) is unchanged is kept; all others are computed together
by salbench.attribution.attribute_many, which serves every single-pass method from shared passes. Methods
that declare ``needs=("masks",)`` (the GT controls) get the split's ``gt_mask``.
VQA tasks (stage attribute_vqa@<task>-<model>, question-conditioned models of train.vqa_models): the samples
are the split's first `attribute.vqa_questions` questions (salbench.vqa.samples), each explained w.r.t. its
scene image with its question tokens held fixed; the GT controls get the task's first GT kind.
Entries: salbench.attribution.spec (method, params, layers/combine, meta_lr, explain, families).
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("attribute")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from salbench.attribution.stream import attribute_split
from salbench.device import resolve_device, set_threads
from salbench.errors import cli
from salbench.io import file_hash
from salbench.models import load_checkpoint
from salbench.attribution.model import inspect_model
from salbench.attribution.spec import applicable
from salbench.models.external import check_hooks
from salbench.params import check_keys, load_params, section
from salbench.render.dataset import SplitReader
from salbench.vqa.samples import QuestionReader, is_vqa_task

STAGE_KEYS = ("tasks", "seed", "device", "batch_size", "split", "checkpoint", "explain", "threads", "shard_size",
              "map_dtype", "methods", "vqa_questions")


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
    set_threads(p.get("threads", 1))
    seed, batch_size = int(p.get("seed", 0)), int(p.get("batch_size", 32))
    device = resolve_device(str(p.get("device", "cpu")))
    torch.manual_seed(seed)

    checkpoint = Path(args.models) / args.task / args.model / str(p.get("checkpoint", "final"))
    model, manifest = load_checkpoint(checkpoint, device, stage=f"train@{args.task}-{args.model}")
    methods = p.get("methods") or {}
    data_dir, split = Path(args.data or f"data/render/{args.task}"), str(p.get("split", "test"))
    additional: tuple[str, ...] = ()
    if is_vqa_task(data_dir, split):
        reader = QuestionReader(data_dir, split, p.get("vqa_questions", 128))
        additional = ("tokens",)
        manifest = {**manifest, "family": inspect_model(model).family}  # FiLM and RN are CNNs to the methods
        kept, skipped = applicable(methods, manifest["family"], model)
        if skipped:
            print(f"[attribute {args.task}/{args.model}] note: {skipped} name layers {type(model).__name__} does "
                  "not have (timm ResNet/ViT layers): left out for this question model", file=sys.stderr)
        methods = {name: methods[name] for name in kept}
    else:
        reader = SplitReader(data_dir, split)
    out = Path(args.out or f"data/maps/{args.task}/{args.model}")
    out.mkdir(parents=True, exist_ok=True)

    check_hooks(model, methods)  # TorchScript: no module hooks
    t0 = time.perf_counter()
    stats = attribute_split(model, manifest, reader, methods, out, model_hash=file_hash(checkpoint / "model.safetensors"),
                            seed=seed, explain=str(p.get("explain", "predicted")), batch_size=batch_size,
                            shard_size=int(p.get("shard_size", 256)), dtype=str(p.get("map_dtype", "float32")),
                            additional=additional)
    for stale in (d for d in out.iterdir() if d.is_dir() and d.name not in stats.computed):
        shutil.rmtree(stale)
    computed = sorted(name for name, n in stats.computed.items() if n)
    print(f"[attribute {args.task}/{args.model}] computed {computed} ({sum(stats.computed.values())} entry shards of <= "
          f"{p.get('shard_size', 256)} images) in {time.perf_counter() - t0:.1f} s; kept "
          f"{sorted(name for name in stats.kept if name not in computed)} ({sum(stats.kept.values())} entry shards)")


if __name__ == "__main__":
    main()
