"""Export a rendered task as an image folder: PNG images, GT mask PNGs and a labels CSV (lossless)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..io import atomic_dir
from ..render.dataset import SPLITS, load_manifest, load_split


def export_task(task_dir: str | Path, out: str | Path, splits: tuple[str, ...] = SPLITS) -> int:
    """Write ``out``/<split>/<class>/<i:06d>.png, masks ``out``/masks/<split>/<class>/<i:06d>.png (0/255) and
    ``out``/labels.csv (path,label,split,mask in split order), so that both the folder layout and the CSV
    import give back the same arrays; returns the number of images."""
    from PIL import Image

    classes = load_manifest(task_dir)["classes"]
    n = 0
    with atomic_dir(out) as tmp, open(tmp / "labels.csv", "w", newline="") as f:
        table = csv.writer(f, lineterminator="\n")
        table.writerow(["path", "label", "split", "mask"])
        for split in splits:
            arrays = load_split(task_dir, split)
            for i, (img, label, mask) in enumerate(zip(arrays["images"], arrays["label"], arrays["gt_mask"])):
                rel = Path(split) / classes[label] / f"{i:06d}.png"
                for path, a in ((tmp / rel, img), (tmp / "masks" / rel, mask.astype(np.uint8) * 255)):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(a).save(path)
                table.writerow([rel.as_posix(), classes[label], split, (Path("masks") / rel).as_posix()])
                n += 1
    return n
