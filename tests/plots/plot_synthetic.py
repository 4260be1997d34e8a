"""A synthetic results table (every metric kind, by the conventions of salbench.results) and example arrays,
written where the evaluate stage writes them: figures render from these alone, no model involved."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from salbench.io import save_shard, write_json
from salbench.results import role, variant, write_results

METHODS = ["gradient", "gradcam", "normgrad", "random", "edge"]
POOLINGS = ["sum_abs", "l1", "l2_sq"]
BLOCKS = ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
LAYERS = {"gradcam": ["layer1", "layer2", "layer3", "layer4"], "normgrad": ["layer1", "layer2", "layer3", "layer4"]}
SIZE, EXAMPLES = 16, 2


def _row(task: str, model: str, family: str, method: str, metric: str, settings: dict[str, Any] | None = None,
         statistic: str = "value", mean: float = 0.5, step: float = math.nan, step_label: str = "",
         n: int = 7) -> dict[str, Any]:
    return {"task": task, "model": model, "family": family, "method": method, "role": role(method), "metric": metric,
            "variant": variant(settings or {}), "statistic": statistic, "step": step, "step_label": step_label,
            "mean": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05, "n": n, "n_undefined": 1}


def rows(task: str, model: str, family: str, poolings: list[str] = POOLINGS) -> list[dict[str, Any]]:
    """Rows of every metric kind for METHODS; mean values are fixed fractions so figures have data."""
    out = [_row(task, model, family, "", "accuracy", mean=0.875, n=8)]
    for i, m in enumerate(METHODS):
        r = lambda *a, **k: _row(task, model, family, m, *a, **k)  # noqa: E731
        v = (i + 1) / (len(METHODS) + 1)
        out += [r(metric, {"pooling": p}, mean=v) for metric in ("mass_accuracy", "rank_accuracy") for p in poolings]
        out.append(r("pointing_game", mean=v))
        for order in ("morf", "lerf"):
            out.append(r("aopc", {"order": order}, mean=v / 3))
            out += [r("perturbation_curve", {"order": order}, "score", 0.9 - f * v, step=f) for f in (0.0, 0.5, 1.0)]
        for metric in ("cascading_randomization", "independent_randomization"):
            out += [r(metric, None, sim, v / (s + 1), step=float(s + 1), step_label=f"net.{b}")
                    for sim in ("spearman_abs", "ssim") for s, b in enumerate(BLOCKS)]
        out += [r("data_randomization", None, sim, v) for sim in ("spearman_abs", "ssim")]
        for split in ("geometric", "photometric", "model_change", "all"):
            out += [r("cose", {"split": split}, st, x) for st, x in (("C", v), ("S", 1.2 - v), ("cose", 0.6))]
        out.append(r("class_sensitivity", mean=v - 0.3))
        for kind in ("plain", "meta"):
            out.append(r("mass_accuracy", {"pooling": "l1", "saliency": kind}, mean=v))
            out.append(r("class_sensitivity", {"saliency": kind}, mean=v - 0.2))
    for group, layers in LAYERS.items():
        for s, layer in enumerate(layers, start=1):
            out.append(_row(task, model, family, group, "mass_accuracy", {"layer_study": 1, "pooling": "l1"},
                            mean=s / 5, step=float(s), step_label=layer))
            out.append(_row(task, model, family, group, "pointing_game", {"layer_study": 1}, mean=s / 5,
                            step=float(s), step_label=layer))
    return out


def examples(seed: int = 0) -> dict[str, np.ndarray]:
    """The example arrays of one run, as the evaluate stage writes them."""
    rng = np.random.default_rng(seed)
    out = {"images": rng.random((EXAMPLES, 3, SIZE, SIZE), dtype=np.float32),
           "masks": rng.random((EXAMPLES, SIZE, SIZE)) > 0.7,
           "labels": np.arange(EXAMPLES), "predictions": np.arange(EXAMPLES)}
    for m in METHODS:
        out[f"map/{m}"] = rng.random((EXAMPLES, SIZE, SIZE), dtype=np.float32)
        out[f"cascade/{m}"] = rng.random((EXAMPLES, len(BLOCKS) + 1, SIZE, SIZE), dtype=np.float32)
    for group, layers in LAYERS.items():
        for s in range(1, len(layers) + 1):
            out[f"layer/{group}/{s}"] = rng.random((EXAMPLES, SIZE, SIZE), dtype=np.float32)
    return out


def write_data(root: Path, task: str, models: dict[str, str], poolings: list[str] = POOLINGS) -> None:
    """data/results/<task>/<model>.csv and data/evaluate/<task>/<model>/examples.safetensors under ``root``
    for models {name: family}."""
    for k, (model, family) in enumerate(models.items()):
        write_results(root / "results" / task / f"{model}.csv", rows(task, model, family, poolings))
        save_shard(root / "evaluate" / task / model / "examples.safetensors", examples(k))


VQA_METHODS = ["lrp", "integrated_gradients", "gradient_x_input", "random"]
VQA_POOLINGS = ["max_norm", "l2_sq", "l1"]
K, QUESTIONS = 3, 12  # questions per example image; questions in the split
ANSWERS = ["no", "yes", "0", "1", "2", "red", "blue", "cube", "sphere"]


def vqa_rows(task: str, model: str, gts: tuple[str, ...]) -> list[dict[str, Any]]:
    """The contract's VQA rows: answer accuracy (all and per family), mass / rank accuracy per gt=<kind>,pooling=<p>,
    pointing game per GT kind and question sensitivity; LRP > IG > G×I by construction."""
    out = [_row(task, model, "cnn", "", "accuracy", mean=0.9, n=40),
           _row(task, model, "cnn", "", "accuracy", {"family": "query_color"}, mean=0.95, n=20)]
    for i, m in enumerate(VQA_METHODS):
        v = 0.8 - 0.2 * i
        r = lambda *a, **k: _row(task, model, "cnn", m, *a, **k)  # noqa: E731
        for j, gt in enumerate(gts):
            out += [r(metric, {"gt": gt, "pooling": p}, mean=v - 0.05 * j) for metric in ("mass_accuracy",
                                                                                    "rank_accuracy")
                    for p in VQA_POOLINGS]
            out.append(r("pointing_game", {"gt": gt, "pooling": "max_norm", "tolerance": 0}, mean=v))
        out.append(r("question_sensitivity", mean=0.0 if m == "random" else 0.2 + 0.1 * i, n=15))
    return out


def vqa_examples(gts: tuple[str, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """The contract's VQA example arrays (E images × K questions); the first GT kind is empty for question 1 (the
    outline falls back to the next kind)."""
    rng = np.random.default_rng(seed)
    out = {"vqa/images": rng.random((EXAMPLES, 3, SIZE, SIZE), dtype=np.float32),
           "vqa/question_index": np.arange(EXAMPLES * K, dtype=np.int64).reshape(EXAMPLES, K),
           "vqa/answers": rng.integers(0, len(ANSWERS), (EXAMPLES, K)),
           "vqa/predictions": rng.integers(0, len(ANSWERS), (EXAMPLES, K))}
    for m in VQA_METHODS:
        out[f"vqa/map/{m}"] = rng.random((EXAMPLES, K, SIZE, SIZE), dtype=np.float32)
    for j, gt in enumerate(gts):
        mask = np.zeros((EXAMPLES, K, SIZE, SIZE), dtype=bool)
        mask[..., 4:8 + 2 * j, 4:8 + 2 * j] = True
        mask[:, 1] = mask[:, 1] & (j > 0)
        out[f"vqa/gt/{gt}"] = mask
    return out


def write_vqa_data(root: Path, task: str, models: list[str], gts: tuple[str, ...]) -> None:
    """A VQA task's results tables and examples per model, and data/render/<task>/{test_questions,vqa}.json."""
    for k, model in enumerate(models):
        write_results(root / "results" / task / f"{model}.csv", vqa_rows(task, model, gts))
        save_shard(root / "evaluate" / task / model / "examples.safetensors", vqa_examples(gts, k))
    write_json(root / "render" / task / "test_questions.json",
               [{"image_index": i // 4, "question": f"What colour is the large metal thing number {i}?",
                 "program": []} for i in range(QUESTIONS)])
    write_json(root / "render" / task / "vqa.json", {"answers": ANSWERS})
