"""Render a task's splits into shards: images, instance masks, depth, labels, GT masks, scene records."""
from __future__ import annotations

import multiprocessing as mp
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import SalbenchError
from ..io import check_shard, load_shard, read_json, require
from .scene import annotate_pixels, build_record, caption
from .tasks import Task, TaskError, build_task
from .world import World

SPLITS = ("train", "val", "test")
STAGE = "render"


class RenderError(SalbenchError, RuntimeError):
    """A scene that could not be sampled within the tries allowed."""


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())


def split_labels(n: int, n_classes: int, seed: int, split: str) -> np.ndarray:
    """Class-balanced labels that grow by prefix: consecutive blocks of ``n_classes`` images each hold every
    class once, in an order seeded by (seed, split, block). So label ``i`` does not depend on ``n``, and the
    class counts of every prefix (any split size) differ by at most one."""
    blocks = [np.random.default_rng([seed, _split_code(split), b]).permutation(n_classes)
              for b in range(-(-n // n_classes))]
    return np.concatenate(blocks or [np.zeros(0, np.int64)])[:n].astype(np.int64)


def sample_scene(renderer: Any, world: World, task: Task, rng: np.random.Generator, label: int, split: str) -> tuple[dict, np.ndarray]:
    """A scene record with the given label whose objects each keep ``min_pixels`` visible pixels."""
    for _ in range(world.max_tries):
        rec = build_record(rng, world, task.sample_objects(rng, label, split))
        if rec is None:
            continue
        inst = renderer.instance(rec)
        counts = np.bincount(inst.reshape(-1), minlength=len(rec["objects"]) + 1)[1:]
        if counts.min() >= world.min_pixels:
            return rec, inst
    raise RenderError(
        f"no {task.name} scene with label {task.classes[label]!r} after render.max_tries={world.max_tries} "
        f"attempts kept every object at >= render.min_pixels={world.min_pixels} visible pixels; lower "
        "min_pixels, max_objects or min_distance, or raise max_tries"
    )


# Per-process state for pool workers (each needs its own OpenGL context).
_STATE: dict[str, Any] = {}


def _init_worker(world: World, task_name: str, task_params: Mapping[str, Any], seed: int) -> None:
    from .renderer import get_renderer

    _STATE.update(world=world, task=build_task(task_name, world, task_params), seed=seed,
                  renderer=get_renderer(world.resolution))


def _render_index(job: tuple[str, int, int]) -> dict[str, Any]:
    split, i, label = job
    s = _STATE
    rng = np.random.default_rng([s["seed"], _split_code(split), i])
    rec, inst = sample_scene(s["renderer"], s["world"], s["task"], rng, label, split)
    rgb, depth = s["renderer"].color(rec)
    rec = annotate_pixels(rec, inst)
    rec["caption"] = caption(rec)
    got = s["task"].label(rec)
    if got != label:  # the sampler and the rule disagree: a bug, never a silent relabel
        raise TaskError(f"{s['task'].name}: sampled label {label} but the rule gives {got} for {rec}")
    gt = np.isin(inst, np.array(s["task"].relevant(rec), dtype=np.int64) + 1)
    return {"rgb": rgb, "instance": inst, "depth": depth.astype(np.float16), "gt": gt, "record": rec}


def render_splits(
    world: World, task_name: str, task_params: Mapping[str, Any], sizes: Mapping[str, int], seed: int,
    workers: int = 1, progress: bool = False,
) -> Iterator[tuple[str, dict[str, np.ndarray], list[dict]]]:
    """Render each split: yields (split, arrays, records) with arrays images N×H×W×3 uint8,
    instance N×H×W uint8, depth N×H×W float16, label N int64, gt_mask N×H×W bool.

    Image ``i`` of a split depends only on (seed, split, i), so outputs are identical for any ``workers``.
    """
    task = build_task(task_name, world, task_params)
    init = (world, task_name, task_params, seed)
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=init) if workers > 1 else None
    if pool is None:
        _init_worker(*init)
    try:
        for split, n in sizes.items():
            labels = split_labels(n, len(task.classes), seed, split)
            jobs = [(split, i, lab) for i, lab in enumerate(labels.tolist())]
            results: Iterator[dict[str, Any]] = pool.imap(_render_index, jobs, chunksize=4) if pool else map(_render_index, jobs)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=n, desc=f"render {task_name}/{split}", unit="img")
            out = list(results)
            arrays = {
                "images": np.stack([o["rgb"] for o in out]),
                "instance": np.stack([o["instance"] for o in out]),
                "depth": np.stack([o["depth"] for o in out]),
                "label": labels.astype(np.int64),
                "gt_mask": np.stack([o["gt"] for o in out]),
            }
            yield split, arrays, [o["record"] for o in out]
    finally:
        if pool is not None:
            pool.terminate()


def _split_path(task_dir: Path, split: str) -> Path:
    if split not in SPLITS:
        raise SalbenchError(f"unknown split {split!r}: the render stage makes {list(SPLITS)}; set the split "
                            "param (e.g. attribute.split, concepts.split) to one of them")
    return task_dir / f"{split}.safetensors"


def load_split(task_dir: str | Path, split: str, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of one rendered split (see docs/CONTRIBUTING.md), checksum-verified; a missing or damaged
    shard names the stage to run, an unknown split the ones there are. ``keys``: load only these arrays
    (the others are hashed, never held)."""
    task_dir = Path(task_dir)
    path, stage = _split_path(task_dir, split), f"{STAGE}@{task_dir.name}"
    if keys is None:
        return load_shard(path, stage=stage)
    reader = SplitReader(task_dir, split)
    return {key: reader.read(key) for key in keys if key in reader.keys}


class SplitReader:
    """Rows of one rendered split, read on demand: the shard's checksum is verified once (a streaming hash
    pass), then :meth:`read` maps only the rows asked for, so memory follows the rows read, not the split."""

    def __init__(self, task_dir: str | Path, split: str) -> None:
        from safetensors import safe_open

        task_dir = Path(task_dir)
        self.path, self.stage = _split_path(task_dir, split), f"{STAGE}@{task_dir.name}"
        check_shard(self.path, self.stage)
        with safe_open(self.path, "np") as f:
            self.keys = tuple(f.keys())
            self.n = int(f.get_slice("label").get_shape()[0]) if "label" in self.keys else 0

    def __len__(self) -> int:
        return self.n

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of array ``key`` (a copy, not a view of the file)."""
        from safetensors import safe_open

        if key not in self.keys:
            raise SalbenchError(f"{self.path} has no array {key!r} (has {list(self.keys)}); run "
                                f"`dvc repro -f {self.stage}` to rewrite it with this salbench")
        with safe_open(self.path, "np") as f:
            return np.array(f.get_slice(key)[start:self.n if stop is None else stop])

    def blocks(self, size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) of consecutive row blocks of ``size`` (the last may be shorter)."""
        return ((i, min(self.n, i + size)) for i in range(0, self.n, size))


def load_manifest(task_dir: str | Path) -> dict[str, Any]:
    task_dir = Path(task_dir)
    return read_json(task_dir / "manifest.json", stage=f"{STAGE}@{task_dir.name}")


def load_scenes(task_dir: str | Path) -> dict[str, list[dict]]:
    task_dir = Path(task_dir)
    return read_json(require(task_dir / "scenes.json", f"{STAGE}@{task_dir.name}"))
