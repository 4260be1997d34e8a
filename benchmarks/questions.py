"""Question generation throughput: questions/s on one core for vqa-simple and vqa-complex.

Scene records are sampled without rendering (questions need only attributes, positions and the
camera); the timed part is everything `render@vqa-*` does per split after rendering: relations,
sampling, execution, answer balancing, ground truths and encoding to arrays.

    python benchmarks/questions.py --scenes 2000
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from salbench.params import load_params
from salbench.render import task_world
from salbench.render.tasks import random_records
from salbench.vqa import QuestionGenerator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()

    params = load_params(args.params)
    print(f"{args.scenes} scenes per task (its tasks.<name>.world), 1 process (1 core)")
    print(f"{'task':12s} {'objects':>7s} {'questions':>9s} {'per scene':>9s} {'questions/s':>12s}")
    for kind in ("simple", "complex"):
        world, own = task_world(params["render"], params["tasks"][f"vqa-{kind}"])
        recs = random_records(world, args.scenes)
        gen = QuestionGenerator(world, kind, own)
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            qs = gen.generate(recs, "train")
            best = min(best, time.perf_counter() - t0)
        n = len(qs.texts)
        print(f"vqa-{kind:8s} {f'{world.min_objects}-{world.max_objects}':>7s} {n:9d} {n / args.scenes:9.2f} "
              f"{n / best:12.0f}")


if __name__ == "__main__":
    main()
