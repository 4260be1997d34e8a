"""Scene records: sampling object layouts, camera and lights; captions.

A scene record is a JSON-able dict::

    {"camera": {"position": [x, y, z], "target": [x, y, z], "yfov": rad},
     "lights": [{"position": [x, y, z], "intensity": float}, ...],          # 3 directional lights
     "objects": [{"shape", "color", "material", "size",
                  "position": [x, y, z], "rotation": deg,                    # y is up
                  "pixel_centroid": [col, row], "bbox": [c0, r0, c1, r1], "pixels": n}, ...]}

Only camera, lights and the objects' attributes/position/rotation drive the renderer; pixel
fields are filled in from the instance mask after rendering.
"""
from __future__ import annotations

import math

import numpy as np

from .world import SIZES, World

CAMERA = np.array([7.0, 6.5, 7.0])  # CLEVR-like: ~11 units away, ~35 degrees above the ground
LIGHTS = (  # key, fill, back: (position the light shines from, intensity)
    (np.array([-2.0, 6.0, 4.0]), 2.2),
    (np.array([5.0, 3.0, 2.0]), 0.9),
    (np.array([-1.0, 4.0, -5.0]), 0.8),
)
YFOV = 0.62  # radians


def yfov(zoom: float) -> float:
    """Vertical field of view (radians) that shows everything ``zoom`` times larger than the default view."""
    return YFOV if zoom == 1 else round(2 * math.atan(math.tan(YFOV / 2) / zoom), 6)


def place_objects(rng: np.random.Generator, world: World, sizes: list[str]) -> np.ndarray | None:
    """Centres (n, 2) on the ground with footprints ``min_distance`` apart, or None if it fails."""
    radii = np.array([World.footprint(s) for s in sizes])
    placed = np.zeros((0, 2))
    for r in radii:
        cand = rng.uniform(-world.extent, world.extent, size=(world.max_tries, 2))
        need = radii[: len(placed)] + r + world.min_distance
        ok = (np.linalg.norm(cand[:, None] - placed[None], axis=-1) >= need).all(axis=1)
        if not ok.any():
            return None
        placed = np.vstack([placed, cand[np.argmax(ok)]])
    return placed


def sample_view(rng: np.random.Generator, world: World) -> dict:
    """Jittered camera and three lights."""
    cam = CAMERA + rng.uniform(-world.camera_jitter, world.camera_jitter, 3)
    lights = [
        {"position": (pos + rng.uniform(-world.light_jitter, world.light_jitter, 3)).round(4).tolist(),
         "intensity": inten}
        for pos, inten in LIGHTS
    ]
    return {
        "camera": {"position": cam.round(4).tolist(), "target": [0.0, 0.0, 0.0], "yfov": yfov(world.zoom)},
        "lights": lights,
    }


def build_record(rng: np.random.Generator, world: World, objects: list[dict]) -> dict | None:
    """Add positions and rotations to attribute dicts; a view; None if placement fails."""
    xz = place_objects(rng, world, [o["size"] for o in objects])
    if xz is None:
        return None
    rot = rng.uniform(0.0, 360.0, len(objects))
    objs = [
        {**o, "position": [round(float(x), 4), SIZES[o["size"]], round(float(z), 4)], "rotation": round(float(a), 3)}
        for o, (x, z), a in zip(objects, xz, rot)
    ]
    return {**sample_view(rng, world), "objects": objs}


def annotate_pixels(record: dict, instance: np.ndarray) -> dict:
    """Fill each object's pixel count, centroid (col, row) and bbox from an H×W instance map (0 = ground)."""
    n = len(record["objects"])
    h, w = instance.shape
    ids = instance.reshape(-1).astype(np.int64)
    counts = np.bincount(ids, minlength=n + 1)[1:]
    rows, cols = np.divmod(np.arange(h * w), w)
    sum_r = np.bincount(ids, weights=rows, minlength=n + 1)[1:]
    sum_c = np.bincount(ids, weights=cols, minlength=n + 1)[1:]
    objs = []
    for k, o in enumerate(record["objects"]):
        o = {key: v for key, v in o.items() if key not in ("pixels", "pixel_centroid", "bbox")}
        o["pixels"] = int(counts[k])
        if counts[k]:
            rr, cc = np.nonzero(instance == k + 1)
            o["pixel_centroid"] = [round(sum_c[k] / counts[k], 2), round(sum_r[k] / counts[k], 2)]
            o["bbox"] = [int(cc.min()), int(rr.min()), int(cc.max()), int(rr.max())]
        else:
            o["pixel_centroid"], o["bbox"] = None, None
        objs.append(o)
    return {**record, "objects": objs}


def describe(obj: dict) -> str:
    return f"{obj['size']} {obj['color']} {obj['material']} {obj['shape']}"


def caption(record: dict) -> str:
    """Objects' attributes, left to right in the image: 'a large red metal cube, a small ...'."""
    objs = sorted(
        record["objects"],
        key=lambda o: (o["pixel_centroid"] or [np.inf])[0],
    )
    return ", ".join(f"a {describe(o)}" for o in objs)
