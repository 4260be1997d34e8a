"""Peak memory (RSS) of the attribute and evaluate stages as the split grows: both stream shards, so it should not.

For each split size the benchmark fabricates a test split (random images with one bright square as the GT
mask, balanced labels; no rendering) and untrained models of the default size (params.yaml's first
``train.models`` entry: final, random_labels, random_init, checkpoints/epoch_1), writes a params file with
params.yaml's ``attribute`` section (the default method list; ``--methods`` to subset it, ``--batch-size`` /
``--shard-size`` / ``--dtype`` to override) and ``evaluate`` section (the default metrics), and runs
``stages/attribute.py`` then ``stages/evaluate.py``, each in a fresh process, reporting that process's peak
RSS (``VmHWM``: its own high-water mark), wall time and CPU time (user + system). The maps' values do not
matter here, only what the stages hold. Results are merged into ``--json`` (one record per stage, size and
setting), so sizes can be run by separate invocations; ``--work DIR`` keeps each size's split, models and maps
in ``DIR/<size>`` (a later ``--stages evaluate`` run reuses them). ``--fake-maps`` gives evaluate
random maps of the right shapes and keys instead of the attribute stage's (evaluate's memory does not
depend on the maps' values, and it saves the attribute stage's time: 13 min at 10,000 images with the
default list here).

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/memory.py --sizes 1000 10000 [--size 128 --threads 1]``
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from salbench.io import save_shard
from salbench.models import build_model, save_checkpoint
from salbench.params import load_params

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 8
STAGES = ("attribute", "evaluate")

# Runs the stage in this process, then prints its peak RSS (KiB), wall and CPU time as JSON. The peak is VmHWM,
# the high-water mark of this process's own memory: ru_maxrss would also count the benchmark process's RSS
# at the moment it spawned this one (Linux keeps it across fork and exec), e.g. the fabricated split's arrays.
RUNNER = """
import json, resource, runpy, sys, time
t0 = time.perf_counter()
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    r = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"peak_kib": peak, "seconds": time.perf_counter() - t0, "cpu_seconds": r.ru_utime + r.ru_stime}))
"""


def fabricate(root: Path, n: int, size: int, spec: dict, seed: int = 0) -> None:
    """render/test.safetensors with ``n`` images and models/t/m/{final, random_labels, random_init,
    checkpoints/epoch_1} (untrained, seeds ``seed`` to ``seed + 3``)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    side = size // 4
    for i, (r, c) in enumerate(rng.integers(0, size - side, (n, 2))):
        masks[i, r:r + side, c:c + side] = True
    images[masks] = 230
    save_shard(root / "render" / "test.safetensors",
               {"images": images, "gt_mask": masks, "label": np.arange(n, dtype=np.int64) % CLASSES})
    for i, sub in enumerate(("final", "random_labels", "random_init", "checkpoints/epoch_1")):
        torch.manual_seed(seed + i)
        save_checkpoint(root / "models" / "t" / "m" / sub, build_model(spec, CLASSES, size).eval(),
                        {"task": "t", "classes": [str(c) for c in range(CLASSES)], "accuracy": {},
                         "params_hash": "x", "seed": seed + i, "versions": {}})


def fake_maps(root: Path, attribute: dict, seed: int = 0) -> None:
    """maps/<entry>/ for every entry of ``attribute.methods`` without running the methods: random maps of each
    method's shape (found on two images), keyed as the attribute stage keys them, so that evaluate accepts
    them. For evaluate's memory alone (the maps' values do not change what it holds)."""
    from salbench.attribution import attribute_many, build, call_targets
    from salbench.attribution.cache import MapWriter
    from salbench.evaluate import SplitData
    from salbench.io import file_hash
    from salbench.models import load_checkpoint
    from salbench.render.dataset import SplitReader

    model, _ = load_checkpoint(root / "models" / "t" / "m" / "final", torch.device("cpu"), "fabricated")
    data = SplitData(SplitReader(root / "render", "test"), model, torch.device("cpu"), 64,
                     int(attribute.get("shard_size", 256)))
    built = {n: b for n, e in attribute["methods"].items() if (b := build(n, e, model.family)) is not None}
    head = data.first(2)
    shapes = [m.shape[1:] for m in attribute_many(model, head.images, head.predictions, list(built.values()),
                                                   masks=head.masks)]
    generator = torch.Generator().manual_seed(seed)
    for (name, (method, params)), shape in zip(built.items(), shapes):
        writer = MapWriter(root / "maps" / name, model_hash=file_hash(root / "models/t/m/final/model.safetensors"),
                           method=name, params=attribute["methods"][name] or {},
                           layer=",".join(method.layers(model, **params)) or None, seed=int(attribute.get("seed", 0)),
                           dtype=attribute.get("map_dtype", "float32"))
        maps = torch.rand(data.block, *shape, generator=generator)  # one block's worth, reused for every block
        for start, block in data.blocks():
            explained = call_targets(method, model, block.images, block.labels, block.predictions)[1]
            writer.add(f"fake-{start}", maps[:len(block)], explained)
        writer.close({k: v for k, v in data.input_hashes().items() if k in method.needs})


def run_stage(root: Path, stage: str) -> dict:
    cmd = [sys.executable, "-c", RUNNER, str(ROOT / "stages" / f"{stage}.py"), "--task", "t", "--model", "m",
           "--params", str(root / "params.yaml"), "--data", str(root / "render"), "--models", str(root / "models"),
           "--maps" if stage == "evaluate" else "--out", str(root / "maps")]
    if stage == "evaluate":
        cmd += ["--results", str(root / "results.csv"), "--metrics", str(root / "metrics.json"),
                "--out", str(root / "evaluate")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    return {**json.loads(lines[-1]), "log": lines[-2] if len(lines) > 1 else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="test split sizes (images)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--model", default=None, help="a train.models name (default: the first)")
    ap.add_argument("--methods", nargs="*", default=None, help="attribute.methods entries (default: all)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default=None, help="attribute.map_dtype")
    ap.add_argument("--work", default=None, help="keep each size's inputs and maps in WORK/<size> (default: a "
                                                  "temporary directory, removed)")
    ap.add_argument("--fake-maps", action="store_true",
                    help="evaluate random maps keyed as the attribute stage keys them (no attribute run needed)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "memory.json"), help="results file (merged)")
    args = ap.parse_args()

    params = load_params(args.params)
    models = params["train"]["models"]
    spec = models[args.model or next(iter(models))]["model"]
    attribute = {k: v for k, v in params["attribute"].items() if k != "tasks"}
    attribute.update(device="cpu", threads=args.threads)
    if args.methods is not None:
        attribute["methods"] = {k: v for k, v in attribute["methods"].items() if k in args.methods}
    for key, value in (("batch_size", args.batch_size), ("shard_size", args.shard_size), ("map_dtype", args.dtype)):
        if value is not None:
            attribute[key] = value
    evaluate = {k: v for k, v in params["evaluate"].items() if k != "tasks"}
    evaluate.update(device="cpu", threads=args.threads)
    if args.methods is not None:  # only the entries there are
        evaluate = json.loads(json.dumps(evaluate))
        keep = set(attribute["methods"])
        for section in [*evaluate["metrics"].values(), evaluate.get("meta_saliency") or {}]:
            if section.get("methods"):
                section["methods"] = [m for m in section["methods"] if m in keep]
        study = (evaluate.get("layer_study") or {}).get("entries") or {}
        for group in list(study):
            study[group] = [m for m in study[group] if m in keep]
            if group not in keep or not study[group]:
                del study[group]
    setting = (f"{len(attribute['methods'])} entries, model {spec['arch']}, {args.size} px, batch_size "
               f"{attribute.get('batch_size')}, shard_size {attribute.get('shard_size', 256)}, map_dtype "
               f"{attribute.get('map_dtype', 'float32')}, threads {args.threads}")
    print(setting, flush=True)
    out = Path(args.json)
    records = json.loads(out.read_text()) if out.exists() else []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(args.work) / str(n) if args.work else Path(tmp)
            if not (root / "render" / "test.safetensors").exists():
                fabricate(root, n, args.size, spec)
            (root / "params.yaml").write_text(yaml.safe_dump({"attribute": attribute, "evaluate": evaluate}))
            if args.fake_maps and not (root / "maps").exists():
                fake_maps(root, attribute)
            for stage in args.stages:
                r = run_stage(root, stage)
                gib = r["peak_kib"] / 2 ** 20
                print(f"{stage:>9} {n:>6} images: peak RSS {gib:.2f} GiB, wall {r['seconds']:.0f} s, CPU "
                      f"{r['cpu_seconds']:.0f} s  ({r['log']})", flush=True)
                records = [x for x in records if (x["stage"], x["images"], x["setting"]) != (stage, n, setting)]
                records.append({"stage": stage, "images": n, "peak_rss_gib": round(gib, 3),
                                "wall_s": round(r["seconds"], 1), "cpu_s": round(r["cpu_seconds"], 1),
                                "setting": setting, "entries": list(attribute["methods"]),
                                **({"fake_maps": args.fake_maps} if stage == "evaluate" else {}),
                                "date": datetime.date.today().isoformat()})
                out.write_text(json.dumps(sorted(records, key=lambda x: (x["stage"], x["setting"], x["images"])),
                                          indent=1) + "\n")
    for stage in STAGES:
        peaks = [x["peak_rss_gib"] for x in records if (x["stage"], x["setting"]) == (stage, setting)]
        if len(peaks) > 1:
            print(f"{stage}: largest / smallest peak {max(peaks) / min(peaks):.3f} (limit 1.20)")


if __name__ == "__main__":
    main()
