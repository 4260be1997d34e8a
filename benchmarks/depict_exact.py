"""DEPICT: how much of a generator's ranking the exact renderer reproduces once given the generator's properties.

Re-renders the renderer generator's counterfactuals (``stages/generate.py --generator renderer``) with two optional
changes the diffusion generator has by construction, and writes them as a stand-in ``diffusion`` generator next to
a link to the real renderer output, so that ``stages/permutation.py`` compares the two:

* ``--drop-color-of C``: every image whose row says "no C" also loses the other objects of C's colour (recoloured
  ``--neutral``, a colour that carries no concept): the UNet's "no red cube" images hold no red at all;
* ``--resolution R``: the images squeezed to R px (the classifiers resize them back), as a generator at R px.

    python benchmarks/depict_exact.py --renderer data/concepts/generate/renderer --out /tmp/exact \\
        --drop-color-of red_cube --resolution 64
    python stages/permutation.py --generated /tmp/exact/gen --out /tmp/exact/perm --metrics /tmp/exact/depict.json \\
        --plots /tmp/exact/plots

README "How much of the swap the exact renderer reproduces" used the depict-cpu profile with concepts.seed 1.
"""
from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import salbench.concepts.generators as generators
from salbench.concepts import resize
from salbench.io import save_shard
from salbench.render.scene import annotate_pixels, caption


def drop_color(concept: str, neutral: str) -> None:
    """Wrap the renderer's ``set_concept``: making ``concept`` absent also recolours the objects of its colour."""
    original = generators.set_concept

    def set_concept(record: dict, task: Any, world: Any, name: str, present: bool, rng: Any, renderer: Any,
                    tries: int = 20) -> dict:
        if concept not in task.concepts:
            raise SystemExit(f"--drop-color-of {concept!r} is not a concept of the task (known: "
                             f"{sorted(task.concepts)})")
        rec = original(record, task, world, name, present, rng, renderer, tries)
        color = task.concepts[concept].get("color")
        if name != concept or present or not any(o["color"] == color for o in rec["objects"]):
            return rec
        rec = {k: v for k, v in rec.items() if k != "caption"}
        rec["objects"] = [{**{k: v for k, v in o.items() if k not in ("pixels", "pixel_centroid", "bbox")},
                           **({"color": neutral} if o["color"] == color else {})} for o in rec["objects"]]
        rec = annotate_pixels(rec, renderer.instance(rec))
        rec["caption"] = caption(rec)
        return rec

    generators.set_concept = set_concept


def squeeze(src: Path, dst: Path, resolution: int) -> None:
    """Copy a generator output dir with every image shard resized to ``resolution`` px (uint8 N×R×R×3)."""
    def down(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(resize(x[a:a + 256], resolution) * 255).round().byte().permute(0, 2, 3, 1)
                          for a in range(0, len(x), 256)]) if len(x) else x

    (dst / "permuted").mkdir(parents=True, exist_ok=True)
    for name in ("plan.safetensors", "manifest.json"):
        shutil.copy(src / name, dst / name)
    baseline = load_file(src / "baseline.safetensors")["images"]
    save_shard(dst / "baseline.safetensors", {"images": down(baseline).numpy()})
    for f in sorted((src / "permuted").glob("*.safetensors")):
        images = load_file(f)["images"]  # P×N×H×W×3
        save_shard(dst / "permuted" / f.name, {"images": torch.stack([down(p) for p in images]).numpy()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renderer", required=True, help="the real renderer generator's output dir (linked as is)")
    ap.add_argument("--out", required=True, help="writes <out>/gen/{renderer,diffusion}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/render")
    ap.add_argument("--drop-color-of", default=None, metavar="CONCEPT")
    ap.add_argument("--neutral", default="gray")
    ap.add_argument("--resolution", type=int, default=0, help="0: keep the renderer's")
    args = ap.parse_args()
    gen = Path(args.out) / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    if not (gen / "renderer").exists():
        os.symlink(Path(args.renderer).resolve(), gen / "renderer")
    exact = gen / ("exact" if args.resolution else "diffusion")
    if args.drop_color_of:
        drop_color(args.drop_color_of, args.neutral)
    sys.argv = ["generate.py", "--generator", "renderer", "--params", args.params, "--data", args.data,
                "--out", str(exact), "--plots", str(Path(args.out) / "plots" / "exact")]
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "stages" / "generate.py"), run_name="__main__")
    if args.resolution:
        squeeze(exact, gen / "diffusion", args.resolution)
        shutil.rmtree(exact)


if __name__ == "__main__":
    main()
