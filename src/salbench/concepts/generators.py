"""Counterfactual image generators g behind one interface, registered by the names used in params.yaml.

A generator maps target concept annotations to images: ``g(concepts, index)`` with bool N×K
``concepts`` (the task's concept order) and int64 N ``index`` (which evaluated image each row is a
counterfactual of) returns uint8 N×R×R×3 at the generator's ``resolution``.

- ``renderer``: edits image ``index``'s scene record so that its concepts match the row (see
  :mod:`salbench.concepts.edit`) and re-renders it: the exact counterfactual (the oracle).
- ``diffusion``: a text-to-image diffusers pipeline conditioned on the rows' captions (plus, with
  ``caption_context``, what else image ``index[n]``'s scene holds), trained on the
  rendered training split or loaded from ``pretrained`` (see :mod:`salbench.concepts.diffusion`); the
  noise of row n depends only on (seed, index[n]), so a permuted caption meets the same noise as the
  unpermuted one; with ``strength`` < 1 it edits image index[n] (SDEdit) instead of starting from noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from ..params import check_keys
from ..registry import Registry
from ..render.renderer import get_renderer
from ..render.tasks import Presence
from ..render.world import World
from .edit import set_concept


class Generator(Protocol):
    resolution: int

    def __call__(self, concepts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Uint8 N×R×R×3 images showing bool N×K ``concepts``, as counterfactuals of images ``index`` (N)."""


@dataclass
class GeneratorContext:
    """What a generator may need: the task, the evaluated scenes, training data, where to keep artifacts."""

    task: Presence
    world: World
    records: Sequence[Mapping[str, Any]]  # scene records of the evaluated images
    # loads the training split: uint8 N×H×W×3 images, bool N×K concepts, N scene records
    train: Callable[[], tuple[torch.Tensor, torch.Tensor, Sequence[Mapping[str, Any]]]]
    seed: int
    device: torch.device
    workdir: Path | None = None  # a trained generator saves itself here
    images: torch.Tensor | None = None  # uint8 N×H×W×3 evaluated images (an editing generator starts from them)
    live: Callable[[], Any] | None = None  # opens a dvclive.Live for training logs


GENERATORS: Registry[Callable[[Mapping[str, Any], GeneratorContext], Generator]] = Registry("generator")


def image_seed(seed: int, index: int) -> int:
    """A 32-bit seed for evaluated image ``index``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def build_generator(name: str, params: Mapping[str, Any], ctx: GeneratorContext) -> Generator:
    """The generator registered as ``name``, from its params section ``concepts.<name>`` (may be empty)."""
    return GENERATORS.get(name)(params or {}, ctx)


@GENERATORS.register("renderer")
class RendererGenerator:
    """Exact re-rendering of edited scene records (``tries``: candidate edits per concept before giving up)."""

    def __init__(self, params: Mapping[str, Any], ctx: GeneratorContext) -> None:
        check_keys(params, ["tries"], "concepts.renderer")
        self.ctx, self.tries = ctx, int(params.get("tries", 20))
        self.resolution = ctx.world.resolution
        self.renderer = get_renderer(self.resolution)

    def records(self, concepts: torch.Tensor, index: torch.Tensor) -> list[dict]:
        """The edited scene records (one per row); row n's edit is seeded by (seed, index[n], row n)."""
        task, out = self.ctx.task, []
        for row, i in zip(concepts.tolist(), index.tolist()):
            code = sum(int(v) << k for k, v in enumerate(row))
            rng = np.random.default_rng([self.ctx.seed, i, code])
            rec = self.ctx.records[i]
            for name, want in zip(task.names, row):
                rec = set_concept(rec, task, self.ctx.world, name, bool(want), rng, self.renderer, self.tries)
            out.append(rec)
        return out

    def __call__(self, concepts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        recs = self.records(concepts, index)
        return torch.from_numpy(np.stack([self.renderer.color(r)[0] for r in recs]))


@GENERATORS.register("diffusion")
def diffusion_generator(params: Mapping[str, Any], ctx: GeneratorContext) -> Generator:
    from .diffusion import DiffusionGenerator  # diffusers and transformers load only when asked for

    return DiffusionGenerator.build(params, ctx)
