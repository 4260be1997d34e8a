"""DVC stage `import@<task>`: an image folder (params.yaml `folders.<task>`) as a task in the render format.

Writes data/render/<task>/{train,val,test}.safetensors (images, label, gt_mask[, concepts]) and manifest.json
(classes, resolution, has_masks), so train, attribute and evaluate read it as a rendered task. Every file is
checked first; a bad one stops the stage with `error: <file>: ...` before any array is built.
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("import")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import time
from pathlib import Path

from salbench.data import FolderSpec, import_folder
from salbench.errors import cli
from salbench.params import ParamsError, load_params, section


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True, help="task name from params.yaml folders")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="default: data/render/<task>")
    args = ap.parse_args()

    folders = section(load_params(args.params), "folders")
    if args.task not in folders:
        raise ParamsError(f"unknown folder task {args.task!r}; params.yaml folders has {sorted(folders)}")
    t0 = time.perf_counter()
    out = Path(args.out or f"data/render/{args.task}")
    manifest = import_folder(args.task, FolderSpec.from_params(folders[args.task]), out, folders[args.task])
    n = {s: c["n"] for s, c in manifest["splits"].items()}
    print(f"imported {sum(n.values())} images {n} of {args.task} ({manifest['resolution']} px, "
          f"masks: {manifest['has_masks']}) in {time.perf_counter() - t0:.1f} s -> {out}")


if __name__ == "__main__":
    main()
