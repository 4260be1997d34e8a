"""A tiny task in the render stage's format: 32 px noise with one bright square (the GT) per image."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from salbench.io import save_shard, write_json

CLASSES, SIZE = ["a", "b", "c"], 32
SIZES = {"train": 24, "val": 6, "test": 9}


def fake_split(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = rng.integers(0, 90, (n, SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i, (r, c) in enumerate(rng.integers(0, SIZE - 8, (n, 2))):
        mask[i, r:r + 8, c:c + 8] = True
        images[i, r:r + 8, c:c + 8, label[i]] = 240  # the square's colour is the label
    return {"images": images, "label": label, "gt_mask": mask}


def write_task(task_dir: Path) -> Path:
    for i, (split, n) in enumerate(SIZES.items()):
        save_shard(task_dir / f"{split}.safetensors", fake_split(n, i))
    write_json(task_dir / "manifest.json", {"task": task_dir.name, "classes": CLASSES, "resolution": SIZE})
    return task_dir


def tiny_cnn(num_classes: int = 3, width: int = 4):
    """An entry point (``data_helpers:tiny_cnn``) returning a plain nn.Module: conv-ReLU-conv-ReLU-pool-linear."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
