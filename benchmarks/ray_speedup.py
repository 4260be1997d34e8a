"""Speed-up of the attribute stage on Ray (``attribute.workers: N``) over the in-process run, same maps.

Fabricates a test split and an untrained default-size model as benchmarks/memory.py does, then runs
``stages/attribute.py`` in a fresh process once in-process (workers 0) and once per ``--workers`` value, with
params.yaml's default method list. Reports wall time, the Ray start-up inside it, and CPU time (user + system)
of the stage process and every process it started (Ray's raylet, GCS and workers, summed just before Ray
shuts down), and checks that every run wrote the same files as the in-process one.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/ray_speedup.py --images 128 --workers 2``
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from salbench.params import load_params

from memory import ROOT, fabricate  # benchmarks/memory.py

# Runs the stage in this process and prints JSON: wall seconds, Ray start-up seconds, CPU seconds of this
# process and its descendants (those still alive when Ray shuts down, plus the reaped ones).
RUNNER = """
import json, resource, runpy, sys, time
import psutil
from salbench import parallel
t0, info = time.perf_counter(), {"ray_start": 0.0, "descendants_cpu": 0.0}
init, close = parallel.RayExecutor.__post_init__, parallel.RayExecutor.close
def timed_init(self):
    t = time.perf_counter(); init(self); info["ray_start"] = time.perf_counter() - t
def measured_close(self):
    for p in psutil.Process().children(recursive=True):
        try:
            c = p.cpu_times(); info["descendants_cpu"] += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    close(self)
parallel.RayExecutor.__post_init__, parallel.RayExecutor.close = timed_init, measured_close
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for f in ("ru_utime", "ru_stime"))
print(json.dumps({"seconds": time.perf_counter() - t0, "ray_start": info["ray_start"],
                  "cpu": own + info["descendants_cpu"]}))
"""


def run(root: Path, attribute: dict, out: str) -> dict:
    (root / f"{out}.yaml").write_text(yaml.safe_dump({"attribute": attribute}))
    cmd = [sys.executable, "-c", RUNNER, str(ROOT / "stages" / "attribute.py"), "--task", "t", "--model", "m",
           "--params", str(root / f"{out}.yaml"), "--data", str(root / "render"), "--models", str(root / "models"),
           "--out", str(root / out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    if done.returncode:
        sys.exit(f"{out} failed:\n{done.stdout}{done.stderr}")
    lines = done.stdout.splitlines()
    files = {p.relative_to(root / out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((root / out).rglob("*")) if p.is_file()}
    return {**json.loads(lines[-1]), "files": files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128, help="test split size")
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--device", default="cpu", help="attribute.device (auto: GPU workers where there are GPUs)")
    ap.add_argument("--gpus-per-task", type=float, default=None)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = ap.parse_args()

    params = load_params(args.params)
    spec = next(iter(params["train"]["models"].values()))["model"]
    attribute = {k: v for k, v in params["attribute"].items() if k != "tasks"}
    attribute.update(device=args.device, threads=1, shard_size=args.shard_size)
    print(f"attribute stage, {len(attribute['methods'])} entries, {spec['arch']} (untrained), {args.images} images "
          f"of {args.size} px, shard_size {args.shard_size}, batch_size {attribute['batch_size']}, one thread per "
          f"process, device {args.device}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fabricate(root, args.images, args.size, spec)
        base = run(root, attribute, "inprocess")
        print(f"in-process: {base['seconds']:.1f} s wall, {base['cpu']:.1f} s CPU", flush=True)
        for n in args.workers:
            ray = {"gpus_per_task": args.gpus_per_task} if args.gpus_per_task is not None else None
            r = run(root, {**attribute, "workers": n, **({"ray": ray} if ray else {})}, f"workers{n}")
            same = r["files"] == base["files"]
            work = r["seconds"] - r["ray_start"]
            print(f"workers {n}: {r['seconds']:.1f} s wall (Ray start-up {r['ray_start']:.1f} s), {r['cpu']:.1f} s "
                  f"CPU; speed-up {base['seconds'] / r['seconds']:.2f}x, {base['seconds'] / work:.2f}x without the "
                  f"start-up; files identical to in-process: {same}", flush=True)
            if not same:
                print("  differing:", sorted(k for k in base["files"] if base["files"][k] != r["files"].get(k)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
