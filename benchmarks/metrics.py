"""Metric speed against reference implementations on the same inputs, in one run.

References: Quantus 0.6 (RelevanceMassAccuracy, RelevanceRankAccuracy, PointingGame, PixelFlipping,
MPRT, SmoothMPRT, EfficientMPRT) and per-map loops over scikit-image / scipy (SSIM, HOG, Spearman) with
the Sanity Checks normalisations in numpy. Quantus's localisation metrics get the maps already
channel-pooled, outside the timed region; ours pool N×3×H×W inside it. Each time is the best of
--repeat runs; the last column is the largest difference between the two results (NaN-aware) on these
inputs, over the points both compute (pixel flipping: the curve points where Quantus, which removes
1024 of the 3·H·W channel values per step, has removed whole pixels).

sMPRT and eMPRT explain with the gradient summed over channels (ours: the registered ``gradient``;
Quantus: its own ``quantus.explain`` with method "Gradient", which SmoothMPRT calls whatever
``explain_func`` says), on the same model and images, batch --n-mprt for both unless --mprt-batch says
otherwise; Quantus runs with ``return_last_correlation``/``skip_layers`` so that both compute the same
number. Each has two rows: ours computing every map, and ours given the trained model's maps of the
clean images as the evaluate stage holds them (the attribute stage's cache; computed here outside the
timed region, channel-first as that stage does). A last line gives one explanation pass of each side
and the passes each runs, the floor of both times. SmoothMPRT's noise
comes from ``np.random.randn``, replaced during its call by a cycle over our draws (so both add the same
noise and the difference column means something; this spares Quantus its numpy draws, so its time is
a lower bound).

    python benchmarks/metrics.py --n 256 --size 128 --n-model 64 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from typing import Callable

import numpy as np
import torch
from scipy import stats
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity
from torch import nn

from salbench.attribution import METHODS
from salbench.metrics import (
    cascading_randomization,
    efficient_mprt,
    hog_cell_size,
    hog_similarity,
    pixel_perturbation,
    pointing_game,
    pool_channels,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    smooth_mprt,
    spearman,
    ssim,
)


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def max_diff(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.where(both_nan, 0.0, np.abs(a - b)).max())


def tiny_cnn(size: int, outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * size * size, outputs),
    ).eval()


def gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = images.detach().clone().requires_grad_(True)
    return torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)[0]


def grayscale(a: np.ndarray) -> np.ndarray:
    image = np.abs(a).sum(0)
    vmax, vmin = np.percentile(image, 99), image.min()
    return np.clip((image - vmin) / (vmax - vmin), 0, 1)


def diverging(a: np.ndarray) -> np.ndarray:
    image = a.sum(0)
    return np.clip(image / np.percentile(np.abs(image), 99), -1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="maps for the map-only metrics")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n-model", type=int, default=64, help="images for the metrics that run a model")
    ap.add_argument("--n-mprt", type=int, default=16, help="images for sMPRT and eMPRT")
    ap.add_argument("--mprt-samples", type=int, default=10, help="sMPRT noise samples (Quantus's default: 50)")
    ap.add_argument("--mprt-batch", type=int, default=None,
                    help="our images per explanation call in sMPRT/eMPRT (default --n-mprt, as Quantus's batch)")
    ap.add_argument("--only", nargs="*", default=None, help="run only the rows whose name contains one of these")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import quantus

    n, size = args.n, args.size
    g = torch.Generator().manual_seed(0)
    R = torch.randn(n, 3, size, size, generator=g)
    R2 = R + torch.randn(n, 3, size, size, generator=g)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i, (r, c, h, w) in enumerate(torch.randint(1, size // 2, (n, 4), generator=g).tolist()):
        masks[i, r : r + h, c : c + w] = True
    x_np = np.zeros((n, 3, size, size), dtype=np.float32)
    y_np = np.zeros(n, dtype=int)
    s_np = masks[:, None].numpy()
    model = tiny_cnn(size, 3)

    rows = []

    def wanted(name: str) -> bool:
        return args.only is None or any(key in name for key in args.only)

    def localisation(name: str, ours: Callable, reference: type, pooling: str) -> None:
        if not wanted(name):
            return
        pooled = pool_channels(R, pooling)[:, None].numpy()
        metric = reference(disable_warnings=True)
        t_ref, ref = best_time(
            lambda: metric(
                model=model, x_batch=x_np, y_batch=y_np, a_batch=pooled, s_batch=s_np, device="cpu", batch_size=n
            ),
            args.repeat,
        )
        t_ours, out = best_time(lambda: ours(R, masks, pooling=pooling), args.repeat)
        rows.append((f"{name} ({pooling}), N={n}", t_ours, t_ref, f"quantus.{reference.__name__}", max_diff(out, ref)))

    localisation("relevance_mass_accuracy", relevance_mass_accuracy, quantus.RelevanceMassAccuracy, "l2_sq")
    localisation("relevance_rank_accuracy", relevance_rank_accuracy, quantus.RelevanceRankAccuracy, "max_norm")
    localisation("pointing_game", pointing_game, quantus.PointingGame, "max_norm")

    def loop_reference(name: str, ours: Callable, reference: Callable) -> None:
        if not wanted(name):
            return
        a, b = R.numpy(), R2.numpy()
        t_ref, ref = best_time(lambda: [reference(p, q) for p, q in zip(a, b)], args.repeat)
        t_ours, out = best_time(lambda: ours(R, R2), args.repeat)
        rows.append((f"{name}, N={n}", t_ours, t_ref, reference.__doc__, max_diff(out, ref)))

    def scipy_spearman(p: np.ndarray, q: np.ndarray) -> float:
        """numpy normalisation + scipy.stats.spearmanr"""
        return stats.spearmanr(grayscale(p).ravel(), grayscale(q).ravel()).statistic

    def skimage_ssim(p: np.ndarray, q: np.ndarray) -> float:
        """numpy normalisation + skimage structural_similarity"""
        return structural_similarity(diverging(p), diverging(q), win_size=5, data_range=2)

    cell = hog_cell_size(size, size)

    def skimage_hog_spearman(p: np.ndarray, q: np.ndarray) -> float:
        """numpy normalisation + skimage hog + scipy.stats.spearmanr"""
        return stats.spearmanr(
            skimage_hog(grayscale(p), 8, cell, (1, 1)), skimage_hog(grayscale(q), 8, cell, (1, 1))
        ).statistic

    loop_reference("spearman (abs)", spearman, scipy_spearman)
    loop_reference("ssim (Sanity Checks)", ssim, skimage_ssim)
    loop_reference("hog_similarity", hog_similarity, skimage_hog_spearman)

    m = args.n_model
    images = torch.rand(m, 3, size, size, generator=g)
    flip_maps = torch.randn(m, 1, size, size, generator=g)
    targets = torch.zeros(m, dtype=torch.long)

    def pixel_flipping() -> None:
        per_step = 1024  # Quantus: features of the channel-broadcast map per step; must divide H·W
        steps = 3 * size * size // per_step
        flipping = quantus.PixelFlipping(
            features_in_step=per_step, normalise=False, perturb_baseline=0.0, disable_warnings=True
        )
        t_ref, ref = best_time(
            lambda: flipping(
                model=model,
                x_batch=images.numpy(),
                y_batch=targets.numpy(),
                a_batch=flip_maps.numpy(),
                device="cpu",
                batch_size=m,
                softmax=True,
            ),
            args.repeat,
        )
        t_ours, out = best_time(
            lambda: pixel_perturbation(model, images, flip_maps, targets, steps=steps + 1, baseline=0.0,
                                       pooling="sum", batch_size=m),
            args.repeat,
        )
        # Ours has steps + 1 points (the first unperturbed); after 3j of Quantus's steps it has removed the
        # top 1024·j pixels in every channel, as our point 3j does.
        whole = np.arange(3, steps + 1, 3)
        diff = max_diff(out.scores.numpy()[:, whole], np.asarray(ref)[:, whole - 1])
        rows.append((f"pixel_perturbation MoRF, {steps} steps, N={m}", t_ours, t_ref, "quantus.PixelFlipping", diff))

    def mprt() -> None:
        one_class = tiny_cnn(size, 1)

        def quantus_similarity(a: np.ndarray, b: np.ndarray, batched: bool = True) -> np.ndarray:
            a, b = (v.reshape(len(v), 3, size, size) for v in (a, b))
            return np.array(
                [stats.spearmanr(grayscale(p).ravel(), grayscale(q).ravel()).statistic for p, q in zip(a, b)]
            )

        def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
            return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

        metric = quantus.MPRT(
            similarity_func=quantus_similarity,
            layer_order="top_down",
            seed=0,
            abs=False,
            normalise=False,
            disable_warnings=True,
        )
        t_ref, ref = best_time(
            lambda: metric(
                model=one_class,
                x_batch=images.numpy(),
                y_batch=targets.numpy(),
                a_batch=None,
                explain_func=explain_func,
                device="cpu",
                batch_size=m,
            ),
            args.repeat,
        )
        t_ours, out = best_time(
            lambda: cascading_randomization(
                one_class, gradient, images, blocks=["5", "2", "0"], similarities=["spearman_abs"], seed=1,
                batch_size=m
            ),
            args.repeat,
        )
        diff = max_diff(out.similarity["spearman_abs"].numpy(), np.stack([ref[b] for b in ("5", "2", "0")]))
        rows.append(
            (f"cascading_randomization (3 blocks, spearman_abs), N={m}", t_ours, t_ref, "quantus.MPRT + scipy", diff)
        )

    k, samples, mprt_batch = args.n_mprt, args.mprt_samples, args.mprt_batch or args.n_mprt
    x_mprt, y_mprt = images[:k], targets[:k]
    quantus_gradient = {"explain_func": quantus.explain, "explain_func_kwargs": {"method": "Gradient"}}
    registered = METHODS.get("gradient")

    def gradient_sum(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return registered(model, images, targets, batch_size=len(images)).sum(1, keepdim=True)

    # The trained model's maps of the clean images as the evaluate stage holds them (the attribute stage's
    # cache, N×C×H×W, pooled by the metric), computed outside the timed region.
    cached = registered(model, x_mprt, y_mprt, batch_size=mprt_batch).sum(1, keepdim=True)

    notes = []

    def pass_note() -> None:
        """One explanation pass of the k images each side runs: Quantus's (quantus.explain, N×C×H×W numpy in,
        channel-first as given) and ours (the registered gradient in channels-last layout)."""
        if notes:
            return
        x_np, y_np, x_last = x_mprt.numpy(), y_mprt.numpy(), x_mprt.contiguous(memory_format=torch.channels_last)
        t_ref, _ = best_time(lambda: quantus.explain(model, x_np, y_np, method="Gradient", device="cpu"), args.repeat)
        t_ours, _ = best_time(lambda: gradient_sum(model, x_last, y_mprt), args.repeat)
        t_first, _ = best_time(lambda: gradient_sum(model, x_mprt, y_mprt), args.repeat)
        notes.append(f"one gradient pass of the {k} MPRT images: quantus.explain {t_ref * 1e3:.1f} ms, ours "
                     f"{t_ours * 1e3:.1f} ms (channels-last; {t_first * 1e3:.1f} ms channel-first); passes per "
                     f"call: sMPRT Quantus {3 * samples}, ours {2 * samples} ({2 * samples - 1} with cached maps); "
                     f"eMPRT Quantus 4, ours 2 (1)")

    def mprt_rows(name: str, reference: str, ref: tuple[float, object], ours: Callable[[torch.Tensor | None], object]
                  ) -> None:
        pass_note()
        t_ref, out_ref = ref
        for maps, label in ((None, ""), (cached, ", cached trained-model maps")):
            t_ours, out = best_time(lambda maps=maps: ours(maps), args.repeat)
            rows.append((f"{name}{label}, N={k}", t_ours, t_ref, reference, max_diff(out, out_ref)))

    def smooth() -> None:
        gen = torch.Generator().manual_seed(0)
        draws = [torch.randn(x_mprt.shape, generator=gen).numpy() for _ in range(samples - 1)]
        metric = quantus.SmoothMPRT(nr_samples=samples, seed=42, return_last_correlation=True, skip_layers=True,
                                    disable_warnings=True)

        def reference() -> list[float]:
            cycle, randn = itertools.cycle(draws), np.random.randn
            np.random.randn = lambda *shape: next(cycle)
            try:
                return metric(model=model, x_batch=x_mprt.numpy(), y_batch=y_mprt.numpy(), a_batch=None,
                              device="cpu", batch_size=k, **quantus_gradient)
            finally:
                np.random.randn = randn

        mprt_rows(f"sMPRT smooth_mprt ({samples} noise samples)", "quantus.SmoothMPRT",
                  best_time(reference, args.repeat), lambda maps: smooth_mprt(model, gradient_sum, x_mprt, y_mprt, samples=samples, noise_seed=0,
                                           batch_size=mprt_batch, maps=maps))

    def efficient() -> None:
        metric = quantus.EfficientMPRT(seed=42, disable_warnings=True)
        reference = best_time(
            lambda: metric(model=model, x_batch=x_mprt.numpy(), y_batch=y_mprt.numpy(), a_batch=None, device="cpu",
                           batch_size=k, **quantus_gradient),
            args.repeat,
        )
        mprt_rows("eMPRT efficient_mprt", "quantus.EfficientMPRT", reference,
                  lambda maps: efficient_mprt(model, gradient_sum, x_mprt, y_mprt, batch_size=mprt_batch, maps=maps))

    for name, row in (("pixel_perturbation", pixel_flipping), ("cascading_randomization", mprt),
                      ("sMPRT smooth_mprt", smooth),
                      ("eMPRT efficient_mprt", efficient)):
        if wanted(name):
            row()

    print(f"maps {size}x{size}, torch threads {args.threads}, best of {args.repeat}; speed-up = reference time / ours")
    print(f"{'metric':58s} {'ours ms':>9s} {'ref ms':>9s} {'speed-up':>9s}  {'max |diff|':>10s}  reference")
    for name, ours_t, ref_t, ref_name, diff in rows:
        print(f"{name:58s} {ours_t * 1e3:9.1f} {ref_t * 1e3:9.1f} {ref_t / ours_t:8.1f}x  {diff:10.1e}  {ref_name}")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
