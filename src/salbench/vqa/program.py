"""Functional programs over scene records (CLEVR's node kinds) and their four ground truths.

A program is a tuple of nodes ``(kind, inputs, value)`` in execution order; ``inputs`` index earlier
nodes and ``value`` is the side input of a filter (an attribute value) or None. Object sets are
Python int bitmasks over the scene's objects (bit k = object k of the record), objects are indices.

Spatial relations as CLEVR: the camera's right and front (towards the camera) directions are
projected onto the ground plane; object j is ``left`` of object i when
``(pos_j - pos_i) · left > margin`` (likewise right, front, behind). CLEVR also places objects so
that no two are closer than 0.4 along either axis, which keeps every relation visible; scenes here are
placed without it, so a relation from object i can instead be declared ill-posed when another object
lies within ``separation`` of i along that relation's axis (0 = never).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from ..errors import SalbenchError
from ..render.world import ATTRIBUTES, KNOWN

RELATIONS = ("left", "right", "front", "behind")
SET_KINDS = ("scene", "union", "intersect") + tuple(f"filter_{a}" for a in ATTRIBUTES) \
    + tuple(f"relate_{r}" for r in RELATIONS) + tuple(f"same_{a}" for a in ATTRIBUTES)
NODE_KINDS = SET_KINDS + ("unique", "count", "exist", "equal_integer", "less_than", "greater_than") \
    + tuple(f"query_{a}" for a in ATTRIBUTES) + tuple(f"equal_{a}" for a in ATTRIBUTES)
GT_KINDS = {"simple": ("single_object", "all_objects"),
            "complex": ("unique", "unique_first_nonempty", "union", "all_objects")}


class ProgramError(SalbenchError, ValueError):
    """A malformed program (unknown node kind, wrong inputs)."""


class IllPosed(Exception):
    """The program does not apply to this scene: a `unique` over != 1 object, a relation with nothing on
    that side or with an object too close to call (``separation``)."""


class Node(NamedTuple):
    kind: str
    inputs: tuple[int, ...] = ()
    value: str | None = None


Program = tuple[Node, ...]


def ground_directions(camera: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Unit ground-plane (y = 0) vectors of the four relations for a camera ``{position, target}``."""
    eye = np.asarray(camera["position"], dtype=np.float64)
    back = eye - np.asarray(camera.get("target", (0.0, 0.0, 0.0)), dtype=np.float64)  # towards the camera
    right = np.cross((0.0, 1.0, 0.0), back)  # the image's +x axis (renderer.look_at)
    back[1] = right[1] = 0.0
    front, right = back / np.linalg.norm(back), right / np.linalg.norm(right)
    return {"left": -right, "right": right, "front": front, "behind": -front}


@dataclass
class SceneFacts:
    """What programs read from a scene record, precomputed as bitmasks.

    ``codes`` n×4 int64 (index into ``KNOWN[attr]`` per attribute of ``ATTRIBUTES``);
    ``values[attr][value]`` the objects with that value; ``relate[rel][i]`` the objects ``rel`` of
    object i; ``same[attr][i]`` the other objects sharing object i's value; ``attrs[i]`` its attributes;
    ``unclear[rel][i]``: another object lies within ``separation`` of object i along ``rel``'s axis.
    """

    n: int
    full: int
    codes: np.ndarray
    values: dict[str, dict[str, int]]
    relate: dict[str, list[int]]
    same: dict[str, list[int]]
    attrs: list[dict[str, str]]
    unclear: dict[str, list[bool]]

    @classmethod
    def from_record(cls, record: Mapping[str, Any], margin: float = 0.2, separation: float = 0.0) -> "SceneFacts":
        objs = record["objects"]
        n = len(objs)
        if n > 62:
            raise ProgramError(f"a scene has {n} objects; object sets are int64 bitmasks (at most 62)")
        codes = np.array([[KNOWN[a].index(o[a]) for a in ATTRIBUTES] for o in objs], dtype=np.int64).reshape(n, 4)
        bits = np.left_shift(np.int64(1), np.arange(n, dtype=np.int64))
        values = {a: {v: int(bits[codes[:, k] == j].sum()) for j, v in enumerate(KNOWN[a])}
                  for k, a in enumerate(ATTRIBUTES)}
        pos = np.array([o["position"] for o in objs], dtype=np.float64).reshape(n, 3)
        diff = pos[None, :, :] - pos[:, None, :]  # [i, j] = pos_j - pos_i
        dirs = ground_directions(record["camera"])
        dots = {r: diff @ dirs[r] for r in RELATIONS}  # n×n offsets of j from i along each direction
        relate = {r: ((d > margin) * bits).sum(1).tolist() for r, d in dots.items()}
        eye = ~np.eye(n, dtype=bool)
        unclear = {r: ((np.abs(d) < separation) & eye).any(1).tolist() for r, d in dots.items()}
        same = {a: (((codes[:, None, k] == codes[None, :, k]) & eye) * bits).sum(1).tolist()
                for k, a in enumerate(ATTRIBUTES)}
        return cls(n, (1 << n) - 1, codes, values, relate, same, [{a: o[a] for a in ATTRIBUTES} for o in objs],
                   unclear)

    def attribute(self, obj: int, attr: str) -> str:
        return self.attrs[obj][attr]


def _unique(f: SceneFacts, node: Node, a: list) -> int:
    if a[0].bit_count() != 1:
        raise IllPosed(f"unique over {a[0].bit_count()} objects")
    return a[0].bit_length() - 1


def _relate(rel: str) -> Callable[[SceneFacts, Node, list], int]:
    def run(f: SceneFacts, node: Node, a: list) -> int:
        out = f.relate[rel][a[0]]
        if not out:
            raise IllPosed(f"nothing is {rel} of object {a[0]}")
        if f.unclear[rel][a[0]]:
            raise IllPosed(f"another object is too close to object {a[0]} along the {rel} axis to tell")
        return out
    return run


HANDLERS: dict[str, Callable[[SceneFacts, Node, list], Any]] = {
    "scene": lambda f, node, a: f.full,
    "unique": _unique,
    "union": lambda f, node, a: a[0] | a[1],
    "intersect": lambda f, node, a: a[0] & a[1],
    "count": lambda f, node, a: a[0].bit_count(),
    "exist": lambda f, node, a: a[0] != 0,
    "equal_integer": lambda f, node, a: a[0] == a[1],
    "less_than": lambda f, node, a: a[0] < a[1],
    "greater_than": lambda f, node, a: a[0] > a[1],
    **{f"relate_{r}": _relate(r) for r in RELATIONS},
}
for _a in ATTRIBUTES:
    HANDLERS[f"filter_{_a}"] = lambda f, node, a, _a=_a: a[0] & f.values[_a].get(node.value, 0)
    HANDLERS[f"same_{_a}"] = lambda f, node, a, _a=_a: f.same[_a][a[0]]
    HANDLERS[f"query_{_a}"] = lambda f, node, a, _a=_a: f.attribute(a[0], _a)
    HANDLERS[f"equal_{_a}"] = lambda f, node, a: a[0] == a[1]


def execute(program: Sequence[Node], facts: SceneFacts) -> list[Any]:
    """Every node's output (sets as bitmasks, objects as indices, then int/bool/str); raises IllPosed."""
    out: list[Any] = []
    for node in program:
        try:
            fn = HANDLERS[node.kind]
        except KeyError:
            raise ProgramError(f"unknown program node kind {node.kind!r}; known: {list(NODE_KINDS)}") from None
        out.append(fn(facts, node, [out[i] for i in node.inputs]))
    return out


def answer_text(value: Any) -> str:
    """The answer word of a program's last output: 'yes'/'no', a count, or an attribute value."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _objects(node: Node, value: Any) -> int:
    """The object-set bitmask a node outputs (0 for non-object outputs)."""
    if node.kind == "unique":
        return 1 << value
    return value if node.kind in SET_KINDS else 0


def ground_truths(program: Sequence[Node], outputs: Sequence[Any], full: int) -> dict[str, int]:
    """SPEC.md §6 ground truths as object bitmasks.

    single_object/unique: objects output by `unique` nodes; union: objects output by any object-set
    node except `scene`; unique_first_nonempty: unique plus, walking back from the answer, the first
    non-empty object set on each branch; all_objects: every object.
    """
    unique = 0
    union = 0
    for node, v in zip(program, outputs):
        if node.kind != "scene":
            union |= _objects(node, v)
        if node.kind == "unique":
            unique |= 1 << v

    def first(i: int) -> int:
        node = program[i]
        if node.kind == "scene":
            return 0
        got = _objects(node, outputs[i])
        if got:
            return got
        acc = 0
        for j in node.inputs:
            acc |= first(j)
        return acc

    return {"single_object": unique, "unique": unique, "union": union,
            "unique_first_nonempty": unique | first(len(program) - 1), "all_objects": full}


def to_json(program: Sequence[Node]) -> list[dict[str, Any]]:
    return [{"kind": n.kind, "inputs": list(n.inputs), **({"value": n.value} if n.value is not None else {})}
            for n in program]


def from_json(nodes: Sequence[Mapping[str, Any]]) -> Program:
    return tuple(Node(n["kind"], tuple(n.get("inputs", ())), n.get("value")) for n in nodes)
