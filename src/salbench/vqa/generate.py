"""Question generation for rendered scenes: sampling, CLEVR's answer balancing, encoding to arrays.

Per split, images are visited in order; each gets up to ``questions_per_image`` distinct questions.
For each question the families are tried least-used first (ties in a seeded random order), each up
to ``tries`` instantiations; an instantiation is kept when its program executes (no ill-posed
`unique` or empty relation) and its answer passes CLEVR's rejection test for its template (family +
answer node): rejected when its count already exceeds 1.1 × the second most frequent answer or
5 × max(median, 5). Counts restart every ``reset_every`` images, as CLEVR's do.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..render.world import KNOWN, World
from .program import (GT_KINDS, IllPosed, Program, ProgramError, SceneFacts, answer_text, execute, ground_truths,
                      to_json)
from .templates import FAMILIES, Context, max_tokens, tokenize, words

KINDS = ("simple", "complex")
PARAM_KEYS = {"questions_per_image", "families", "margin", "separation", "seed", "tries", "reset_every"}


def answers(world: World) -> list[str]:
    """The answer vocabulary: no/yes, counts 0..max_objects, every attribute value."""
    return ["no", "yes"] + [str(i) for i in range(world.max_objects + 1)] + [v for vals in KNOWN.values() for v in vals]


def answer_domain(kind: str, world: World) -> list[str]:
    """Answers a program ending in a node of ``kind`` can give (its balancing domain)."""
    if kind == "count":
        return [str(i) for i in range(world.max_objects + 1)]
    if kind.startswith("query_"):
        return list(world.values[kind[6:]])
    return ["no", "yes"]


def reject(counts: Mapping[str, int], answer: str) -> bool:
    """CLEVR's rejection of over-frequent answers (generate_questions.py)."""
    if len(counts) < 2:
        return False
    cur, ranked = counts[answer], sorted(counts.values())
    median = max(ranked[len(ranked) // 2], 5)
    return cur > 1.1 * ranked[-2] or cur > 5 * median


@dataclass
class QuestionSet:
    """One split's questions. Arrays: image_index Q, tokens Q×L (0 = padding), answer Q, family Q (int64),
    gt_<kind> Q×O bool (object k of the record = instance value k+1)."""

    arrays: dict[str, np.ndarray]
    texts: list[str]
    programs: list[list[dict[str, Any]]]
    answer_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # family -> answer -> n


class QuestionGenerator:
    """Questions of one kind (``simple`` or ``complex``) with the params of ``tasks.vqa-<kind>``."""

    def __init__(self, world: World, kind: str, p: Mapping[str, Any], where: str = "tasks") -> None:
        from ..params import ParamsError, check_keys

        check_keys(p, PARAM_KEYS, where)
        if kind not in KINDS:
            raise ParamsError(f"{where}: question kind must be one of {KINDS}, got {kind!r}")
        self.world, self.kind = world, kind
        known = [n for n, f in FAMILIES.items() if f.kind == kind]
        names = p.get("families") or known
        bad = [n for n in names if n not in known]
        if bad or len(set(names)) != len(names):
            raise ParamsError(f"{where}.families: unknown or repeated {bad or names}; {kind} families: {known}")
        self.families = list(names)
        self.per_image = int(p.get("questions_per_image", 5))
        self.margin = float(p.get("margin", 0.2))
        self.separation = float(p.get("separation", 0.4))
        self.seed = int(p.get("seed", 0))
        self.tries = int(p.get("tries", 4))
        self.reset_every = int(p.get("reset_every", 250))
        for key, v, lo in (("questions_per_image", self.per_image, 1), ("tries", self.tries, 1),
                           ("reset_every", self.reset_every, 1), ("margin", self.margin, 0),
                           ("separation", self.separation, 0)):
            if v < lo:
                raise ParamsError(f"{where}.{key}={v} must be >= {lo}")
        self.gt_kinds = GT_KINDS[kind]
        self.words = words()
        self.answers = answers(world)
        self.max_len = max_tokens()
        self._word_id = {w: i + 1 for i, w in enumerate(self.words)}
        self._answer_id = {a: i for i, a in enumerate(self.answers)}

    def vocabulary(self) -> dict[str, Any]:
        """The JSON-able description of the encoding (vqa.json)."""
        return {"kind": self.kind, "tokens": ["<pad>"] + self.words, "answers": self.answers,
                "families": self.families, "max_tokens": self.max_len, "max_objects": self.world.max_objects,
                "gt_kinds": list(self.gt_kinds), "margin": self.margin, "separation": self.separation}

    def generate(self, records: Sequence[Mapping[str, Any]], split: str) -> QuestionSet:
        """Questions for every record of a split (deterministic in seed, split and the records)."""
        rows: list[tuple[int, str, Program, str, str, dict[str, int]]] = []  # image, family, program, text, answer, GTs
        used = {f: 0 for f in self.families}
        counts: dict[str, dict[str, int]] = {}
        for i, rec in enumerate(records):
            if i % self.reset_every == 0:
                counts = {}
            if len(rec["objects"]) > self.world.max_objects:
                raise ProgramError(f"{split} scene {i} has {len(rec['objects'])} objects, more than "
                                   f"render.max_objects={self.world.max_objects}")
            rng = random.Random(f"{self.seed}/{split}/{i}")
            facts = SceneFacts.from_record(rec, self.margin, self.separation)
            ctx = Context(facts, self.world, rng)
            seen: set[tuple] = set()
            for _ in range(self.per_image):
                got = self._one(ctx, rng, used, counts, seen)
                if got is None:
                    break
                fam, program, text, answer, gts = got
                rows.append((i, fam, program, text, answer, gts))
        return self._encode(rows)

    def _one(self, ctx: Context, rng: random.Random, used: dict[str, int], counts: dict[str, dict[str, int]],
             seen: set[tuple]) -> tuple | None:
        order = sorted(self.families, key=lambda f: (used[f], rng.random()))
        for fam in order:
            for _ in range(self.tries):
                sample = FAMILIES[fam].sample(ctx)
                if sample is None or sample[0] in seen:
                    continue
                program, text = sample
                try:
                    out = execute(program, ctx.facts)
                except IllPosed:
                    continue
                answer = answer_text(out[-1])
                key = f"{fam}/{program[-1].kind}"
                table = counts.setdefault(key, dict.fromkeys(answer_domain(program[-1].kind, self.world), 0))
                if answer not in table:
                    raise ProgramError(f"answer {answer!r} of {fam} is not among the render params' values "
                                       f"{list(table)}; the scene record does not match render params")
                if reject(table, answer):
                    continue
                table[answer] += 1
                used[fam] += 1
                seen.add(program)
                return fam, program, text, answer, ground_truths(program, out, ctx.facts.full)
        return None

    def _encode(self, rows: list[tuple]) -> QuestionSet:
        q, o = len(rows), self.world.max_objects
        tokens = np.zeros((q, self.max_len), dtype=np.int64)
        for r, row in enumerate(rows):
            ids = [self._word_id[w] for w in tokenize(row[3])]
            tokens[r, : len(ids)] = ids
        shifts = np.arange(o, dtype=np.int64)
        arrays = {
            "image_index": np.array([r[0] for r in rows], dtype=np.int64),
            "tokens": tokens,
            "answer": np.array([self._answer_id[r[4]] for r in rows], dtype=np.int64),
            "family": np.array([self.families.index(r[1]) for r in rows], dtype=np.int64),
        }
        for kind in self.gt_kinds:
            bits = np.array([r[5][kind] for r in rows], dtype=np.int64).reshape(q, 1)
            arrays[f"gt_{kind}"] = (bits >> shifts) & 1 == 1
        per_family: dict[str, dict[str, int]] = {f: {} for f in self.families}
        for r in rows:
            per_family[r[1]][r[4]] = per_family[r[1]].get(r[4], 0) + 1
        return QuestionSet(arrays, [r[3] for r in rows], [to_json(r[2]) for r in rows],
                           {f: dict(sorted(c.items())) for f, c in per_family.items()})
