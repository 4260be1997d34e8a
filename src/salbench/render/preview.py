"""Preview grids of rendered images and their ground-truth masks (PNG, for `dvc plots`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_file

# Distinct outline colours for instance ids 1..10 (tab10).
_PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8
)


def grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Tile N×H×W×3 into one image with ``cols`` columns and 2-px white gutters."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        out[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = images[k]
    return out


def overlay(images: np.ndarray, instance: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dim everything outside the GT mask and tint each object's pixels by its instance id."""
    out = images.astype(np.float32)
    tint = _PALETTE[(instance.astype(np.int64) - 1) % len(_PALETTE)].astype(np.float32)
    obj = (instance > 0)[..., None]
    out = np.where(obj, 0.6 * out + 0.4 * tint, out)
    out = np.where(gt[..., None], out, 0.35 * out)
    return out.round().astype(np.uint8)


def write_previews(out_dir: str | Path, arrays: dict[str, np.ndarray], n: int = 16, cols: int = 4) -> None:
    """``images.png`` (first ``n`` images) and ``gt_masks.png`` (objects tinted, non-GT dimmed)."""
    from PIL import Image

    out_dir = Path(out_dir)
    sl = slice(0, n)
    pics = {
        "images.png": grid(arrays["images"][sl], cols),
        "gt_masks.png": grid(overlay(arrays["images"][sl], arrays["instance"][sl], arrays["gt_mask"][sl]), cols),
    }
    for name, pic in pics.items():
        with atomic_file(out_dir / name, "wb") as f:
            Image.fromarray(pic).save(f, format="PNG")
