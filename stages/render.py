"""DVC stage `render@<task>`: render a task's train/val/test splits as shards + manifest + previews."""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("render")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import time
from pathlib import Path

import numpy as np

from salbench.errors import cli
from salbench.io import atomic_dir, provenance, save_shard, write_json
from salbench.params import ParamsError, check_keys, load_params, section
from salbench.render import SPLITS, World, build_task, render_splits, task_world
from salbench.render.preview import write_previews
from salbench.vqa import dataset as vqa_data

STAGE_KEYS = {"seed", "splits", "workers", "tasks", "preview"}


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True, help="task name from params.yaml render.tasks")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="default: data/render/<task>")
    ap.add_argument("--plots", default=None, help="preview PNG dir; default: data/plots/render/<task>")
    ap.add_argument("--metrics", default=None, help="class-balance JSON; default: data/metrics/render/<task>.json")
    args = ap.parse_args()

    params = load_params(args.params)
    p = section(params, "render")
    check_keys(p, STAGE_KEYS | set(World.__dataclass_fields__) - {"values"}, "render")
    task_section = section(params, "tasks").get(args.task) or {}
    world, task_params = task_world(p, task_section, f"tasks.{args.task}.world")
    task = build_task(args.task, world, task_params)  # validates before any rendering
    splits = {s: int(n) for s, n in p["splits"].items()}
    if set(splits) != set(SPLITS) or min(splits.values()) < 1:
        raise ParamsError(f"render.splits must give a positive size for each of {list(SPLITS)}, got {p['splits']}")

    out = Path(args.out or f"data/render/{args.task}")
    plots = Path(args.plots or f"data/plots/render/{args.task}")
    seed, workers = int(p.get("seed", 0)), int(p.get("workers", 1))
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp, atomic_dir(plots) as tmp_plots:
        scenes, counts, questions = {}, {}, {}
        for split, arrays, records in render_splits(world, args.task, task_params, splits, seed, workers, progress=True):
            save_shard(tmp / f"{split}.safetensors", arrays)
            scenes[split] = records
            balance = np.bincount(arrays["label"], minlength=len(task.classes))
            counts[split] = {"n": len(arrays["label"]), "class_counts": dict(zip(task.classes, balance.tolist()))}
            if split == "test":
                write_previews(tmp_plots, arrays, n=int(p.get("preview", 16)))
            if hasattr(task, "questions"):  # VQA tasks: several questions per scene (salbench.vqa)
                questions[split] = task.questions(records, split)
                vqa_data.write_split(tmp, split, questions[split])
        if questions:
            vqa_data.write_vocabulary(tmp, task.generator.vocabulary(), questions)
        write_json(tmp / "scenes.json", scenes)
        write_json(tmp / "manifest.json", {
            "task": args.task, "classes": task.classes, "resolution": world.resolution, "splits": counts,
            "provenance": provenance({"render": p, "task": task_section}, seed),
        })
    metrics = {"images_per_split": {s: c["n"] for s, c in counts.items()},
               "class_balance": {s: c["class_counts"] for s, c in counts.items()}}
    if questions:  # answer balance per family
        metrics["questions"] = {s: vqa_data.balance(q, counts[s]["n"]) for s, q in questions.items()}
    write_json(args.metrics or f"data/metrics/render/{args.task}.json", metrics)
    dt = time.perf_counter() - t0
    total = sum(splits.values())
    print(f"rendered {total} images of {args.task} in {dt:.1f} s ({total / dt:.1f} img/s) -> {out}")


if __name__ == "__main__":
    main()
