"""``python -m salbench.data export --task-dir data/render/<task> --out DIR``: a rendered task as an image
folder; ``python -m salbench.data check --root DIR [--csv F] [--masks M] [--image-size S]``: check a folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import cli
from . import FolderSpec, export_task, scan_folder


@cli
def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m salbench.data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="a rendered task as PNGs + mask PNGs + labels.csv")
    ex.add_argument("--task-dir", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    ck = sub.add_parser("check", help="check an image folder as the import stage does")
    ck.add_argument("--root", required=True)
    ck.add_argument("--csv")
    ck.add_argument("--masks")
    ck.add_argument("--image-size", type=int)
    args = ap.parse_args()
    if args.cmd == "export":
        n = export_task(args.task_dir, args.out, tuple(args.splits))
        print(f"exported {n} images -> {args.out}")
    else:
        items, classes, size = scan_folder(FolderSpec(Path(args.root), args.csv, args.masks, args.image_size))
        print(f"ok: {len(items)} images, {len(classes)} classes {classes}, {size} px")


if __name__ == "__main__":
    main()
