"""Headless pyrender renderer: scene record -> RGB, instance mask and depth.

pyrender and OpenGL are imported lazily; ``PYOPENGL_PLATFORM=egl`` is set before the import so
rendering works without a display (Mesa's EGL on the CPU, or a GPU's EGL).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from .world import COLORS, SIZES

GROUND_RGB = (0.42, 0.42, 0.42)
BACKGROUND = (0.36, 0.36, 0.36)  # the far ground fades into this, as in CLEVR
MATERIAL_PBR = {"rubber": (0.0, 0.85), "metal": (0.85, 0.3)}  # (metallic, roughness)


def _pyrender() -> Any:
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if not hasattr(np, "infty"):  # pyrender 0.1.45 still uses the alias NumPy 2 removed
        np.infty = np.inf
    try:
        import pyrender
    except ImportError as e:  # pragma: no cover - install problem
        raise ImportError("rendering needs pyrender and trimesh: pip install 'salbench'") from e
    return pyrender


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """4×4 pose whose -z axis points from ``eye`` to ``target`` (OpenGL camera/light convention)."""
    z = eye - target
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, eye
    return pose


@lru_cache(maxsize=None)
def _unit_trimesh(shape: str) -> Any:
    import trimesh

    if shape == "cube":
        return trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    if shape == "sphere":
        return trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    if shape == "cylinder":  # trimesh's axis is z; turn it to y (up)
        m = trimesh.creation.cylinder(radius=1.0, height=2.0, sections=40)
        m.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))
        return m
    raise ValueError(f"unknown shape {shape!r}")


@dataclass
class Frame:
    """One rendered scene: rgb H×W×3 uint8, instance H×W uint8 (0 = ground, k+1 = object k), depth H×W float32."""

    rgb: np.ndarray
    instance: np.ndarray
    depth: np.ndarray


class Renderer:
    """Owns one offscreen OpenGL context; render scene records at a fixed square resolution."""

    def __init__(self, resolution: int) -> None:
        self.pr = _pyrender()
        self.resolution = resolution
        self._gl = self.pr.OffscreenRenderer(resolution, resolution)
        self._meshes: dict[tuple[str, str, str], Any] = {}

        class _Node(self.pr.Node):
            """A node hashed by its insertion index. pyrender keeps nodes in sets and sums the lights
            in set order; id-based hashes made that order, and so the last bit of shading, vary."""

            def __init__(self, index: int, **kw: Any) -> None:
                super().__init__(**kw)
                self._index = index

            def __hash__(self) -> int:
                return self._index

        self._node = _Node
        import trimesh

        ground = trimesh.creation.box(extents=(40.0, 0.02, 40.0))
        ground.apply_translation((0.0, -0.012, 0.0))  # top 2 mm below the objects: no z-fighting with their bases
        mat = self.pr.MetallicRoughnessMaterial(baseColorFactor=(*GROUND_RGB, 1.0), metallicFactor=0.0, roughnessFactor=1.0)
        self._ground = self.pr.Mesh.from_trimesh(ground, material=mat, smooth=False)

    def _mesh(self, shape: str, color: str, material: str) -> Any:
        key = (shape, color, material)
        if key not in self._meshes:
            metallic, rough = MATERIAL_PBR[material]
            rgb = np.array(COLORS[color]) / 255.0
            mat = self.pr.MetallicRoughnessMaterial(
                baseColorFactor=(*rgb, 1.0), metallicFactor=metallic, roughnessFactor=rough
            )
            self._meshes[key] = self.pr.Mesh.from_trimesh(_unit_trimesh(shape), material=mat, smooth=shape != "cube")
        return self._meshes[key]

    def _scene(self, record: Mapping[str, Any]) -> tuple[Any, list[Any]]:
        pr = self.pr
        scene = pr.Scene(ambient_light=(0.25, 0.25, 0.25), bg_color=(*BACKGROUND, 1.0))

        def add(**kw: Any) -> Any:
            node = self._node(len(scene.nodes), **kw)
            scene.add_node(node)
            return node

        add(mesh=self._ground)
        cam = record["camera"]
        add(camera=pr.PerspectiveCamera(yfov=cam["yfov"], znear=0.5, zfar=60.0, aspectRatio=1.0),
            matrix=look_at(np.array(cam["position"]), np.array(cam["target"])))
        origin = np.zeros(3)
        for i, light in enumerate(record["lights"]):
            pose = look_at(np.array(light["position"]), origin)
            if i == 0:  # key light: directional, casts shadows
                add(light=pr.DirectionalLight(intensity=light["intensity"]), matrix=pose)
            else:  # fill and back lights: point lights (no shadow pass)
                add(light=pr.PointLight(intensity=light["intensity"] * 25.0), matrix=pose)
        nodes = []
        for o in record["objects"]:
            pose = np.eye(4)
            a = np.deg2rad(o["rotation"])
            rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
            pose[:3, :3] = rot * SIZES[o["size"]]
            pose[:3, 3] = o["position"]
            nodes.append(add(mesh=self._mesh(o["shape"], o["color"], o["material"]), matrix=pose))
        return scene, nodes

    def instance(self, record: Mapping[str, Any]) -> np.ndarray:
        """H×W uint8 instance map from a flat-colour pass (no anti-aliasing)."""
        scene, nodes = self._scene(record)
        return self._seg(scene, nodes)

    def _seg(self, scene: Any, nodes: list[Any]) -> np.ndarray:
        seg, _ = self._gl.render(
            scene, flags=self.pr.RenderFlags.SEG, seg_node_map={n: (k + 1,) * 3 for k, n in enumerate(nodes)}
        )
        return np.ascontiguousarray(seg[..., 0])

    def color(self, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """RGB H×W×3 uint8 with shadows and depth H×W float32 (0 where nothing is hit)."""
        scene, _ = self._scene(record)
        rgb, depth = self._gl.render(scene, flags=self.pr.RenderFlags.SHADOWS_DIRECTIONAL)
        return np.ascontiguousarray(rgb), depth

    def render(self, record: Mapping[str, Any]) -> Frame:
        """RGB, instance map and depth of a scene record."""
        rgb, depth = self.color(record)
        return Frame(rgb=rgb, instance=self.instance(record), depth=depth)

    def close(self) -> None:
        self._gl.delete()


@lru_cache(maxsize=None)
def get_renderer(resolution: int) -> Renderer:
    """The process's renderer for ``resolution`` (OpenGL contexts are costly and not freely re-creatable)."""
    return Renderer(resolution)
