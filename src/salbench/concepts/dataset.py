"""DEPICT artifacts: the evaluated images and their plan (from the render stage), generated image shards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import SalbenchError
from ..io import load_shard, save_shard, write_json
from ..render.dataset import load_manifest, load_scenes, load_split
from ..render.tasks import Presence
from ..render.world import World
from .annotations import concept_matrix, task_from_manifest
from .depict import Plan
from .permute import ConceptParamsError

STAGE = "generate"
# Keys of the params.yaml `concepts` section (read by the generate and permutation stages).
PARAM_KEYS = ("task", "split", "n_images", "concepts", "permutations", "seed", "device", "threads", "generators",
              "models", "batch_size", "preview", "saliency", "checks", "renderer", "diffusion", "h")


@dataclass
class EvalSet:
    """The first ``n`` images of a rendered split with everything DEPICT needs about them."""

    world: World
    task: Presence
    records: list[dict]
    images: torch.Tensor  # uint8 N×H×W×3
    instance: torch.Tensor  # uint8 N×H×W
    plan: Plan


def load_eval_set(task_dir: str | Path, split: str, n_images: int, permuted: Sequence[str] | None, permutations: int,
                  seed: int) -> EvalSet:
    """Images, scene records and the permutation plan of ``n_images`` images of ``split`` (0 = all);
    ``permuted`` names the concepts to permute (None = all of the task's)."""
    world, task = task_from_manifest(load_manifest(task_dir))
    arrays = load_split(task_dir, split)
    n = len(arrays["label"])
    if not 0 <= n_images <= n:
        raise ConceptParamsError(f"concepts.n_images={n_images} but the rendered {split} split has {n} images; "
                                 f"use 0 (all) or at most {n}")
    n = n_images or n
    records = load_scenes(task_dir)[split][:n]
    concepts = concept_matrix(task, records)
    labels = torch.from_numpy(arrays["label"][:n])
    plan = Plan.draw(task.names, concepts, labels, permuted or task.names, permutations, seed)
    return EvalSet(world, task, records, torch.from_numpy(arrays["images"][:n]),
                   torch.from_numpy(arrays["instance"][:n]), plan)


def load_training(task_dir: str | Path, task: Presence, split: str = "train"
                  ) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Uint8 N×H×W×3 images, bool N×K concept annotations and the N scene records of a rendered split."""
    images = torch.from_numpy(load_split(task_dir, split)["images"])
    records = load_scenes(task_dir)[split]
    return images, concept_matrix(task, records), records


def save_generated(out: Path, plan: Plan, baseline: torch.Tensor, permuted: Mapping[str, torch.Tensor],
                   manifest: Mapping[str, Any]) -> None:
    """``plan.safetensors``, ``baseline.safetensors`` (uint8 N×R×R×3), ``permuted/<concept>.safetensors``
    (uint8 P×N×R×R×3) and ``manifest.json`` in ``out``."""
    save_shard(out / "plan.safetensors", {"concepts": plan.concepts.numpy(), "labels": plan.labels.numpy(),
                                          "columns": torch.tensor(plan.columns).numpy(), "perms": plan.perms.numpy()})
    save_shard(out / "baseline.safetensors", {"images": baseline.numpy()})
    for name, images in permuted.items():
        save_shard(out / "permuted" / f"{name}.safetensors", {"images": images.numpy()})
    write_json(out / "manifest.json", {**manifest, "names": plan.names, "permuted": plan.permuted_names})


def load_generated(gen_dir: str | Path, plan: Plan) -> tuple[torch.Tensor, Callable[[int], torch.Tensor]]:
    """(baseline uint8 N×R×R×3, loader a -> uint8 P×N×R×R×3 of the plan's a-th concept) of one generator,
    after checking that it was generated for ``plan`` (same concepts, labels and permutations)."""
    gen_dir = Path(gen_dir)
    stage = f"{STAGE}@{gen_dir.name}"
    saved = {k: torch.from_numpy(v) for k, v in load_shard(gen_dir / "plan.safetensors", stage).items()}
    ours = {"concepts": plan.concepts, "labels": plan.labels, "columns": torch.tensor(plan.columns),
            "perms": plan.perms}
    stale = [k for k, v in ours.items() if saved[k].shape != v.shape or not torch.equal(saved[k], v)]
    if stale:
        raise SalbenchError(f"{gen_dir} was generated for another plan ({', '.join(stale)} differ); run "
                            f"`dvc repro {stage}` with the current concepts params")
    baseline = torch.from_numpy(load_shard(gen_dir / "baseline.safetensors", stage)["images"])
    names = plan.permuted_names
    return baseline, lambda a: torch.from_numpy(
        load_shard(gen_dir / "permuted" / f"{names[a]}.safetensors", stage)["images"])
