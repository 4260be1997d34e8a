"""Exact concept edits of scene records: make one concept present or absent, every other concept as it was.

Removing concept c gives each object that carries c new attributes that carry the object's other
concepts but not c (same size, so the footprint and the minimum gap are kept; same shape when
possible, so the silhouette is kept; fewest attributes changed), or deletes the object when no such
attributes exist. Adding c recolours/reshapes an object in the same way so that it also carries c,
or, if none can, adds an object carrying only c at a free spot. Every candidate edit is kept only if
every object keeps ``world.min_pixels`` visible pixels, and the result is verified with
``Presence.present``.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from ..render.scene import SIZES, annotate_pixels, caption
from ..render.tasks import Presence, matches
from ..render.world import ATTRIBUTES, World
from .annotations import attribute_combos


class EditError(RuntimeError):
    """A concept edit that no candidate satisfies; the message says which scene and what to change."""


def carried(task: Presence, obj: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(c for c, q in task.concepts.items() if matches(obj, q))


def _restyles(task: Presence, world: World, obj: Mapping[str, Any], want: frozenset[str],
              rng: np.random.Generator) -> list[dict[str, str]]:
    """Same-size attribute sets carrying exactly ``want``, cheapest first (shape kept, then fewest changes)."""
    combos = [c for c in attribute_combos(world) if c["size"] == obj["size"] and carried(task, c) == want]
    combos = [combos[i] for i in rng.permutation(len(combos))]  # random order among equal costs
    return sorted(combos, key=lambda c: (c["shape"] != obj["shape"], sum(c[a] != obj[a] for a in ATTRIBUTES)))


def _free_spot(rng: np.random.Generator, world: World, objects: list[dict], size: str) -> list[float] | None:
    """A ground position for a new object of ``size`` keeping ``min_distance`` to every footprint, or None."""
    cand = rng.uniform(-world.extent, world.extent, size=(world.max_tries, 2))
    if not objects:
        return [float(cand[0, 0]), SIZES[size], float(cand[0, 1])]
    xz = np.array([[o["position"][0], o["position"][2]] for o in objects])
    need = np.array([World.footprint(o["size"]) for o in objects]) + World.footprint(size) + world.min_distance
    ok = (np.linalg.norm(cand[:, None] - xz[None], axis=-1) >= need).all(axis=1)
    if not ok.any():
        return None
    x, z = cand[np.argmax(ok)]
    return [round(float(x), 4), SIZES[size], round(float(z), 4)]


def _candidates(record: Mapping[str, Any], task: Presence, world: World, concept: str, present: bool,
                rng: np.random.Generator, tries: int) -> Iterator[list[dict]]:
    """Object lists with ``concept`` set to ``present`` and the other concepts unchanged, preferred first."""
    objs = [dict(o) for o in record["objects"]]
    if not present:
        # Every carrier must lose the concept: candidate r gives every carrier its r-th option (cheapest restyles
        # first, deletion last).
        options = []
        for i, o in enumerate(objs):
            if concept in carried(task, o):
                alts = [{**o, **a} for a in _restyles(task, world, o, carried(task, o) - {concept}, rng)][:tries]
                alts += [None] if len(objs) > world.min_objects else []
                if not alts:  # this carrier can neither be restyled nor deleted
                    return
                options.append((i, alts))
        yield from _combine(objs, options)
        return
    pairs = [(i, a) for i, o in enumerate(objs) for a in _restyles(task, world, o, carried(task, o) | {concept}, rng)]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]  # random order among equal costs, over all objects
    pairs.sort(key=lambda p: (p[1]["shape"] != objs[p[0]]["shape"], sum(p[1][a] != objs[p[0]][a] for a in ATTRIBUTES)))
    for i, a in pairs[:tries]:
        yield [*objs[:i], {**objs[i], **a}, *objs[i + 1:]]
    if len(objs) < world.max_objects:
        pool = [c for c in attribute_combos(world) if carried(task, c) == {concept}]
        for _ in range(tries):
            new = pool[rng.integers(len(pool))]
            pos = _free_spot(rng, world, objs, new["size"])
            if pos is not None:
                yield [*objs, {**new, "position": pos, "rotation": round(float(rng.uniform(0.0, 360.0)), 3)}]


def _combine(objs: list[dict], options: list[tuple[int, list[dict | None]]]) -> Iterator[list[dict]]:
    """Walk the carriers' options in lock-step (option r of every carrier, then r + 1); None deletes."""
    depth = max((len(alts) for _, alts in options), default=0)
    for r in range(depth):
        new: list[dict | None] = list(objs)
        for i, alts in options:
            new[i] = alts[min(r, len(alts) - 1)]
        yield [o for o in new if o is not None]


def set_concept(record: Mapping[str, Any], task: Presence, world: World, concept: str, present: bool,
                rng: np.random.Generator, renderer: Any, tries: int = 20) -> dict:
    """The record edited so that ``concept`` is ``present`` (pixel fields and caption refreshed).

    Every other concept of ``task`` keeps its presence and every object keeps at least ``world.min_pixels``
    visible pixels (checked with ``renderer.instance``). Returned as is if the concept already has that value.
    """
    before = task.present(record)
    if before[concept] == present:
        return dict(record)
    want = {**before, concept: present}
    for objs in _candidates(record, task, world, concept, present, rng, tries):
        if len(objs) < world.min_objects:
            continue
        rec = {k: v for k, v in record.items() if k not in ("objects", "caption")}
        rec["objects"] = [{k: v for k, v in o.items() if k not in ("pixels", "pixel_centroid", "bbox")} for o in objs]
        inst = renderer.instance(rec)
        counts = np.bincount(inst.reshape(-1), minlength=len(objs) + 1)[1:]
        if counts.min(initial=world.min_pixels) < world.min_pixels:
            continue
        if task.present(rec) != want:  # construction guarantees it; a failure here is a bug
            raise EditError(f"edit of {concept!r} to {present} changed other concepts: {task.present(rec)} != {want}")
        rec = annotate_pixels(rec, inst)
        rec["caption"] = caption(rec)
        return rec
    raise EditError(
        f"cannot make {concept!r} {'present' if present else 'absent'} in a scene of {len(record['objects'])} objects "
        f"while keeping the other concepts and render.min_pixels={world.min_pixels} visible pixels per object within "
        f"{tries} tries; raise concepts.renderer.tries or lower render.min_pixels")
