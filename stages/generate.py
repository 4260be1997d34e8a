"""DVC stage `generate@<generator>`: DEPICT counterfactuals g(c) and g(c^j) of every permuted concept.

Writes data/concepts/generate/<generator>/ (plan, baseline and permuted image shards, manifest; a trained
diffusion pipeline under model/) and data/plots/concepts/<generator>/ (counterfactuals.png: g(c) and g(c^j) rows;
grid.png: real image, caption, g(c) and g(c^j) per image; dvclive logs and sample grids of the diffusion
training under train/).
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("generate")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import time
from pathlib import Path

import torch
from dvclive import Live

from salbench.concepts import GeneratorContext, build_generator
from salbench.concepts.dataset import PARAM_KEYS, load_eval_set, load_training, save_generated
from salbench.concepts.annotations import captions, changed_phrases
from salbench.concepts.plots import counterfactual_grid, save_concept_grid, save_png
from salbench.device import resolve_device, set_threads
from salbench.errors import cli
from salbench.io import atomic_dir, provenance
from salbench.models import set_deterministic
from salbench.params import check_keys, load_params, section


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generator", required=True, help="generator name from params.yaml concepts.generators")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/render", help="render stage output root")
    ap.add_argument("--out", default=None, help="default: data/concepts/generate/<generator>")
    ap.add_argument("--plots", default=None, help="default: data/plots/concepts/<generator>")
    args = ap.parse_args()

    p = section(load_params(args.params), "concepts")
    check_keys(p, PARAM_KEYS, "concepts")
    seed, device = int(p.get("seed", 0)), resolve_device(p.get("device", "cpu"))
    set_deterministic(seed, device)
    set_threads(p.get("threads", 0))
    task_dir = Path(args.data) / p.get("task", "presence")
    ev = load_eval_set(task_dir, p.get("split", "test"), int(p.get("n_images", 0)), p.get("concepts"),
                       int(p.get("permutations", 3)), seed)
    out = Path(args.out or f"data/concepts/generate/{args.generator}")
    plots = Path(args.plots or f"data/plots/concepts/{args.generator}")
    t0, c0 = time.perf_counter(), time.process_time()
    with atomic_dir(out) as tmp, atomic_dir(plots) as tmp_plots:
        ctx = GeneratorContext(ev.task, ev.world, ev.records, lambda: load_training(task_dir, ev.task), seed, device,
                               workdir=tmp / "model", live=lambda: Live(str(tmp_plots / "train"), save_dvc_exp=False,
                                                                        dvcyaml=None),
                               images=ev.images)
        gen = build_generator(args.generator, p.get(args.generator) or {}, ctx)
        t_build = time.perf_counter() - t0
        plan, index = ev.plan, torch.arange(len(ev.records))
        baseline = gen(plan.concepts, index)
        permuted = {name: torch.stack([gen(plan.targets(a, k), index) for k in range(plan.perms.shape[1])])
                    for a, name in enumerate(plan.permuted_names)}
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        save_generated(tmp, plan, baseline, permuted, {
            "generator": args.generator, "resolution": gen.resolution, "n": len(index),
            "permutations": plan.perms.shape[1], "provenance": provenance({"concepts": p}, seed),
        })
        n_show = int(p.get("preview", 8))
        save_png(tmp_plots / "counterfactuals.png",
                 counterfactual_grid(baseline, [v[0] for v in permuted.values()], n_show))
        rows = slice(0, min(n_show, len(index)))
        context = getattr(gen, "context", None)  # what a captioning generator's captions add (caption_context)
        save_concept_grid(tmp_plots / "grid.png", ev.images[rows],
                          captions(ev.task, plan.concepts[rows], None if context is None else context[rows]),
                          baseline[rows], {j: v[0, rows] for j, v in permuted.items()},
                          {j: changed_phrases(ev.task, plan.concepts[rows], plan.targets(a, 0)[rows], j)
                           for a, j in enumerate(plan.permuted_names)},
                          f"generate@{args.generator}: real image and caption, g(c), g(c^j) (first permutation)")
    n_images = len(index) * (1 + sum(len(v) for v in permuted.values()))
    print(f"generate@{args.generator}: {n_images} images in {seconds:.1f} s wall, {cpu:.1f} s CPU (build {t_build:.1f} s) "
          f"-> {out}")


if __name__ == "__main__":
    main()
