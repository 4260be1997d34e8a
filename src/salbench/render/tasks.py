"""Classification tasks: rules over scene records giving a label and the objects it depends on.

Each task samples object attributes for a requested label (so splits are class-balanced by
construction), labels a scene record by its rule, and names the relevant objects whose pixels
form the ground-truth mask. Tasks are registered by the names used in params.yaml.
"""
from __future__ import annotations

import ast
import itertools
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from ..errors import SalbenchError
from ..registry import Registry
from .scene import build_record
from .world import ATTRIBUTES, World


class TaskError(SalbenchError, ValueError):
    """A task that the scene sampler cannot satisfy with the given parameters."""


class Task(Protocol):
    name: str
    classes: list[str]

    def sample_objects(self, rng: np.random.Generator, label: int, split: str) -> list[dict]:
        """Attribute dicts (no positions) of a scene whose label is ``label``."""

    def label(self, record: Mapping[str, Any]) -> int:
        """The rule applied to a scene record."""

    def relevant(self, record: Mapping[str, Any]) -> list[int]:
        """Indices of the objects the label depends on (the ground-truth mask)."""


TASKS: Registry[Callable[[World, Mapping[str, Any]], Task]] = Registry("task")


def matches(obj: Mapping[str, str], query: Mapping[str, str]) -> bool:
    return all(obj[k] == v for k, v in query.items())


def _combos(world: World) -> list[dict[str, str]]:
    """Every attribute combination the world allows."""
    return [dict(zip(ATTRIBUTES, c)) for c in itertools.product(*(world.values[a] for a in ATTRIBUTES))]


def random_records(world: World, n: int, seed: int = 0) -> list[dict]:
    """``n`` scene records (attributes, positions, camera; no images) of uniformly drawn objects, as the renderer
    places them: what question generation needs, for its tests and benchmark."""
    rng, combos, out = np.random.default_rng(seed), _combos(world), []
    while len(out) < n:
        k = int(rng.integers(world.min_objects, world.max_objects + 1))
        rec = build_record(rng, world, [dict(combos[j]) for j in rng.integers(len(combos), size=k)])
        if rec is not None:
            out.append(rec)
    return out


def _check_query(world: World, query: Mapping[str, str], where: str) -> None:
    for k, v in query.items():
        if k not in ATTRIBUTES:
            raise TaskError(f"{where}: unknown attribute {k!r}; known: {list(ATTRIBUTES)}")
        if v not in world.values[k]:
            raise TaskError(f"{where}: {k}={v!r} is not among render.{k}s {list(world.values[k])}")


def _n_objects(rng: np.random.Generator, world: World, at_least: int) -> int:
    return int(rng.integers(max(world.min_objects, at_least), world.max_objects + 1))


@TASKS.register("unique-query")
class UniqueQuery:
    """Exactly one object matches ``query`` (e.g. the only metal object); label = its ``target`` attribute."""

    name = "unique-query"

    def __init__(self, world: World, p: Mapping[str, Any]) -> None:
        self.world, self.query, self.target = world, dict(p.get("query", {"material": "metal"})), p.get("target", "color")
        where = "tasks.unique-query"
        _check_query(world, self.query, where)
        if not self.query:
            raise TaskError(f"{where}: query is empty; name the property that singles out one object")
        if self.target not in ATTRIBUTES or self.target in self.query:
            raise TaskError(f"{where}: target must be an attribute not used in the query, one of "
                            f"{[a for a in ATTRIBUTES if a not in self.query]}; got {self.target!r}")
        combos = _combos(world)
        self._hits = [c for c in combos if matches(c, self.query)]
        self._others = [c for c in combos if not matches(c, self.query)]
        if not self._others:
            raise TaskError(f"{where}: every object the world allows matches {self.query}, so it can never be "
                            "unique; add another value of the query attribute to render params")
        self.classes = list(world.values[self.target])
        if len(self.classes) < 2:
            raise TaskError(f"{where}: target {self.target!r} has fewer than 2 values in render params")

    def sample_objects(self, rng: np.random.Generator, label: int, split: str) -> list[dict]:
        hits = [c for c in self._hits if c[self.target] == self.classes[label]]
        n = _n_objects(rng, self.world, 1)
        objs = [hits[rng.integers(len(hits))]] + [self._others[i] for i in rng.integers(len(self._others), size=n - 1)]
        return [dict(objs[i]) for i in rng.permutation(n)]

    def label(self, record: Mapping[str, Any]) -> int:
        hit = self.relevant(record)
        if len(hit) != 1:
            raise TaskError(f"unique-query needs exactly one object matching {self.query}, found {len(hit)}")
        return self.classes.index(record["objects"][hit[0]][self.target])

    def relevant(self, record: Mapping[str, Any]) -> list[int]:
        return [i for i, o in enumerate(record["objects"]) if matches(o, self.query)]


_BOOL_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Name, ast.Load)


def compile_rule(rule: str, concepts: list[str]) -> Callable[[Mapping[str, bool]], bool]:
    """Compile 'a and not (b or c)' over concept names into a function of a presence dict."""
    try:
        tree = ast.parse(rule, mode="eval")
    except SyntaxError as e:
        raise TaskError(f"tasks.presence.rule {rule!r} is not a boolean expression: {e.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _BOOL_NODES):
            raise TaskError(f"tasks.presence.rule may only use concept names, and, or, not, brackets; got {rule!r}")
        if isinstance(node, ast.Name) and node.id not in concepts:
            raise TaskError(f"tasks.presence.rule uses unknown concept {node.id!r}; concepts: {concepts}")
    code = compile(tree, "<rule>", "eval")
    return lambda present: bool(eval(code, {"__builtins__": {}}, dict(present)))  # noqa: S307 (validated AST)


@TASKS.register("presence")
class Presence:
    """Label = a boolean rule over which concepts are present (DEPICT-style).

    ``concepts`` maps a name to an attribute query (e.g. ``{color: red, shape: cube}``); a concept is
    present when some object matches it. ``spurious`` names a concept that is not in the rule but
    co-occurs with the positive label with probability ``p`` (1 - p with the negative label) in
    ``splits``; every other concept is present with probability ``presence``.
    """

    name = "presence"

    def __init__(self, world: World, p: Mapping[str, Any]) -> None:
        where = "tasks.presence"
        self.world = world
        self.concepts: dict[str, dict[str, str]] = {k: dict(v) for k, v in p["concepts"].items()}
        for c, q in self.concepts.items():
            _check_query(world, q, f"{where}.concepts.{c}")
        self.names = list(self.concepts)
        self.rule_text = p["rule"]
        self.rule = compile_rule(self.rule_text, self.names)
        self.in_rule = sorted({n.id for n in ast.walk(ast.parse(self.rule_text, mode="eval")) if isinstance(n, ast.Name)})
        sp = p.get("spurious") or {}
        self.spurious, self.spurious_p = sp.get("concept"), float(sp.get("p", 0.5))
        self.spurious_splits = tuple(sp.get("splits", ("train", "val")))
        if self.spurious is not None and (self.spurious not in self.names or self.spurious in self.in_rule):
            raise TaskError(f"{where}.spurious.concept must be a concept outside the rule, one of "
                            f"{[c for c in self.names if c not in self.in_rule]}; got {self.spurious!r}")
        self.presence = float(p.get("presence", 0.5))
        self.classes = ["false", "true"]
        combos = _combos(world)
        # For each concept, combos that carry it and no other concept; and combos that carry none.
        self._carriers = {c: [x for x in combos if self._carried(x) == [c]] for c in self.names}
        self._neutral = [x for x in combos if not self._carried(x)]
        for c, xs in self._carriers.items():
            if not xs:
                raise TaskError(f"{where}: no object can carry concept {c!r} without also carrying another "
                                "concept; make the concept queries more distinct")
        if not self._neutral:
            raise TaskError(f"{where}: every object the world allows carries some concept, so scenes "
                            "cannot have distractors; narrow the concepts or widen render params")
        if len(self.in_rule) > world.max_objects:
            raise TaskError(f"{where}: the rule uses {len(self.in_rule)} concepts but render.max_objects is "
                            f"{world.max_objects}")
        table = [dict(zip(self.in_rule, v)) for v in itertools.product((False, True), repeat=len(self.in_rule))]
        self._by_label = {lab: [t for t in table if self.rule(t) == bool(lab)] for lab in (0, 1)}
        for lab, rows in self._by_label.items():
            if not rows:
                raise TaskError(f"{where}: rule {self.rule_text!r} is never {bool(lab)}, so class "
                                f"{self.classes[lab]!r} cannot be sampled")

    def _carried(self, obj: Mapping[str, str]) -> list[str]:
        return [c for c, q in self.concepts.items() if matches(obj, q)]

    def present(self, record: Mapping[str, Any]) -> dict[str, bool]:
        return {c: any(matches(o, q) for o in record["objects"]) for c, q in self.concepts.items()}

    def sample_objects(self, rng: np.random.Generator, label: int, split: str) -> list[dict]:
        rows = self._by_label[label]
        # Rule concepts: a uniformly chosen truth-table row with this label.
        present = dict(rows[rng.integers(len(rows))])
        for c in self.names:
            if c in present:
                continue
            p = self.presence
            if c == self.spurious and split in self.spurious_splits:
                p = self.spurious_p if label == 1 else 1 - self.spurious_p
            present[c] = bool(rng.random() < p)
        on = [c for c in self.names if present[c]]
        if len(on) > self.world.max_objects:
            raise TaskError(f"tasks.presence: a scene needs {len(on)} concept objects but render.max_objects "
                            f"is {self.world.max_objects}")
        n = _n_objects(rng, self.world, len(on))
        objs = [self._carriers[c][rng.integers(len(self._carriers[c]))] for c in on]
        objs += [self._neutral[i] for i in rng.integers(len(self._neutral), size=n - len(on))]
        return [dict(objs[i]) for i in rng.permutation(n)]

    def label(self, record: Mapping[str, Any]) -> int:
        return int(self.rule(self.present(record)))

    def relevant(self, record: Mapping[str, Any]) -> list[int]:
        return [i for i, o in enumerate(record["objects"]) if any(matches(o, self.concepts[c]) for c in self.in_rule)]


def build_task(name: str, world: World, params: Mapping[str, Any]) -> Task:
    """Instantiate the task registered as ``name`` from its params section (may be empty)."""
    return TASKS.get(name)(world, params or {})


class _VQA:
    """Scenes of uniformly random objects, each with several questions (salbench.vqa, SPEC.md §6).

    The image label is a constant (one class, 'scene'; gt_mask = every object): the labels and
    ground truths that matter are per question, written by ``questions`` to ``<split>_questions``.
    """

    kind = ""

    def __init__(self, world: World, p: Mapping[str, Any]) -> None:
        from ..vqa import QuestionGenerator  # lazy: salbench.vqa imports salbench.render

        self.name, self.world = f"vqa-{self.kind}", world
        self.generator = QuestionGenerator(world, self.kind, p, where=f"tasks.vqa-{self.kind}")
        self.classes = ["scene"]
        self._combos = _combos(world)

    def sample_objects(self, rng: np.random.Generator, label: int, split: str) -> list[dict]:
        n = _n_objects(rng, self.world, 1)
        return [dict(self._combos[i]) for i in rng.integers(len(self._combos), size=n)]

    def label(self, record: Mapping[str, Any]) -> int:
        return 0

    def relevant(self, record: Mapping[str, Any]) -> list[int]:
        return list(range(len(record["objects"])))

    def questions(self, records: list[Mapping[str, Any]], split: str) -> Any:
        """A salbench.vqa.QuestionSet for a split's scene records (in image order)."""
        return self.generator.generate(records, split)


@TASKS.register("vqa-simple")
class VQASimple(_VQA):
    """CLEVR-XAI-simple: 'What <attribute> is the <size> <colour> <material> <shape>?'."""

    kind = "simple"


@TASKS.register("vqa-complex")
class VQAComplex(_VQA):
    """CLEVR 1.0 families covering every program node kind (relations, same-attribute, and/or, comparisons)."""

    kind = "complex"
