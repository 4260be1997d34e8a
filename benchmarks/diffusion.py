"""DEPICT's diffusion generator on this machine: throughput, the cost of one DEPICT run, and a learning curve.

``throughput`` (default): training steps/s (of the autoencoder too, for latent diffusion) and sampled images/s of
the ``concepts.diffusion`` settings of a params file, at 1 and 2 torch threads (and on CUDA when there is one), and
what one DEPICT run costs at those settings: training steps plus n_images × (1 + concepts × permutations)
generated images. Needs no data.

``curve``: trains the generator on the rendered presence task (``dvc repro render@presence`` first) and, every
``--every`` steps (EMA weights), generates the test captions and scores them with the concept classifier h:
h's AUROC per concept on generated vs real images (DEPICT's check 1) against training minutes; also h on the real
images squeezed to the generator's resolution (the best any generator at that size can reach). One thread.

``recon``: for latent diffusion, trains only the autoencoder (``vae_*`` settings, as ``generate@diffusion`` does)
and, every ``--every`` steps, prints h's AUROC per concept on its reconstructions of the real test images against
its training CPU minutes: what the UNet could reach at best, measured in minutes instead of hours. ``--png`` shows
per concept 8 test images over their reconstructions.

    python benchmarks/diffusion.py                                  # throughput at the default settings
    python benchmarks/diffusion.py --profile paper                  # ... at the paper profile's settings
    python benchmarks/diffusion.py --profile depict-cpu             # ... latent diffusion on 2 CPU cores
    python benchmarks/diffusion.py curve --steps 600 --every 150 --set snr_gamma=5 --json curve.json
    python benchmarks/diffusion.py recon --profile depict-cpu --every 300 --png recon.png   # autoencoder only
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from salbench.concepts import auroc, captions, logits, resize, train_concept_classifier
from salbench.concepts.classifier import classifier_params
from salbench.concepts.dataset import load_eval_set, load_training
from salbench.concepts.diffusion import (DiffusionConfig, build_pipeline, build_tokenizer, grid_image, reconstruct,
                                         sample_images, scene_captions, train_autoencoder, train_pipeline,
                                         untrained_pipeline)
from salbench.models import load_checkpoint, save_checkpoint
from salbench.params import load_params, section


def concepts_params(params: str, profile: str | None, overrides: list[str]) -> dict[str, Any]:
    """The ``concepts`` section (with ``profile`` applied and ``KEY=VALUE`` diffusion overrides); ``n_images: 0``
    becomes the size of the rendered split it means."""
    p = load_params(params)
    if profile:
        from salbench.profile import load_profile, merge

        p = merge(p, load_profile(profile))
    c = section(p, "concepts")
    for kv in overrides:
        key, value = kv.split("=", 1)
        c.setdefault("diffusion", {})[key] = yaml.safe_load(value)
    c["n_images"] = int(c.get("n_images", 0)) or int(p["render"]["splits"][c.get("split", "test")])
    return c


def fake_data(cfg: DiffusionConfig, n: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 128, 128, 3), generator=g, dtype=torch.uint8)
    words = ["a red cube", "no red cube", "a blue sphere", "no blue sphere"]
    return images, [f"{words[i % 2]}, {words[2 + i // 2 % 2]}" for i in range(n)]


def throughput(c: dict[str, Any], steps: int, n_sample: int) -> None:
    cfg = DiffusionConfig.from_params({**c.get("diffusion", {}), "pretrained": None})
    images, prompts = fake_data(cfg, max(cfg.batch_size, n_sample))
    vocab = sorted({w for p in prompts for w in p.replace(",", " , ").split()})
    length = max(len(i) for i in build_tokenizer(vocab, 1 << 16)(prompts).input_ids)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    latent = bool(cfg.vae_channels)
    print(f"diffusion at {cfg.resolution} px" + (f" (latents {cfg.latent_channels}x{cfg.latent_size}x{cfg.latent_size}, "
                                                 f"autoencoder {list(cfg.vae_channels)}, batch {cfg.vae_batch_size})"
                                                 if latent else "")
          + f", UNet channels {list(cfg.channels)}, batch {cfg.batch_size}, {cfg.inference_steps} sampling steps, "
          f"guidance {cfg.guidance_scale}; wall-clock rates")
    print(f"{'device':12s} {'AE steps/s':>11s} {'train steps/s':>14s} {'sampled img/s':>14s}")
    rates = {}
    for device in devices:
        for threads in ([1, 2] if device == "cpu" else [torch.get_num_threads()]):
            torch.set_num_threads(threads)
            pipe = build_pipeline(cfg, vocab, length, 0).to(device)
            ae_rate = float("nan")
            if latent:  # the autoencoder alone, then the UNet with a 1-step autoencoder (its time subtracted)
                train_autoencoder(pipe.vae, images, DiffusionConfig(**{**cfg.__dict__, "vae_steps": 1}), 0)
                t0 = time.perf_counter()
                train_autoencoder(pipe.vae, images, DiffusionConfig(**{**cfg.__dict__, "vae_steps": steps}), 0)
                ae_rate = steps / (time.perf_counter() - t0)
            one = DiffusionConfig(**{**cfg.__dict__, "steps": 1, "vae_steps": 1})
            train_pipeline(pipe, images, prompts, one, 0)  # warm-up
            t0 = time.perf_counter()
            train_pipeline(pipe, images, prompts, one, 0)
            t1 = time.perf_counter()
            train_pipeline(pipe, images, prompts, DiffusionConfig(**{**one.__dict__, "steps": steps + 1}), 0)
            train_rate = steps / (time.perf_counter() - t1 - (t1 - t0))
            t0 = time.perf_counter()
            sample_images(pipe, prompts[:n_sample], list(range(n_sample)), cfg,
                          images[:n_sample] if cfg.strength < 1 else None)
            sample_rate = n_sample / (time.perf_counter() - t0)
            name = f"{device} ({threads} thr)" if device == "cpu" else device
            rates[name] = (ae_rate, train_rate, sample_rate)
            print(f"{name:12s} {ae_rate:11.3f} {train_rate:14.3f} {sample_rate:14.2f}")
    n = c["n_images"]
    k = len(c.get("concepts") or [1] * 4)
    generated = n * (1 + k * int(c.get("permutations", 3)))
    print(f"one DEPICT run: {f'{cfg.vae_steps} autoencoder steps + ' if latent else ''}{cfg.steps} training steps + "
          f"{generated} generated images ({n} images x (1 + {k} concepts x {c.get('permutations', 3)} permutations))")
    for name, (ar, tr, sr) in rates.items():
        ae = cfg.vae_steps / ar / 60 if latent else 0.0
        print(f"  {name:12s} ~ {ae:5.1f} min autoencoder + {cfg.steps / tr / 60:6.1f} min training + "
              f"{generated / sr / 60:6.1f} min sampling = {ae + cfg.steps / tr / 60 + generated / sr / 60:6.1f} min")


@dataclass
class Scoring:
    """The rendered presence task's training images, its test images and h's AUROC on them."""

    names: list[str]
    truth: torch.Tensor  # bool N×K test concepts
    test: torch.Tensor  # uint8 N×H×W×3
    train: torch.Tensor  # uint8 M×H×W×3
    train_concepts: torch.Tensor  # bool M×K
    task: Any
    world: Any
    test_records: list[dict]  # N scene records
    train_records: list[dict]  # M scene records
    h: torch.nn.Module
    real: list[float]  # h's AUROC per concept on the test images
    real_at_resolution: list[float]  # ... squeezed to the generator's resolution

    def auroc(self, x: torch.Tensor) -> list[float]:
        """h's AUROC per concept on uint8 N×S×S×3 images of the test captions."""
        return auroc(logits(self.h, x, self.h.input_size, 256).cpu().T, self.truth.T).tolist()

    def named(self, values: list[float]) -> dict[str, float]:
        return dict(zip(self.names, map(_r, values)))


def scoring(c: dict[str, Any], data: Path, h_dir: Path, resolution: int) -> Scoring:
    """Load the task and h (trained with ``concepts.h`` and saved to ``h_dir`` if missing); print h's AUROC on the
    real test images, at full size and squeezed to ``resolution`` (the best any generator at that size can reach)."""
    seed = int(c.get("seed", 0))
    task_dir = data / c.get("task", "presence")
    ev = load_eval_set(task_dir, "test", 0, c.get("concepts"), 1, seed)
    images, concepts, records = load_training(task_dir, ev.task)
    t0 = time.process_time()
    if (h_dir / "manifest.json").exists():
        h = load_checkpoint(h_dir, "cpu")[0]
    else:
        spec, size, hcfg = classifier_params(c.get("h") or {})
        h = train_concept_classifier(images, concepts, spec, hcfg, seed, "cpu", size)
        save_checkpoint(h_dir, h, {"task": "presence", "classes": ev.task.names, "accuracy": {}, "params_hash": "",
                                   "seed": seed, "versions": {}})
    s = Scoring(list(ev.task.names), ev.plan.concepts, ev.images, images, concepts, ev.task, ev.world, ev.records,
                records, h, [], [])
    s.real = s.auroc(ev.images)
    s.real_at_resolution = s.auroc((resize(ev.images, resolution) * 255).round().byte().permute(0, 2, 3, 1))
    print(f"h ({(time.process_time() - t0) / 60:.1f} CPU min): AUROC on real test images {s.named(s.real)}; on real "
          f"images at {resolution} px {s.named(s.real_at_resolution)}")
    return s


def concept_grid(s: Scoring, images: torch.Tensor, resolution: int, png: Path, k: int = 8) -> None:
    """Per concept, the first ``k`` test images showing it over ``images`` (uint8 N×R×R×3 of the same test rows:
    reconstructions or generations from their captions), at twice the generator's resolution."""
    k = min(k, int(s.truth.sum(0).min()))
    if not k:
        return
    picks = [torch.nonzero(s.truth[:, j])[:k, 0] for j in range(len(s.names))]
    real = (resize(s.test, resolution) * 255).round().byte().permute(0, 2, 3, 1)
    tiles = [t for p in picks for t in (real[p], images[p])]
    png.parent.mkdir(parents=True, exist_ok=True)
    grid_image(torch.cat(tiles).repeat_interleave(2, 1).repeat_interleave(2, 2), k).save(png)


def untrained(cfg: DiffusionConfig, s: Scoring, seed: int) -> tuple[Any, list[str]]:
    """The untrained pipeline ``generate@diffusion`` builds for the training captions, and those captions."""
    prompts = scene_captions(s.task, s.train_concepts, s.train_records, cfg)
    test = scene_captions(s.task, s.truth, s.test_records, cfg)
    return untrained_pipeline(cfg, s.task, s.world, [*prompts, *test], seed), prompts


def recon(c: dict[str, Any], data: Path, h_dir: Path, every: int, out: Path | None, png: Path | None) -> None:
    """Train only the autoencoder (the params' settings) and print, every ``every`` steps and at the end, h's AUROC
    per concept on its reconstructions of the test images and the autoencoder's training CPU minutes."""
    torch.set_num_threads(1)
    seed = int(c.get("seed", 0))
    cfg = DiffusionConfig.from_params({**c.get("diffusion", {}), "pretrained": None, "sample_every": every})
    if not cfg.vae_channels:
        raise SystemExit("error: recon needs concepts.diffusion.vae_channels (e.g. --profile depict-cpu)")
    s = scoring(c, data, h_dir, cfg.resolution)
    vae = untrained(cfg, s, seed)[0].vae  # as generate@diffusion builds and trains it
    rows: list[dict[str, Any]] = []
    t0, excluded = time.process_time(), [0.0]

    def score(step: int) -> None:
        ts = time.process_time()
        minutes = (ts - t0 - excluded[0]) / 60
        rec = reconstruct(vae, s.test, cfg.resolution)
        a = s.auroc(rec)
        gaps = [r - g for r, g in zip(s.real, a)]
        rows.append({"step": step, "ae_cpu_minutes": _r(minutes), "h_reconstructed": s.named(a),
                     "max_gap": _r(max(gaps))})
        print(f"step {step:5d}  {minutes:5.1f} autoencoder CPU min  h AUROC on reconstructions "
              f"{' '.join(f'{n}={v:.3f}' for n, v in zip(s.names, a))}  max gap {max(gaps):.3f}", flush=True)
        if png is not None:
            concept_grid(s, rec, cfg.resolution, png)
        excluded[0] += time.process_time() - ts

    train_autoencoder(vae, s.train, cfg, seed + 1, callback=score)  # seed + 1: as train_pipeline seeds it
    if out is not None:
        out.write_text(json.dumps({"settings": cfg.__dict__, "n_test": len(s.truth), "h_real": s.named(s.real),
                                   "h_real_at_resolution": s.named(s.real_at_resolution), "curve": rows}, indent=1, default=list))


def curve(c: dict[str, Any], data: Path, steps: int, every: int, h_dir: Path, out: Path | None,
          guidance: list[float], png: Path | None = None, sampler_steps: list[int] | None = None) -> None:
    torch.set_num_threads(1)
    seed = int(c.get("seed", 0))
    cfg = DiffusionConfig.from_params({**c.get("diffusion", {}), "pretrained": None, "steps": steps,
                                       "sample_every": every})
    s = scoring(c, data, h_dir, cfg.resolution)
    names, truth, images, real = s.names, s.truth, s.train, s.real
    pipe, prompts = untrained(cfg, s, seed)
    test_prompts = scene_captions(s.task, truth, s.test_records, cfg)
    rows: list[dict[str, Any]] = []
    ceilings: dict[str, list[float]] = {}
    t_train = time.process_time()
    excluded = [0.0]

    def score(step: int) -> None:
        ts = time.process_time()
        if pipe.vae is not None and "reconstructed" not in ceilings:  # the autoencoder bounds what the UNet can reach
            ceilings["reconstructed"] = s.auroc(reconstruct(pipe.vae, s.test, cfg.resolution))
            print(f"h on the autoencoder's reconstructions of the test images {s.named(ceilings['reconstructed'])}",
                  flush=True)
        scored = {}
        for k in sampler_steps or [cfg.inference_steps]:
            for w in guidance:
                gen = sample_images(pipe, test_prompts, list(range(len(test_prompts))),
                                    DiffusionConfig(**{**cfg.__dict__, "guidance_scale": w, "inference_steps": k}),
                                    s.test if cfg.strength < 1 else None)
                scored[k, w] = s.auroc(gen)
                if png is not None:
                    concept_grid(s, gen, cfg.resolution,
                                 png.with_name(f"{png.stem}_step{step}_g{w:g}_k{k}{png.suffix}"))
        excluded[0] += time.process_time() - ts
        minutes = (time.process_time() - t_train - excluded[0]) / 60
        for (k, w), a in scored.items():
            gaps = [r - g for r, g in zip(real, a)]
            rows.append({"step": step, "train_cpu_minutes": round(minutes, 2), "guidance_scale": w,
                         "inference_steps": k, "h_generated": s.named(a), "max_gap": _r(max(gaps))})
            print(f"step {step:5d}  {minutes:5.1f} train CPU min  guidance {w:g}  sampler steps {k}  h AUROC on "
                  f"generated {' '.join(f'{n}={v:.3f}' for n, v in zip(names, a))}  max gap {max(gaps):.3f}",
                  flush=True)

    train_pipeline(pipe, images, prompts, cfg, seed, callback=score, groups=captions(s.task, s.train_concepts))
    if out is not None:
        out.write_text(json.dumps({"settings": {k: v for k, v in cfg.__dict__.items()}, "n_test": len(truth),
                                   "h_real": s.named(real), "h_real_at_resolution": s.named(s.real_at_resolution),
                                   **{f"h_{k}": s.named(v) for k, v in ceilings.items()},
                                   "curve": rows},
                                  indent=1, default=list))


def _r(x: float) -> float:
    return round(float(x), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", choices=["throughput", "curve", "recon"], default="throughput")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="apply profiles/<name>.yaml first (e.g. paper)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a concepts.diffusion setting (repeatable)")
    ap.add_argument("--steps", type=int, default=None, help="throughput: timed training steps (default 5); "
                    "curve: training steps (default: the params'); recon: autoencoder steps (default: vae_steps)")
    ap.add_argument("--samples", type=int, default=64, help="throughput: images sampled")
    ap.add_argument("--every", type=int, default=150, help="curve, recon: scoring period (steps)")
    ap.add_argument("--data", default="data/render")
    ap.add_argument("--h", default="data/benchmarks/diffusion/h", help="curve: h checkpoint (trained if missing)")
    ap.add_argument("--json", default=None, help="curve, recon: write the curve here")
    ap.add_argument("--png", default=None, help="recon: per concept, 8 test images showing it over their "
                    "reconstructions (rewritten at every scoring); curve: ... over their generations, one file per "
                    "scoring, guidance scale and sampler step count (<stem>_step<N>_g<w>_k<steps>.png)")
    ap.add_argument("--guidance", default=None, help="curve: comma-separated guidance scales to score (default: the "
                    "params')")
    ap.add_argument("--sampler-steps", default=None, help="curve: comma-separated DPM-Solver++ step counts to score "
                    "(default: the params' inference_steps)")
    args = ap.parse_args()
    c = concepts_params(args.params, args.profile, args.set)
    if args.mode == "throughput":
        throughput(c, args.steps or 5, args.samples)
    elif args.mode == "recon":
        if args.steps:
            c.setdefault("diffusion", {})["vae_steps"] = args.steps
        recon(c, Path(args.data), Path(args.h), args.every, Path(args.json) if args.json else None,
              Path(args.png) if args.png else None)
    else:
        steps = args.steps or int(c.get("diffusion", {}).get("steps", 150))
        guidance = [float(w) for w in args.guidance.split(",")] if args.guidance else \
            [float(c.get("diffusion", {}).get("guidance_scale", 2.0))]
        sampler_steps = [int(k) for k in args.sampler_steps.split(",")] if args.sampler_steps else None
        curve(c, Path(args.data), steps, args.every, Path(args.h), Path(args.json) if args.json else None, guidance,
              Path(args.png) if args.png else None, sampler_steps)


if __name__ == "__main__":
    main()
