"""VQA training steps/s with ``group_questions`` k against independently sampled questions (k = 1), same run.

Each model of params.yaml ``train.vqa_models`` takes timed training steps (forward, cross-entropy, backward,
AdamW) on random images and tokens: k = 1 runs ``model(images[image_index], tokens)`` on a batch of questions
about as many images, k > 1 ``model.forward_grouped`` on batch/k images (salbench.models.fit_questions).

    python benchmarks/vqa_training.py --groups 4 8 --threads 1
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from salbench.models import as_question_spec, build_question_model
from salbench.params import load_params


def steps_per_s(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, group: int, steps: int) -> float:
    """Training steps/s on a batch of ``len(tokens)`` questions in runs of ``group`` per image (best of 3)."""
    n = len(tokens)
    index = torch.arange(n) // group
    target = torch.randint(model.num_answers, (n,), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        if group == 1:
            logits = model(images[:n], tokens)
        else:
            logits = model.forward_grouped(images[: int(index[-1]) + 1], tokens, index)
        opt.zero_grad()
        F.cross_entropy(logits, target).backward()
        opt.step()

    step()  # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - t0)
    return steps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--groups", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = load_params(args.params)["train"]["vqa_models"]
    print(f"{args.resolution} px, {args.threads} thread(s); steps/s, and the speed-up over k = 1 measured in this run")
    print(f"{'model':12s} {'batch':>5s} {'k = 1':>8s} " + " ".join(f"{f'k = {k}':>16s}" for k in args.groups))
    for name, entry in models.items():
        spec = as_question_spec(entry["model"], f"train.vqa_models.{name}.model")
        model = build_question_model(spec["arch"], 30, 80, args.resolution, **spec.get("kwargs", {})).train()
        bs = int(entry.get("batch_size", 64))
        images = torch.rand(bs, 3, args.resolution, args.resolution)
        tokens = torch.randint(1, 80, (bs, 16))
        base = steps_per_s(model, images, tokens, 1, args.steps)
        cells = []
        for k in args.groups:
            r = steps_per_s(model, images, tokens, k, args.steps)
            cells.append(f"{r:8.2f} ({r / base:4.2f}x)")
        print(f"{name:12s} {bs:5d} {base:8.2f} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
