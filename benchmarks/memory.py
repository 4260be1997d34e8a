"""Peak memory (RSS) of the attribute stage as the split grows: it streams shards, so the peak should not.

For each split size the benchmark fabricates a test split (random images with one bright square as the GT
mask, balanced labels; no rendering) and an untrained model of the default size (params.yaml's first
``train.models`` entry), writes a params file with params.yaml's ``attribute`` section (the default method
list; ``--methods`` to subset it, ``--batch-size`` / ``--shard-size`` to override) and runs
``stages/attribute.py`` in a fresh process, reporting that process's peak RSS (``ru_maxrss``) and wall time.
The maps' values do not matter here, only what the stage holds.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/memory.py --sizes 1000 10000 [--size 128 --threads 1]``
"""
from __future__ import annotations

import argparse
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

# Runs the stage in this process, then prints its peak RSS (KiB on Linux) and wall time as JSON.
RUNNER = """
import json, resource, runpy, sys, time
t0 = time.perf_counter()
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "seconds": time.perf_counter() - t0}))
"""


def fabricate(root: Path, n: int, size: int, spec: dict, seed: int = 0) -> None:
    """render/test.safetensors with ``n`` images and models/t/m/final (untrained)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    side = size // 4
    for i, (r, c) in enumerate(rng.integers(0, size - side, (n, 2))):
        masks[i, r:r + side, c:c + side] = True
    images[masks] = 230
    save_shard(root / "render" / "test.safetensors",
               {"images": images, "gt_mask": masks, "label": np.arange(n, dtype=np.int64) % CLASSES})
    torch.manual_seed(seed)
    model = build_model(spec, CLASSES, size).eval()
    save_checkpoint(root / "models" / "t" / "m" / "final", model,
                    {"task": "t", "classes": [str(c) for c in range(CLASSES)], "accuracy": {}, "params_hash": "x",
                     "seed": seed, "versions": {}})


def run_stage(root: Path, attribute: dict) -> dict:
    (root / "params.yaml").write_text(yaml.safe_dump({"attribute": attribute}))
    cmd = [sys.executable, "-c", RUNNER, str(ROOT / "stages" / "attribute.py"), "--task", "t", "--model", "m",
           "--params", str(root / "params.yaml"), "--data", str(root / "render"), "--models", str(root / "models"),
           "--out", str(root / "maps")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root, env=env).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "log": out.strip().splitlines()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="test split sizes (images)")
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--model", default=None, help="a train.models name (default: the first)")
    ap.add_argument("--methods", nargs="*", default=None, help="attribute.methods entries (default: all)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default=None, help="attribute.map_dtype")
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
    print(f"attribute stage, {len(attribute['methods'])} entries, model {spec['arch']}, {args.size} px, "
          f"batch_size {attribute.get('batch_size')}, shard_size {attribute.get('shard_size', 256)}, "
          f"threads {args.threads}")
    peaks = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            fabricate(Path(tmp), n, args.size, spec)
            r = run_stage(Path(tmp), attribute)
        peaks[n] = r["peak_kib"] / 2 ** 20
        print(f"{n:>6} images: peak RSS {peaks[n]:.2f} GiB, {r['seconds']:.0f} s  ({r['log']})", flush=True)
    lo, hi = min(peaks.values()), max(peaks.values())
    print(f"largest / smallest peak: {hi / lo:.3f} (limit 1.20)")


if __name__ == "__main__":
    main()
