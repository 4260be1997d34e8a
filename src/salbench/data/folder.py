"""Import an image folder as a task: the split shards, manifest and classes the render stage writes.

Sources, under ``root`` (params.yaml ``folders.<task>``):

- ImageFolder layout ``<root>/<split>/<class>/<name>.png|jpg|jpeg`` (split in train, val, test; images in a
  split are ordered by file name, then class);
- or a CSV (``csv``: a file under root) with a header and columns ``path,label`` (paths relative to root),
  optional ``split`` (default test), ``mask`` (a mask PNG relative to root) and the concept columns named in
  ``concepts`` (numbers; DEPICT's concept labels), in row order.

GT masks: a ``mask`` CSV column, or ``masks`` (a folder under root holding ``<same relative path>.png``); any
non-zero pixel is in the mask; a mask must have its image's size. Without masks ``gt_mask`` is all False and
the manifest says ``has_masks: false`` (evaluate then skips the GT metrics). Images are RGB uint8; all must
share one square size unless ``image_size`` is given (then images are resized with ``interpolation``, default
bilinear, masks by nearest; the manifest records it, and an external model must state the same).
Every file is checked (label, size, readable) before any array is built: a bad one raises naming the file.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SalbenchError
from ..io import atomic_dir, provenance, save_shard, write_json
from ..render.dataset import SPLITS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class FolderError(SalbenchError, ValueError):
    """A bad image folder: the message names the file and the fix."""


@dataclass(frozen=True)
class FolderSpec:
    """params.yaml ``folders.<task>``; paths ``csv`` and ``masks`` are relative to ``root``."""

    root: Path
    csv: str | None = None
    masks: str | None = None
    image_size: int | None = None
    classes: tuple[str, ...] | None = None
    concepts: tuple[str, ...] = ()
    interpolation: str = "bilinear"

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> FolderSpec:
        return cls(Path(p["root"]), p.get("csv"), p.get("masks"), p.get("image_size"),
                   tuple(p["classes"]) if p.get("classes") else None, tuple(p.get("concepts") or ()),
                   p.get("interpolation", "bilinear"))


@dataclass(frozen=True)
class Item:
    split: str
    path: str  # relative to root
    label: str
    mask: str | None  # relative to root
    concepts: tuple[float, ...] = ()


def _rows(spec: FolderSpec) -> list[Item]:
    table = spec.root / spec.csv  # type: ignore[operator]
    try:
        with open(table, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FolderError(f"{table}: cannot read the CSV ({e})") from None
    missing = [c for c in ("path", "label", *spec.concepts) if c not in header]
    if missing:
        raise FolderError(f"{table}: no column(s) {missing} (the header has {header}); the CSV needs path,label "
                          "and every column named in concepts")
    items = []
    for line, r in enumerate(rows, start=2):
        where = f"{table} line {line}"
        if not r["path"] or not r["label"]:
            raise FolderError(f"{where}: missing {'path' if not r['path'] else 'label'} (for {r['path']!r}); "
                              "give every row a path and a label")
        split = r.get("split") or "test"
        if split not in SPLITS:
            raise FolderError(f"{where}: split {split!r} is not one of {list(SPLITS)}")
        try:
            values = tuple(float(r[c]) for c in spec.concepts)
        except ValueError:
            raise FolderError(f"{where}: concept columns {list(spec.concepts)} must be numbers, got "
                              f"{[r[c] for c in spec.concepts]}") from None
        mask = r.get("mask") or (_mask_path(spec, r["path"]) if spec.masks else None)
        items.append(Item(split, r["path"], r["label"], mask, values))
    return items


def _mask_path(spec: FolderSpec, rel: str) -> str:
    return str(Path(spec.masks) / Path(rel).with_suffix(".png"))  # type: ignore[arg-type]


def _layout(spec: FolderSpec) -> list[Item]:
    if spec.concepts:
        raise FolderError(f"{spec.root}: concept columns need a CSV (csv: <file>); the folder layout has none")
    items = []
    for split in SPLITS:
        files = [f for f in (spec.root / split).glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        for f in sorted(files, key=lambda f: (f.name, f.parent.name)):
            rel = str(f.relative_to(spec.root))
            items.append(Item(split, rel, f.parent.name, _mask_path(spec, rel) if spec.masks else None))
    stray = [f for f in spec.root.glob("*/*/*") if f.is_file() and f.parts[-3] in SPLITS
             and f.suffix.lower() not in IMAGE_SUFFIXES]
    if stray:
        raise FolderError(f"{stray[0]}: not an image ({', '.join(IMAGE_SUFFIXES)}); remove it or use a CSV")
    if not items:
        raise FolderError(f"{spec.root}: no images in <root>/<split>/<class>/ for any split {list(SPLITS)}; "
                          "use that layout or give csv: <file with path,label[,split]>")
    return items


def scan_folder(spec: FolderSpec) -> tuple[list[Item], list[str], int]:
    """(items, classes, image size), every file checked: readable, labelled, masks of their image's size."""
    if not spec.root.is_dir():
        raise FolderError(f"{spec.root}: no such folder (folders.<task>.root)")
    items = _rows(spec) if spec.csv else _layout(spec)
    found = sorted({i.label for i in items})
    classes = list(spec.classes) if spec.classes else found
    unknown = [i for i in items if i.label not in classes]
    if unknown:
        raise FolderError(f"{spec.root / unknown[0].path}: label {unknown[0].label!r} is not among classes "
                          f"{classes}; add it to folders.<task>.classes")
    if not any(i.split == "test" for i in items):
        raise FolderError(f"{spec.root}: no test images; the attribute and evaluate stages read the test split")
    sizes = set()
    for it in items:
        w, h = _size(spec.root / it.path, "image")
        if spec.image_size is None and w != h:
            raise FolderError(f"{spec.root / it.path}: {w}x{h} is not square; set folders.<task>.image_size to "
                              "resize every image")
        sizes.add(w)
        if it.mask is not None:
            mw, mh = _size(spec.root / it.mask, "mask")
            if (mw, mh) != (w, h):
                raise FolderError(f"{spec.root / it.mask}: mask is {mw}x{mh} but its image {it.path} is {w}x{h}; "
                                  "give each mask its image's size")
    if spec.image_size is None and len(sizes) > 1:
        raise FolderError(f"{spec.root}: images of sizes {sorted(sizes)} px; set folders.<task>.image_size")
    return items, classes, int(spec.image_size or sizes.pop())


def _size(path: Path, what: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FolderError(f"{path}: no such {what} file")
    try:
        with Image.open(path) as im:
            im.verify()
            return im.size
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise FolderError(f"{path}: unreadable {what} ({e}); replace or remove it") from None


def _read(path: Path, size: int, mask: bool, interpolation: str = "bilinear") -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if mask else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.NEAREST if mask else getattr(Image, interpolation.upper()))
            a = np.asarray(im)
    except OSError as e:
        raise FolderError(f"{path}: unreadable ({e}); replace or remove it") from None
    return a > 0 if mask else a


def load_items(spec: FolderSpec, items: list[Item], classes: list[str], size: int) -> dict[str, dict[str, np.ndarray]]:
    """Split -> arrays as the renderer writes them: images N×S×S×3 uint8, label N int64, gt_mask N×S×S bool
    (and concepts N×K float32 when concept columns are given)."""
    out = {}
    index = {c: k for k, c in enumerate(classes)}
    for split in SPLITS:
        its = [i for i in items if i.split == split]
        arrays = {
            "images": np.zeros((len(its), size, size, 3), np.uint8),
            "label": np.array([index[i.label] for i in its], dtype=np.int64),
            "gt_mask": np.zeros((len(its), size, size), bool),
        }
        for k, it in enumerate(its):
            arrays["images"][k] = _read(spec.root / it.path, size, mask=False, interpolation=spec.interpolation)
            if it.mask is not None:
                arrays["gt_mask"][k] = _read(spec.root / it.mask, size, mask=True)
        if spec.concepts:
            arrays["concepts"] = np.array([i.concepts for i in its], np.float32).reshape(len(its), len(spec.concepts))
        out[split] = arrays
    return out


def import_folder(task: str, spec: FolderSpec, out: str | Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check every file, then write ``out``/{train,val,test}.safetensors and manifest.json atomically (the
    render stage's layout, without instance/depth arrays or scenes); returns the manifest."""
    items, classes, size = scan_folder(spec)  # every check before any array is built
    has_masks = any(i.mask is not None for i in items)
    splits = load_items(spec, items, classes, size)
    counts = {s: {"n": len(a["label"]), "class_counts": dict(zip(classes, np.bincount(
        a["label"], minlength=len(classes)).tolist()))} for s, a in splits.items()}
    manifest = {"task": task, "classes": classes, "resolution": size, "splits": counts, "source": "folder",
                "has_masks": has_masks, "concepts": list(spec.concepts),
                "interpolation": spec.interpolation if spec.image_size else None, "provenance": provenance({"folder": params})}
    with atomic_dir(out) as tmp:
        for split, arrays in splits.items():
            save_shard(tmp / f"{split}.safetensors", arrays)
        write_json(tmp / "manifest.json", manifest)
    return manifest
