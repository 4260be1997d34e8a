"""A tiny, learnable fake task in the render stage's artifact format (see docs/CONTRIBUTING.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from salbench.io import save_shard, write_json

CLASSES = ["red", "green", "blue", "yellow"]
PALETTE = np.array([(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40)], dtype=np.uint8)
SIZE, SQUARE = 32, 8


def fake_split(n: int, seed: int) -> dict[str, np.ndarray]:
    """n images SIZE×SIZE×3: noisy grey with one SQUARE-px square whose colour is the label."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    top = rng.integers(0, SIZE - SQUARE + 1, size=(n, 2))
    r = np.arange(SIZE)
    rows = (r[None] >= top[:, :1]) & (r[None] < top[:, :1] + SQUARE)  # n×SIZE
    cols = (r[None] >= top[:, 1:]) & (r[None] < top[:, 1:] + SQUARE)
    mask = rows[:, :, None] & cols[:, None, :]  # n×SIZE×SIZE
    grey = np.clip(rng.normal(120, 12, size=(n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    images = np.where(mask[..., None], PALETTE[label][:, None, None, :], grey)
    return {"images": images, "label": label, "gt_mask": mask}


def write_fake_task(task_dir: Path, sizes: dict[str, int] | None = None) -> Path:
    sizes = sizes or {"train": 128, "val": 16, "test": 32}
    task_dir.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(sizes.items()):
        save_shard(task_dir / f"{split}.safetensors", fake_split(n, seed=i))
    write_json(task_dir / "manifest.json", {"task": task_dir.name, "classes": CLASSES, "resolution": SIZE})
    return task_dir


@pytest.fixture(scope="session")
def fake_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_task(tmp_path_factory.mktemp("render") / "fake")


@pytest.fixture(scope="session")
def fake_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 uint8 images 32×32×3 and their int64 labels."""
    d = fake_split(16, seed=7)
    return torch.from_numpy(d["images"]), torch.from_numpy(d["label"])
