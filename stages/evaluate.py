"""DVC stage `evaluate@<task>-<model>`: every metric of params.yaml `evaluate` for every attribute entry.

Reads the test split data/render/<task>/ (block by block, `attribute.shard_size` images at a time), the
models data/models/<task>/<model>/{final, random_labels, random_init, checkpoints}/ and the cached maps
data/maps/<task>/<model>/<entry>/ (stage attribute, block by block too), and builds each entry's method
from `attribute.methods` for the metrics that need new maps. Writes the results table
data/results/<task>/<model>.csv (schema: salbench.results), the headline numbers
data/metrics/evaluate/<task>/<model>.json (`dvc metrics`) and data/evaluate/<task>/<model>/examples.safetensors
(example images and maps for the figures).
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("evaluate")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import sys
import time
from pathlib import Path

import torch

from salbench.device import resolve_device, set_threads
from salbench.errors import cli
from salbench.evaluate import SplitData, evaluate, parse_config
from salbench.evaluate.artifacts import check_entry_names, load_entries, load_models, model_hash, save_report
from salbench.evaluate.gt import without_gt_metrics
from salbench.evaluate.suite import flat_perturbation
from salbench.evaluate.vqa import evaluate_task
from salbench.io import atomic_dir
from salbench.params import load_params, section
from salbench.render import load_manifest
from salbench.render.dataset import SplitReader
from salbench.vqa.samples import is_vqa_task


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True, help="task name (data/render/<task>)")
    ap.add_argument("--model", required=True, help="model name (data/models/<task>/<model>)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=None, help="default: data/render/<task>")
    ap.add_argument("--models", default="data/models", help="root of the trained models")
    ap.add_argument("--maps", default=None, help="default: data/maps/<task>/<model>")
    ap.add_argument("--results", default=None, help="default: data/results/<task>/<model>.csv")
    ap.add_argument("--metrics", default=None, help="default: data/metrics/evaluate/<task>/<model>.json")
    ap.add_argument("--out", default=None, help="default: data/evaluate/<task>/<model>")
    args = ap.parse_args()
    name = f"{args.task}/{args.model}"

    params = load_params(args.params)
    config = parse_config(section(params, "evaluate"))
    attribute = section(params, "attribute")
    methods = attribute.get("methods") or {}
    check_entry_names(config, methods)
    set_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)

    model_dir = Path(args.models) / args.task / args.model
    models = load_models(model_dir, device, f"train@{args.task}-{args.model}")
    data_dir = Path(args.data or f"data/render/{args.task}")
    if is_vqa_task(data_dir, str(attribute.get("split", "test"))):  # evaluate_vqa: one sample per question
        t0 = time.perf_counter()
        report, family = evaluate_task(models, model_dir, data_dir, attribute, config,
                                       Path(args.maps or f"data/maps/{name}"),
                                       f"attribute_vqa@{args.task}-{args.model}", device)
        with atomic_dir(args.out or f"data/evaluate/{name}") as out:
            rows = save_report(report, args.task, args.model, family, Path(args.results or f"data/results/{name}.csv"),
                               Path(args.metrics or f"data/metrics/evaluate/{name}.json"), out)
        print(f"[evaluate {name}] {len(rows)} result rows for {name} questions in {time.perf_counter() - t0:.1f} s")
        return
    if (data_dir / "manifest.json").is_file() and not load_manifest(data_dir).get("has_masks", True):
        config, skipped = without_gt_metrics(config)  # an image folder imported without masks
        if skipped:
            print(f"[evaluate {name}] note: task {args.task} has no GT masks (folders.{args.task}.masks): skipping "
                  f"{', '.join(skipped)}; the other metrics run", file=sys.stderr)
    reader = SplitReader(data_dir, str(attribute.get("split", "test")))
    data = SplitData(reader, models.model, device, config.batch_size, int(attribute.get("shard_size", 256)))
    targets = data.targets(models.model, str(attribute.get("explain", "predicted")), config.batch_size)
    entries = load_entries(methods, models.model.family, Path(args.maps or f"data/maps/{name}"), models.model,
                           model_hash(model_dir), data, targets, int(attribute.get("seed", 0)),
                           f"attribute@{args.task}-{args.model}", config.batch_size)

    t0 = time.perf_counter()
    report = evaluate(models, data, entries, config)
    with atomic_dir(args.out or f"data/evaluate/{name}") as out:
        rows = save_report(report, args.task, args.model, models.model.family,
                           Path(args.results or f"data/results/{name}.csv"),
                           Path(args.metrics or f"data/metrics/evaluate/{name}.json"), out)
    print(f"[evaluate {name}] {len(rows)} result rows in {time.perf_counter() - t0:.1f} s")
    if flat_perturbation(rows):
        baseline = next((s.params.get("baseline", "mean") for s in config.specs if s.name == "aopc"), "mean")
        print(f"[evaluate {name}] warning: every MoRF and LeRF curve is the same whatever the map, so the AOPCs "
              "say nothing about the maps: the model ignores the replaced patches, or "
              f"evaluate.metrics.aopc.baseline={baseline!r} is out of distribution for it (try mean or blur)",
              file=sys.stderr)

if __name__ == "__main__":
    main()
