"""A tiny fabricated evaluation setup: 32 px images with one bright square (the GT), tiny timm models,
and cached maps written through the attribution cache exactly as the attribute stage keys them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from salbench.attribution import attribute_many, build
from salbench.attribution.cache import cache_key, save_maps
from salbench.io import file_hash, save_shard
from salbench.models import build_model, save_checkpoint

SIZE, N, CLASSES = 32, 8, ["a", "b", "c"]
METHODS = {"gradient": {}, "gradcam": {}, "gradcam@1": {"method": "gradcam", "layer": {"cnn": "layer1",
           "vit": "blocks.0.norm1"}}, "lrp": {"families": ["cnn"]}, "random": {}}
SPECS = {"cnn": {"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 16, 16]}},
         "vit": {"arch": "vit-tiny", "kwargs": {"patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}}}
# Every metric on tiny counts; "gradient" is not in the fresh-map lists so that its cached maps (the GT
# mask, see write_setup) are scored on their own.
EVALUATE: dict[str, Any] = {
    "seed": 0, "device": "cpu", "batch_size": 8, "n_boot": 50, "examples": 2,
    "metrics": {
        "mass_accuracy": {"sweep": {"pooling": ["sum_abs", "sum_pos", "max_norm", "l1", "l2", "l2_sq"]}},
        "rank_accuracy": {"sweep": {"pooling": ["sum_abs", "sum_pos", "max_norm", "l1", "l2", "l2_sq"]}},
        "pointing_game": {"tolerance": 0},
        "cascading_randomization": {"samples": 3, "methods": ["gradcam", "lrp"], "similarities": ["spearman_abs", "ssim"]},
        "independent_randomization": {"samples": 3, "methods": ["gradcam"], "similarities": ["spearman_abs"]},
        "data_randomization": {"samples": 3, "methods": ["gradcam"], "similarities": ["spearman_abs"]},
        "cose": {"samples": 4, "per_image": 1, "methods": ["gradcam"], "transforms": ["hflip", "brightness"]},
        "class_sensitivity": {"samples": 3, "methods": ["gradcam", "random"]},
        "aopc": {"samples": 6, "steps": 3, "patch": 8, "sweep": {"order": ["morf", "lerf"]}},
    },
    "layer_study": {"entries": {"gradcam": ["gradcam@1", "gradcam"]}, "metrics": {"mass_accuracy": {"pooling": "l1"}}},
    "meta_saliency": {"lr": 0.01, "samples": 2, "methods": ["gradcam"],
                      "metrics": {"mass_accuracy": {"pooling": "l1"}, "class_sensitivity": {}}},
}
ATTRIBUTE = {"seed": 0, "device": "cpu", "batch_size": 8, "split": "test", "checkpoint": "final",
             "explain": "predicted", "methods": METHODS}


def tiny_model(family: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(SPECS[family], len(CLASSES), SIZE).eval()


def fake_split(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (N, SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((N, SIZE, SIZE), dtype=bool)
    for i, (r, c) in enumerate(rng.integers(0, SIZE - 8, (N, 2))):
        mask[i, r:r + 8, c:c + 8] = True
    images[mask] = 230
    return {"images": images, "gt_mask": mask, "label": np.zeros(N, dtype=np.int64)}


def write_setup(root: Path, family: str = "cnn") -> dict[str, Any]:
    """render/test.safetensors, models/t/m/{final, random_labels, random_init, checkpoints/epoch_1} and maps/
    for METHODS; labels are the final model's predictions except sample 0 (misclassified on purpose), and
    the "gradient" entry's cached maps are the GT mask."""
    model = tiny_model(family, 0)
    split = fake_split()
    x = torch.from_numpy(split["images"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        predicted = model(x).argmax(1)
    split["label"] = predicted.numpy().copy()
    split["label"][0] = (split["label"][0] + 1) % len(CLASSES)
    save_shard(root / "render" / "test.safetensors", split)
    base = {"task": "t", "classes": CLASSES, "accuracy": {}, "params_hash": "x", "seed": 0, "versions": {}}
    model_dir = root / "models" / "t" / "m"
    for sub, seed in (("final", None), ("random_labels", 1), ("random_init", 2), ("checkpoints/epoch_1", 3)):
        save_checkpoint(model_dir / sub, model if seed is None else tiny_model(family, seed), base)
    model_hash = file_hash(model_dir / "final" / "model.safetensors")
    built = {n: build(n, e, family) for n, e in METHODS.items()}
    built = {n: b for n, b in built.items() if b is not None}
    maps = attribute_many(model, x, predicted, [b for b in built.values()], batch_size=8)
    for (name, (method, params)), m in zip(built.items(), maps):
        if name == "gradient":
            m = torch.from_numpy(split["gt_mask"]).float()[:, None].expand(-1, 3, -1, -1)
        layer = ",".join(method.layers(model, **params)) or None
        save_maps(root / "maps" / name, m, predicted, model_hash=model_hash, method=name, params=METHODS[name],
                  layer=layer, seed=0)
        assert cache_key(model_hash, name, METHODS[name], layer, predicted, 0)  # the stage recomputes this key
    return {"model": model, "x": x, "split": split, "predicted": predicted, "model_dir": model_dir}
