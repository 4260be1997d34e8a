"""Question families: CLEVR-XAI-simple and a subset of the CLEVR 1.0 templates that uses every node kind.

A family samples one instantiation for a scene: a program (executed later for the answer) and its
text. Filters name attributes in CLEVR's order (size, colour, material, shape; an unnamed shape is
"thing"). Samplers only propose; validity (unique objects, non-empty relations) is decided by
executing the program.
"""
from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from ..render.world import ATTRIBUTES, KNOWN, World
from .program import RELATIONS, Node, Program, SceneFacts

ORDER = ("size", "color", "material", "shape")  # CLEVR's order of attributes in an object phrase
REL_TEXT = {"left": "left of", "right": "right of", "front": "in front of", "behind": "behind"}
Filter = Mapping[str, str]
SUBSETS = tuple(tuple(a for k, a in enumerate(ATTRIBUTES) if m >> k & 1) for m in range(1 << len(ATTRIBUTES)))


@cache
def allowed(banned: tuple[str, ...], named: bool = False) -> tuple[int, ...]:
    """Indices of SUBSETS that name no ``banned`` attribute (``named``: and at least one attribute)."""
    return tuple(k for k, s in enumerate(SUBSETS) if not set(s) & set(banned) and (s or not named))


def phrase(filt: Filter, plural: bool = False) -> str:
    """'large red metal cube' / 'small things' for a filter (attribute -> value)."""
    words = [filt[a] for a in ORDER[:3] if a in filt]
    shape = filt.get("shape", "thing")
    return " ".join(words + [shape + "s" if plural else shape])


class Context:
    """A scene's facts plus per-object filter masks, for samplers (one per scene)."""

    def __init__(self, facts: SceneFacts, world: World, rng: random.Random) -> None:
        self.facts, self.world, self.rng = facts, world, rng
        self._masks: dict[int, list[int]] = {}

    def masks(self, obj: int) -> list[int]:
        """Objects matching ``obj`` on each attribute subset of SUBSETS (whole scene)."""
        if obj not in self._masks:
            f = self.facts
            per = {a: f.values[a][v] for a, v in f.attrs[obj].items()}
            out = []
            for sub in SUBSETS:
                m = f.full
                for a in sub:
                    m &= per[a]
                out.append(m)
            self._masks[obj] = out
        return self._masks[obj]

    def unique(self, within: int, banned: tuple[str, ...] = (), minimal: bool = False,
               other_than: int = -1) -> tuple[int, Filter] | None:
        """A random object of ``within`` and attributes that single it out there (never naming ``banned``);
        ``minimal``: as few attributes as possible. None if no object of ``within`` can be singled out."""
        objs = [k for k in range(self.facts.n) if within >> k & 1 and k != other_than]
        self.rng.shuffle(objs)
        subsets = allowed(banned)
        for o in objs:
            masks, bit = self.masks(o), 1 << o
            ok = [SUBSETS[k] for k in subsets if within & masks[k] == bit]
            if minimal and ok:
                least = min(len(s) for s in ok)
                ok = [s for s in ok if len(s) == least]
            if ok:
                sub = ok[self.rng.randrange(len(ok))]
                attrs = self.facts.attrs[o]
                return o, {a: attrs[a] for a in sub}
        return None

    def filter(self, within: int, banned: tuple[str, ...] = (), named: bool = False) -> Filter:
        """A random filter: half the time one that an object of ``within`` matches, else random values
        (possibly matching nothing). ``named``: at least one attribute."""
        subs = allowed(banned, named)
        sub = SUBSETS[subs[self.rng.randrange(len(subs))]]
        if within and self.rng.random() < 0.5:
            objs = [k for k in range(self.facts.n) if within >> k & 1]
            attrs = self.facts.attrs[objs[self.rng.randrange(len(objs))]]
            return {a: attrs[a] for a in sub}
        return {a: self.rng.choice(self.world.values[a]) for a in sub}

    def mask(self, filt: Filter, within: int) -> int:
        for a, v in filt.items():
            within &= self.facts.values[a][v]
        return within


class Builder:
    """Appends program nodes; each method returns the index of its last node."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, kind: str, *inputs: int, value: str | None = None) -> int:
        self.nodes.append(Node(kind, inputs, value))
        return len(self.nodes) - 1

    def filters(self, inp: int, filt: Filter) -> int:
        for a in ORDER:
            if a in filt:
                inp = self.add(f"filter_{a}", inp, value=filt[a])
        return inp

    def select(self, filt: Filter) -> int:
        """scene -> filters."""
        return self.filters(self.add("scene"), filt)

    def program(self) -> Program:
        return tuple(self.nodes)


Sample = tuple[Program, str]


@dataclass(frozen=True)
class Family:
    """A question family: its name, text templates (for the vocabulary) and sampler."""

    name: str
    kind: str  # simple | complex
    texts: tuple[str, ...]
    sample: Callable[[Context], Sample | None]


FAMILIES: dict[str, Family] = {}


def family(name: str, kind: str, *texts: str) -> Callable[[Callable[[Context], Sample | None]], Callable]:
    def deco(fn: Callable[[Context], Sample | None]) -> Callable:
        FAMILIES[name] = Family(name, kind, texts, fn)
        return fn
    return deco


def _pick(ctx: Context, seq: tuple[str, ...]) -> str:
    return seq[ctx.rng.randrange(len(seq))]


def _anchor(ctx: Context, attr: str | None = None, minimal: bool = False) -> tuple[str, int, Filter] | None:
    """An attribute (``attr``, or a random one) and an object singled out in the scene without naming it
    (``minimal``: with as few attributes as possible), as (attribute, object, filter); None if none can be."""
    attr = attr or _pick(ctx, ATTRIBUTES)
    got = ctx.unique(ctx.facts.full, banned=(attr,), minimal=minimal)
    return None if got is None else (attr, *got)


def _query(attr: str | None, minimal: bool) -> Callable[[Context], Sample | None]:
    """"What <attr> is the <X>?" (see :func:`_anchor`)."""
    def sample(ctx: Context) -> Sample | None:
        got = _anchor(ctx, attr, minimal)
        if got is None:
            return None
        a, _, filt = got
        b = Builder()
        b.add(f"query_{a}", b.add("unique", b.select(filt)))
        return b.program(), f"What {a} is the {phrase(filt)}?"
    return sample


# ---- CLEVR-XAI-simple: "What <attribute> is the <size> <colour> <material> <shape>?" ----------
for _attr in ATTRIBUTES:
    family(f"query_{_attr}", "simple", "What {A} is the {X1}?")(_query(_attr, minimal=True))


# ---- CLEVR 1.0 subset -----------------------------------------------------------------------
@family("count", "complex", "How many {P1} are there?")
def _count(ctx: Context) -> Sample | None:
    f = ctx.filter(ctx.facts.full)
    b = Builder()
    b.add("count", b.select(f))
    return b.program(), f"How many {phrase(f, True)} are there?"


@family("exist", "complex", "Are there any {P1}?")
def _exist(ctx: Context) -> Sample | None:
    f = ctx.filter(ctx.facts.full, named=True)
    b = Builder()
    b.add("exist", b.select(f))
    return b.program(), f"Are there any {phrase(f, True)}?"


family("zero_hop", "complex", "What {A} is the {X1}?")(_query(None, minimal=False))


def _hops(ctx: Context, hops: int, attr: str) -> Sample | None:
    """query_attr after ``hops`` relate -> filter -> unique steps from a unique anchor object."""
    got = ctx.unique(ctx.facts.full)
    if got is None:
        return None
    obj, f = got
    b = Builder()
    node = b.add("unique", b.select(f))
    text = f"the {phrase(f)}"
    for h in range(hops):
        rel = _pick(ctx, RELATIONS)
        if ctx.facts.unclear[rel][obj]:
            return None
        within = ctx.facts.relate[rel][obj]
        got = ctx.unique(within, banned=(attr,) if h == hops - 1 else ())
        if got is None:
            return None
        obj, f = got
        node = b.add("unique", b.filters(b.add(f"relate_{rel}", node), f))
        text = f"the {phrase(f)} that is {REL_TEXT[rel]} {text}"
    b.add(f"query_{attr}", node)
    return b.program(), f"What {attr} is {text}?"


family("one_hop", "complex", "What {A} is the {X2} that is {R1} the {X1}?")(
    lambda ctx: _hops(ctx, 1, _pick(ctx, ATTRIBUTES)))
family("two_hop", "complex", "What {A} is the {X3} that is {R2} the {X2} that is {R1} the {X1}?")(
    lambda ctx: _hops(ctx, 2, _pick(ctx, ATTRIBUTES)))


@family("one_hop_count", "complex", "How many {P2} are {R1} the {X1}?")
def _one_hop_count(ctx: Context) -> Sample | None:
    got = ctx.unique(ctx.facts.full)
    if got is None:
        return None
    rel = _pick(ctx, RELATIONS)
    if not ctx.facts.relate[rel][got[0]] or ctx.facts.unclear[rel][got[0]]:
        return None  # nothing on that side, or too close to tell: ill-posed
    f2 = ctx.filter(ctx.facts.relate[rel][got[0]])
    b = Builder()
    b.add("count", b.filters(b.add(f"relate_{rel}", b.add("unique", b.select(got[1]))), f2))
    return b.program(), f"How many {phrase(f2, True)} are {REL_TEXT[rel]} the {phrase(got[1])}?"


@family("same_relate", "complex", "How many other {P2} have the same {A} as the {X1}?")
def _same_relate(ctx: Context) -> Sample | None:
    got = _anchor(ctx)
    if got is None:
        return None
    attr, obj, f1 = got
    f2 = ctx.filter(ctx.facts.same[attr][obj], banned=(attr,))
    b = Builder()
    b.add("count", b.filters(b.add(f"same_{attr}", b.add("unique", b.select(f1))), f2))
    return b.program(), f"How many other {phrase(f2, True)} have the same {attr} as the {phrase(f1)}?"


@family("single_and", "complex", "How many {P3} are both {R2} the {X2} and {R1} the {X1}?")
def _single_and(ctx: Context) -> Sample | None:
    a = ctx.unique(ctx.facts.full)
    c = a and ctx.unique(ctx.facts.full, other_than=a[0])
    if not c:
        return None
    r1, r2 = _pick(ctx, RELATIONS), _pick(ctx, RELATIONS)
    f = ctx.facts
    if not (f.relate[r1][a[0]] and f.relate[r2][c[0]]) or f.unclear[r1][a[0]] or f.unclear[r2][c[0]]:
        return None  # nothing on one side, or too close to tell: ill-posed
    f3 = ctx.filter(ctx.facts.relate[r1][a[0]] & ctx.facts.relate[r2][c[0]])
    b = Builder()
    left = b.add(f"relate_{r1}", b.add("unique", b.select(a[1])))
    right = b.add(f"relate_{r2}", b.add("unique", b.select(c[1])))
    b.add("count", b.filters(b.add("intersect", left, right), f3))
    return b.program(), (f"How many {phrase(f3, True)} are both {REL_TEXT[r2]} the {phrase(c[1])} "
                         f"and {REL_TEXT[r1]} the {phrase(a[1])}?")


@family("single_or", "complex", "How many things are either {P1} or {P2}?")
def _single_or(ctx: Context) -> Sample | None:
    f1, f2 = ctx.filter(ctx.facts.full, named=True), ctx.filter(ctx.facts.full, named=True)
    if ctx.mask(f1, ctx.facts.full) == ctx.mask(f2, ctx.facts.full):
        return None  # CLEVR's OUT_NEQ: the two sets differ
    b = Builder()
    b.add("count", b.add("union", b.select(f1), b.select(f2)))
    return b.program(), f"How many things are either {phrase(f1, True)} or {phrase(f2, True)}?"


@family("compare_attribute", "complex", "Do the {X1} and the {X2} have the same {A}?")
def _compare_attribute(ctx: Context) -> Sample | None:
    attr = _pick(ctx, ATTRIBUTES)
    a = ctx.unique(ctx.facts.full, banned=(attr,))
    c = a and ctx.unique(ctx.facts.full, banned=(attr,), other_than=a[0])
    if not c:
        return None
    b = Builder()
    q1 = b.add(f"query_{attr}", b.add("unique", b.select(a[1])))
    q2 = b.add(f"query_{attr}", b.add("unique", b.select(c[1])))
    b.add(f"equal_{attr}", q1, q2)
    return b.program(), f"Do the {phrase(a[1])} and the {phrase(c[1])} have the same {attr}?"


_COMPARE_INT = {"equal_integer": "Are there an equal number of {P1} and {P2}?",
                "less_than": "Are there fewer {P1} than {P2}?",
                "greater_than": "Are there more {P1} than {P2}?"}


@family("compare_integer", "complex", *_COMPARE_INT.values())
def _compare_integer(ctx: Context) -> Sample | None:
    op = _pick(ctx, tuple(_COMPARE_INT))
    f1, f2 = ctx.filter(ctx.facts.full), ctx.filter(ctx.facts.full)
    if ctx.mask(f1, ctx.facts.full) == ctx.mask(f2, ctx.facts.full):
        return None
    b = Builder()
    b.add(op, b.add("count", b.select(f1)), b.add("count", b.select(f2)))
    return b.program(), _COMPARE_INT[op].format(P1=phrase(f1, True), P2=phrase(f2, True))


# ---- vocabulary -------------------------------------------------------------------------------
_FIELD_WORDS = {"X": 4, "P": 4, "R": max(len(t.split()) for t in REL_TEXT.values()), "A": 1}


def tokenize(text: str) -> list[str]:
    return text.lower().replace("?", " ?").split()


def words() -> list[str]:
    """Every word a question can contain, sorted (token id = position + 1; 0 is padding)."""
    out = {"thing", "things"} | {w for t in REL_TEXT.values() for w in t.split()} | set(ATTRIBUTES)
    for vals in KNOWN.values():
        out |= set(vals)
    out |= {s + "s" for s in KNOWN["shape"]}
    for fam in FAMILIES.values():
        for text in fam.texts:
            out |= {w for lit, *_ in string.Formatter().parse(text) for w in tokenize(lit)}
    return sorted(out)


def max_tokens() -> int:
    """Longest question any family can produce, in tokens."""
    best = 0
    for fam in FAMILIES.values():
        for text in fam.texts:
            n = 0
            for lit, field, *_ in string.Formatter().parse(text):
                n += len(tokenize(lit)) + (_FIELD_WORDS[field[0]] if field else 0)
            best = max(best, n)
    return best
