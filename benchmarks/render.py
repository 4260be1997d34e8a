"""Render throughput: images/s at a resolution including instance masks, depth and GT masks.

Reference in the same run: a bare pyrender colour pass of the same scenes (the floor set by the
rasteriser), so the ratio shows what sampling, the visibility check and the mask pass cost.

    python benchmarks/render.py --n 400 --resolution 128 --workers 2
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from salbench.render import World, get_renderer, render_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--task", default="unique-query")
    args = ap.parse_args()

    world = World(resolution=args.resolution)
    rows = []
    for workers in sorted({1, args.workers}):
        t0 = time.perf_counter()
        _, arrays, records = next(render_splits(world, args.task, {}, {"bench": args.n}, seed=0, workers=workers))
        dt = time.perf_counter() - t0
        rows.append((f"salbench render ({workers} worker{'s' * (workers > 1)}, incl. masks)", args.n / dt))
    r = get_renderer(args.resolution)
    r.color(records[0])  # warm-up (shader compilation)
    t0 = time.perf_counter()
    for rec in records:
        r.color(rec)
    rows.append(("reference: bare pyrender colour pass, 1 process", len(records) / (time.perf_counter() - t0)))
    ref = rows[-1][1]
    print(f"{args.n} images at {args.resolution}x{args.resolution}, task {args.task}")
    print(f"{'what':60s} {'img/s':>8s} {'vs ref':>7s}")
    for name, rate in rows:
        print(f"{name:60s} {rate:8.1f} {rate / ref:7.2f}")
    assert np.isfinite(arrays["depth"].astype(np.float32)).all()


if __name__ == "__main__":
    main()
