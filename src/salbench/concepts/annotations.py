"""Concept annotations and captions from scene records of the ``presence`` task.

A concept is an attribute query of the task (e.g. ``red_cube: {color: red, shape: cube}``); an image
has it when some object matches. Annotations are a bool N×K matrix in the task's concept order, and
the DEPICT caption of an image lists every concept in that fixed order as present ("a ...") or
absent ("no ..."), so permuting a column changes exactly one phrase of the caption. A caption may end with
a context that no permutation touches (:func:`context_phrases`): what else the scene holds.
"""
from __future__ import annotations

import itertools
from typing import Any, Literal, Mapping, Sequence, get_args

import numpy as np
import torch

from ..render.tasks import Presence, build_task, matches
from ..params import ParamsError
from ..render.world import ATTRIBUTES, World, task_world

# Order of the words in a concept phrase, as in the scene captions ("large red metal cube").
_PHRASE_ORDER = ("size", "color", "material", "shape")


def task_from_manifest(manifest: Mapping[str, Any]) -> tuple[World, Presence]:
    """The world and ``presence`` task a rendered split was made with (from its manifest's provenance)."""
    if manifest.get("task") != "presence":
        raise ParamsError(f"DEPICT needs the 'presence' task (concepts with a known rule); the rendered task is "
                          f"{manifest.get('task')!r}; set concepts.task: presence")
    prov = manifest["provenance"]["params"]
    world, own = task_world(prov["render"], prov["task"])
    return world, build_task("presence", world, own)


def phrase(query: Mapping[str, str]) -> str:
    """'red cube' for {color: red, shape: cube}; 'yellow object' when the query names no shape."""
    words = [query[a] for a in _PHRASE_ORDER if a in query]
    return " ".join(words if "shape" in query else [*words, "object"])


def concept_matrix(task: Presence, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Bool N×K: image n has concept k (columns in ``task.names`` order)."""
    rows = [[task.present(r)[c] for c in task.names] for r in records]
    return torch.tensor(rows, dtype=torch.bool).view(-1, len(task.names))


def captions(task: Presence, concepts: torch.Tensor, context: Sequence[str] | None = None) -> list[str]:
    """DEPICT captions of a bool N×K matrix: 'a red cube, no blue sphere, ...' in the task's concept order,
    each followed by its row's ``context`` phrase (N strings, see :func:`context_phrases`) where not empty."""
    phrases = [phrase(task.concepts[c]) for c in task.names]
    rows = concepts.tolist()
    if context is not None and len(context) != len(rows):
        raise ValueError(f"{len(rows)} concept rows but {len(context)} context phrases")
    return [", ".join([*(("a " if on else "no ") + ph for on, ph in zip(row, phrases)), *([ctx] if ctx else [])])
            for row, ctx in zip(rows, context or [""] * len(rows))]


CaptionContext = Literal["none", "colors"]
CAPTION_CONTEXTS: tuple[str, ...] = get_args(CaptionContext)


def context_phrases(task: Presence, records: Sequence[Mapping[str, Any]], context: CaptionContext) -> list[str]:
    """Per scene record, what its caption says besides the concepts: nothing (``none``), or (``colors``) the
    colours of the objects that carry no concept, sorted: 'other objects: gray, red, red' ('other objects: none').

    Permuting a concept leaves the context as it is, so a generator told the other objects keeps them; without
    it, "no red cube" may also drop the red spheres a real scene without a red cube has.

    >>> from salbench.render.world import World
    >>> from salbench.render.tasks import build_task
    >>> task = build_task("presence", World(), {"concepts": {"red_cube": {"color": "red", "shape": "cube"}},
    ...                                         "rule": "red_cube"})
    >>> objs = [{"color": "red", "shape": "cube"}, {"color": "red", "shape": "sphere"},
    ...         {"color": "gray", "shape": "cube"}]
    >>> context_phrases(task, [{"objects": objs}, {"objects": objs[:1]}], "colors")
    ['other objects: gray, red', 'other objects: none']
    """
    if context not in CAPTION_CONTEXTS:
        raise ParamsError(f"caption context {context!r} is not one of {list(CAPTION_CONTEXTS)}")
    if context == "none":
        return [""] * len(records)
    out = []
    for rec in records:
        other = sorted(o["color"] for o in rec["objects"] if not any(matches(o, q) for q in task.concepts.values()))
        out.append("other objects: " + (", ".join(other) if other else "none"))
    return out


def changed_phrases(task: Presence, before: torch.Tensor, after: torch.Tensor, concept: str) -> list[str | None]:
    """Per row of bool N×K ``before``/``after``: the caption phrase of ``concept`` in ``after`` ("no red cube")
    where its value changed, else None."""
    k = task.names.index(concept)
    ph = phrase(task.concepts[concept])
    pairs = zip(before[:, k].tolist(), after[:, k].tolist())
    return [None if b == a else ("a " if a else "no ") + ph for b, a in pairs]


def vocabulary(task: Presence, world: World | None = None) -> list[str]:
    """Every word a caption of this task can contain (the tokenizer's vocabulary), sorted; with ``world``, also
    those of a ``colors`` context (:func:`context_phrases`)."""
    words = {"a", "no", ","}
    for c in task.names:
        words.update(phrase(task.concepts[c]).split())
    if world is not None:
        words.update(("other", "objects", ":", "none", *world.values["color"]))
    return sorted(words)


def object_concepts(task: Presence, records: Sequence[Mapping[str, Any]], max_objects: int) -> torch.Tensor:
    """Bool N×(max_objects+1)×K: instance id i (0 = ground, k+1 = object k) carries concept k."""
    out = np.zeros((len(records), max_objects + 1, len(task.names)), dtype=bool)
    for n, rec in enumerate(records):
        if len(rec["objects"]) > max_objects:
            raise ValueError(f"scene {n} has {len(rec['objects'])} objects, more than max_objects={max_objects}")
        for i, obj in enumerate(rec["objects"]):
            out[n, i + 1] = [matches(obj, task.concepts[c]) for c in task.names]
    return torch.from_numpy(out)


def attribute_combos(world: World) -> list[dict[str, str]]:
    """Every attribute combination the world allows."""
    return [dict(zip(ATTRIBUTES, c)) for c in itertools.product(*(world.values[a] for a in ATTRIBUTES))]
