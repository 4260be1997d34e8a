"""The attribute vocabulary and geometry of the CLEVR-like world, with parameter validation."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import SalbenchError

SHAPES = ("cube", "sphere", "cylinder")
# CLEVR's palette (sRGB, 0-255).
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
MATERIALS = ("rubber", "metal")
SIZES: dict[str, float] = {"small": 0.35, "large": 0.7}  # half-extent in world units, as CLEVR
ATTRIBUTES = ("shape", "color", "material", "size")
KNOWN: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "material": MATERIALS,
    "size": tuple(SIZES),
}
# Ring of hexagonal packing: no arrangement of discs covers more than this fraction of a region.
_HEX_DENSITY = math.pi / (2 * math.sqrt(3))


class RenderParamsError(SalbenchError, ValueError):
    """Invalid render parameters; the message says which value to change."""


@dataclass(frozen=True)
class World:
    """Everything the scene sampler needs; built from the ``render`` section of params.yaml."""

    resolution: int = 128
    min_objects: int = 3
    max_objects: int = 8
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    materials: tuple[str, ...] = MATERIALS
    sizes: tuple[str, ...] = tuple(SIZES)
    extent: float = 3.0  # objects are placed with centres in [-extent, extent]^2
    min_distance: float = 0.25  # free gap between object footprints (world units)
    min_pixels: int = 40  # visible pixels every object must keep at this resolution
    camera_jitter: float = 0.5
    zoom: float = 1.0  # narrower field of view: everything appears `zoom` times larger (pair with a smaller extent)
    light_jitter: float = 1.0
    max_tries: int = 200
    values: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "values",
            {"shape": self.shapes, "color": self.colors, "material": self.materials, "size": self.sizes},
        )
        self.validate()

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "World":
        keys = {k: p[k] for k in cls.__dataclass_fields__ if k in p and k != "values"}
        for k in ("shapes", "colors", "materials", "sizes"):
            if k in keys:
                keys[k] = tuple(keys[k])
        return cls(**keys)

    def validate(self) -> None:
        if self.resolution < 32:
            raise RenderParamsError(f"render.resolution={self.resolution} is below the minimum of 32 px")
        if not 1 <= self.min_objects <= self.max_objects:
            raise RenderParamsError(
                f"need 1 <= render.min_objects <= render.max_objects, got {self.min_objects} and "
                f"{self.max_objects}; a scene needs at least one object"
            )
        for attr, vals in self.values.items():
            if not vals:
                raise RenderParamsError(f"render.{attr}s is empty; give at least one of {list(KNOWN[attr])}")
            bad = [v for v in vals if v not in KNOWN[attr]]
            if bad:
                raise RenderParamsError(f"unknown {attr} {bad} in render.{attr}s; known: {list(KNOWN[attr])}")
            if len(set(vals)) != len(vals):
                raise RenderParamsError(f"render.{attr}s lists a value twice: {list(vals)}")
        if self.zoom <= 0:
            raise RenderParamsError(f"render.zoom={self.zoom} must be > 0 (1 = the CLEVR-like view)")
        if self.min_distance < 0:
            raise RenderParamsError(f"render.min_distance={self.min_distance} must be >= 0")
        if self.min_pixels < 1 or self.min_pixels > self.resolution**2 // self.max_objects:
            raise RenderParamsError(
                f"render.min_pixels={self.min_pixels} must lie in [1, resolution^2 / max_objects = "
                f"{self.resolution**2 // self.max_objects}]"
            )
        # Necessary condition for placing max_objects discs of the largest footprint with the gap.
        r = max(self.footprint(s) for s in self.sizes) + self.min_distance / 2
        need = self.max_objects * math.pi * r * r
        have = _HEX_DENSITY * (2 * self.extent + 2 * r) ** 2
        if need > have:
            raise RenderParamsError(
                f"render.min_distance={self.min_distance} cannot be satisfied: {self.max_objects} objects "
                f"need {need:.1f} square units of ground but at most {have:.1f} fit in the "
                f"[-{self.extent}, {self.extent}]^2 area; lower min_distance or max_objects"
            )

    @staticmethod
    def footprint(size: str) -> float:
        """Radius of the disc that bounds an object's ground footprint (a cube's half-diagonal)."""
        return SIZES[size] * math.sqrt(2)


def task_world(render: Mapping[str, Any], task: Mapping[str, Any] | None, where: str = "tasks.<task>.world"
               ) -> tuple[World, dict[str, Any]]:
    """The world a task renders in and the task's own params: ``render.*`` with the task section's ``world``
    mapping on top (e.g. fewer, larger objects for one task: ``tasks.presence.world: {max_objects: 4, zoom: 1.5}``;
    not ``resolution``, which every task shares), and the task section without it. Errors name ``where``."""
    own = dict(task or {})
    over = own.pop("world", None) or {}
    allowed = sorted(set(World.__dataclass_fields__) - {"values", "resolution"})
    bad = sorted(set(over) - set(allowed))
    if bad:
        raise RenderParamsError(f"{where}: unknown key(s) {bad}; a task may override {allowed} "
                                "(resolution is render.resolution, shared by every task)")
    try:
        return World.from_params({**render, **over}), own
    except RenderParamsError as e:
        raise RenderParamsError(f"{where}: {e}" if over else str(e)) from None
