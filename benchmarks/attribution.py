"""Attribution throughput against one plain forward+backward of the same model on the same batch.

Three tables per model (a small timm ResNet and a tiny ViT, the project's default sizes):
1. every registered method alone: maps/s and its time over the reference pass; the budget is
   1.5× one pass for single-pass methods and 1.5× (steps or samples) passes for IG/SmoothGrad/VarGrad;
   captum's time for the same method where captum has it;
2. all single-pass methods at 4 layers: fused in one pass vs one call per method and layer;
3. a stage-like set (every method, layer methods at 4 layers): ``attribute_many`` vs one call each;
4. (``--stage``) the default ``attribute`` stage's own workload: params.yaml's ``attribute.methods`` on the
   default ``train.models`` at the rendered resolution, ``attribute_many`` (what the stage runs) vs one call
   per method and layer (a multi-layer entry: one call per layer), also split into the entries the
   plain pass serves and the rest, with the speed-up ceiling that sharing passes has on this list.

The reference is a training-style step: forward, sum of the target logits, backward with parameter
gradients. Every comparison interleaves the functions round by round and reports the median of the
per-round ratios, which stays meaningful on a shared, loaded machine.

Run: ``.venv/bin/python benchmarks/attribution.py [--batch 16 --size 64 --threads 1 --repeat 5]``
(``--methods lrp gradient``: table 1 for those methods only);
the default stage's table alone: ``.venv/bin/python benchmarks/attribution.py --stage --models`` (no model list).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings
from typing import Callable

import torch
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

from salbench.attribution import METHODS, attribute_many, build
from salbench.attribution.engine import PLAIN
from salbench.attribution.wrappers import MultiLayer
from salbench.models import build_model
from salbench.params import load_params

SAMPLED = {"integrated_gradients": {"steps": 16}, "smoothgrad": {"samples": 16}, "vargrad": {"samples": 16}}
SINGLE_PASS = ["gradient", "gradient_x_input"]
LAYER_METHODS = ["gradcam", "gradcam_pp", "normgrad", "normgrad_selective", "linear_approx", "layer_gradient"]
# Methods that run more than one plain pass by construction: guided GradCAM = guided pass + GradCAM pass.
PASSES = {"guided_gradcam": 2}
# Extra rows: other variants of a method, per model (row label, method, params).
VARIANTS = {"vit-tiny": [("lrp (attnlrp)", "lrp", {"rule": "attnlrp"})]}


def build_models(size: int, classes: int = 10) -> dict[str, tuple[torch.nn.Module, list[str]]]:
    """The benchmark models and the 4 layers each is probed at."""
    torch.manual_seed(0)
    resnet = ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), stem_type="deep", stem_width=16,
                    num_classes=classes)
    vit = VisionTransformer(img_size=size, patch_size=8, embed_dim=96, depth=4, num_heads=3, num_classes=classes)
    return {"resnet-small": (resnet.eval(), ["layer1", "layer2", "layer3", "layer4"]),
            "vit-tiny": (vit.eval(), [f"blocks.{i}.norm1" for i in range(4)])}


def compare(fns: dict[str, Callable[[], object]], repeat: int, device: torch.device) -> dict[str, list[float]]:
    """Wall times (s) of each function over ``repeat`` interleaved rounds, after a warm-up.

    Each round runs every function once, back to back, so all see the same background load (the
    machine is shared): ratios are taken per round (see :func:`ratio`).
    """
    def once(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for fn in fns.values():
        once(fn)
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            runs[name].append(once(fn))
    return runs


def ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b: robust to load that changes between rounds."""
    return statistics.median(x / y for x, y in zip(a, b))


def reference_pass(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).gather(1, t[:, None]).sum().backward()


def captum_methods(model: torch.nn.Module, layer: torch.nn.Module) -> dict[str, Callable]:
    from captum.attr import (GuidedBackprop, InputXGradient, IntegratedGradients, LayerGradCam, NoiseTunnel,
                             Saliency)

    return {
        "gradient": lambda x, t: Saliency(model).attribute(x, target=t, abs=False),
        "gradient_x_input": lambda x, t: InputXGradient(model).attribute(x, target=t),
        "guided_backprop": lambda x, t: GuidedBackprop(model).attribute(x, target=t),
        "gradcam": lambda x, t: LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True),
        "integrated_gradients": lambda x, t: IntegratedGradients(model).attribute(
            x, target=t, n_steps=16, method="gausslegendre", internal_batch_size=16 * len(x)),
        "smoothgrad": lambda x, t: NoiseTunnel(Saliency(model)).attribute(
            x, target=t, nt_type="smoothgrad", nt_samples=16, nt_samples_batch_size=16, stdevs=0.15, abs=False),
    }


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def bench_model(name: str, model: torch.nn.Module, layers: list[str], x: torch.Tensor, t: torch.Tensor,
                args: argparse.Namespace, device: torch.device) -> None:
    n = len(x)
    ref_fn = functools.partial(reference_pass, model, x, t)
    captum = captum_methods(model, model.get_submodule(layers[-1])) if device.type == "cpu" or args.captum else {}
    rows, refs = [], []
    entries = [(m, m, {}) for m in METHODS] + VARIANTS.get(name, [])
    for label, method, params in entries:
        if args.methods and method not in args.methods:
            continue
        params = {**SAMPLED.get(method, {}), **params}
        passes = params.get("steps", params.get("samples", PASSES.get(method, 1)))
        if method in LAYER_METHODS or method == "guided_gradcam":
            params = {**params, "layer": layers[-1]}
        fns = {"ref": ref_fn, "ours": functools.partial(METHODS.get(method), model, x, t, batch_size=n * passes,
                                                        **params)}
        if method in captum:
            fns["captum"] = functools.partial(captum[method], x.clone().requires_grad_(True), t)
        runs = compare(fns, args.repeat, device)
        refs.append(min(runs["ref"]))
        ours, x_ref, budget = min(runs["ours"]), ratio(runs["ours"], runs["ref"]), 1.5 * passes
        rows.append([label, f"{passes}", f"{ours * 1e3:.1f}", f"{n / ours:.0f}", f"{x_ref:.2f}", f"{budget:.1f}",
                     "yes" if x_ref <= budget else "NO",
                     f"{min(runs['captum']) * 1e3:.1f}" if "captum" in runs else "",
                     f"{ratio(runs['ours'], runs['captum']):.2f}" if "captum" in runs else ""])
    print(f"\n== {name}: batch {n} at {x.shape[-1]}×{x.shape[-1]}, reference forward+backward "
          f"{min(refs) * 1e3:.1f} ms (fastest of all rounds)")
    table(f"[{name}] each method alone (ms: fastest round; ×ref, ours/captum: median of per-round ratios)",
          ["method", "passes", "ms", "maps/s", "×ref", "budget", "within", "captum ms", "ours/captum"], rows)
    if args.methods:
        return

    single = [(m, {}) for m in SINGLE_PASS] + [(m, {"layer": layer}) for m in LAYER_METHODS for layer in layers]
    runs = compare({"ref": ref_fn,
                    "fused": functools.partial(attribute_many, model, x, t, single, batch_size=n),
                    "alone": lambda: [METHODS.get(m)(model, x, t, batch_size=n, **p) for m, p in single]},
                   args.repeat, device)
    table(f"[{name}] {len(single)} single-pass maps ({len(SINGLE_PASS)} input methods + {len(LAYER_METHODS)} layer "
          f"methods × {len(layers)} layers)",
          ["variant", "ms", "×ref", "target", "speed-up"],
          [["reference forward+backward", f"{min(runs['ref']) * 1e3:.1f}", "1.00", "", ""],
           ["fused (one pass)", f"{min(runs['fused']) * 1e3:.1f}", f"{ratio(runs['fused'], runs['ref']):.2f}",
            "<= 1.5", f"{ratio(runs['alone'], runs['fused']):.1f}×"],
           ["one call per method and layer", f"{min(runs['alone']) * 1e3:.1f}",
            f"{ratio(runs['alone'], runs['ref']):.2f}", "", "1.0×"]])

    stage = [*single, ("guided_backprop", {}), ("deconvolution", {}), ("guided_gradcam", {}), ("random", {}),
             *SAMPLED.items(), ("lrp", {})]
    big = n * 16
    runs = compare({"ref": ref_fn,
                    "fused": functools.partial(attribute_many, model, x, t, stage, batch_size=big),
                    "alone": lambda: [METHODS.get(m)(model, x, t, batch_size=big, **p) for m, p in stage]},
                   max(1, args.repeat // 2), device)
    table(f"[{name}] stage-like set: {len(stage)} maps (every method, layer methods at {len(layers)} layers)",
          ["variant", "ms", "×ref", "speed-up"],
          [["attribute_many (shared passes)", f"{min(runs['fused']) * 1e3:.0f}",
            f"{ratio(runs['fused'], runs['ref']):.1f}", f"{ratio(runs['alone'], runs['fused']):.1f}×"],
           ["one call per method and layer", f"{min(runs['alone']) * 1e3:.0f}",
            f"{ratio(runs['alone'], runs['ref']):.1f}", "1.0×"]])


def shares_plain_pass(model: torch.nn.Module, method: object, params: dict) -> bool:
    """Whether an entry is served entirely by the fused plain pass (no sampler, no backward rule)."""
    plan = method.plan(model, **params)
    return plan is not None and all(r.sampler == PLAIN and r.rule == "gradient" for r in plan.requests)


def one_call_each(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, entries: list, batch_size: int) -> None:
    """Each entry on its own (a multi-layer entry: one call per layer, as ``MultiLayer.compute`` runs it)."""
    for method, p in entries:
        (method.compute if isinstance(method, MultiLayer) else method)(model, x, t, batch_size=batch_size, **p)


def stage_row(runs: dict[str, list[float]], label: str, key: str, versus: str) -> list[str]:
    """Best time, median ratio to the reference pass, and median speed-up of ``key`` over ``versus``."""
    return [label, f"{min(runs[key]):.2f}", f"{ratio(runs[key], runs['ref']):.1f}",
            f"{ratio(runs[versus], runs[key]):.2f}×"]


def bench_stage(args: argparse.Namespace, device: torch.device) -> None:
    """Table 4: the default attribute stage's method list on the default models, fused vs one call per layer.

    The entries are also timed in two parts: those the plain pass serves, and the rest (own samplers or
    backward rules: IG, SmoothGrad, VarGrad, guided backprop, deconvolution, LRP, ...). The last row is the
    speed-up if the plain-pass entries cost nothing: the ceiling that sharing passes can reach on this list.
    """
    params = load_params(args.params)
    size, batch_size = int(params["render"]["resolution"]), int(params["attribute"]["batch_size"])
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((args.stage_images, 3, size, size), generator=gen).to(device)
    t = torch.randint(0, 8, (args.stage_images,), generator=gen).to(device)
    for name, entry in params["train"]["models"].items():
        torch.manual_seed(0)
        model = build_model(entry["model"], 8, size).to(device).eval()
        built = {n: b for n, e in params["attribute"]["methods"].items() if (b := build(n, e, model.family))}
        plain = [n for n, (method, p) in built.items() if shares_plain_pass(model, method, p)]
        parts = {"plain": [built[n] for n in plain], "rest": [b for n, b in built.items() if n not in plain]}

        runs = compare({"ref": functools.partial(reference_pass, model, x, t),
                        "fused": functools.partial(attribute_many, model, x, t, list(built.values()),
                                                   batch_size=batch_size),
                        **{f"{k} fused": functools.partial(attribute_many, model, x, t, v, batch_size=batch_size)
                           for k, v in parts.items()},
                        **{f"{k} alone": functools.partial(one_call_each, model, x, t, v, batch_size)
                           for k, v in parts.items()}},
                       args.repeat, device)
        runs["alone"] = [a + b for a, b in zip(runs["plain alone"], runs["rest alone"])]
        row = functools.partial(stage_row, runs)
        rest = ", ".join(n for n in built if n not in plain)
        table(f"[{name}] default attribute stage: {len(built)} entries of params.yaml attribute.methods, "
              f"{len(x)} images at {size} px, batch_size {batch_size}\n"
              f"  plain-pass entries ({len(plain)}): {', '.join(plain)}\n"
              f"  the rest ({len(built) - len(plain)}): {rest}",
              ["variant", "s", "×ref", "speed-up"],
              [row("attribute_many (what the stage runs)", "fused", "alone"),
               row("one call per method and layer", "alone", "alone"),
               row("plain-pass entries, fused", "plain fused", "plain alone"),
               row("plain-pass entries, one call each", "plain alone", "plain alone"),
               row("the rest, attribute_many", "rest fused", "rest alone"),
               row("the rest, one call each", "rest alone", "rest alone"),
               ["ceiling: plain-pass entries for free", "", "", f"{ratio(runs['alone'], runs['rest fused']):.2f}×"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the shared machine has 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--captum", action="store_true", help="also time captum on a non-CPU device")
    parser.add_argument("--models", nargs="*", default=None, help="subset of: resnet-small vit-tiny")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="only these methods (and their variants) in table 1; skips tables 2 and 3")
    parser.add_argument("--stage", action="store_true", help="also table 4: the default attribute stage's workload")
    parser.add_argument("--stage-images", type=int, default=64, help="images for table 4")
    parser.add_argument("--params", default="params.yaml", help="params file for table 4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # captum warns on every call about hooks and requires_grad
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, 3, args.size, args.size), generator=gen).to(device)
    t = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}")
    for name, (model, layers) in build_models(args.size).items():
        if args.models is None or name in args.models:
            bench_model(name, model.to(device), layers, x, t, args, device)
    if args.stage:
        bench_stage(args, device)


if __name__ == "__main__":
    main()
